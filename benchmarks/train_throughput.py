"""Training throughput (#22): step time and samples/s, eager vs each speed flag, and 1 -> 2 processes.

For rs_imle (m = --n-samples, default 20) and diffusion, at --batch (default 128), on one device:
  - ``eager``: float32, no compile, plain AdamW, batches gathered on the host (the trainer before #22);
  - each speed flag alone (``amp``, ``fused_adam``, ``data_on_device``, ``compile``) and ``all`` of them;
the step is the training loop's hot path (trainer.train.step.TrainStep under DDP-free single process:
batch, forward with batch noise, backward, clip, AdamW, EMA), timed over --steps after --warmup
steps, with a device synchronisation only around the timed window. Then scaling: the real
``imle-train`` on 1 and on 2 processes (gloo on CPU, NCCL on GPUs) with the same global batch, its
steps/s read from metrics.jsonl after the first logging window.

The ``paper`` networks (256/512/1024) are far too slow for a CPU; there run --preset tiny or small
and say so beside the figures. ``torch.compile`` (inductor) needs minutes per configuration on a
small CPU: it is left out on CPU unless --configs names it.

    nice -n 5 .venv/bin/python benchmarks/train_throughput.py --device cpu --preset small --batch 32
    python benchmarks/train_throughput.py --device cuda --preset paper          # a lent GPU
Writes benchmarks/results/train_throughput_<device>_<preset>.json and .md (override: --out).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from trainer.data.dataset import load_dataset  # noqa: E402
from trainer.data.replay_buffer import default_pusht_path  # noqa: E402
from trainer.models.policy_net import build_network  # noqa: E402
from trainer.objectives import build_objective  # noqa: E402
from trainer.objectives.noise import BatchNoise, batch_noise  # noqa: E402
from trainer.train.config import task_preset  # noqa: E402
from trainer.train.ema import EMA  # noqa: E402
from trainer.train.loop import _to_tensors, network_spec  # noqa: E402
from trainer.train.sampler import WindowSampler  # noqa: E402
from trainer.train.speed import DeviceWindows, compile_network, make_optimizer  # noqa: E402
from trainer.train.step import TrainStep  # noqa: E402

FLAGS = ("amp", "fused_adam", "data_on_device", "compile")
CONFIGS = {"eager": {}, **{f: {f: True} for f in FLAGS}, "all": {f: True for f in FLAGS}}


def synthetic_buffer(path: Path, image: bool, episodes: int = 40, length: int = 120) -> None:
    """A Push-T-shaped buffer (timing does not depend on the values): 5-D state, 2-D action, 96x96 images."""
    from trainer.data import write_replay_buffer

    rng = np.random.default_rng(0)
    n = episodes * length
    data = {"state": rng.uniform(0, 512, (n, 5)).astype(np.float32),
            "action": rng.uniform(0, 512, (n, 2)).astype(np.float32)}
    if image:
        data["img"] = rng.integers(0, 256, (n, 96, 96, 3)).astype(np.float32)
    write_replay_buffer(path, data, np.arange(1, episodes + 1) * length)


def train_config(task: str, method: str, preset: str, batch: int, n_samples: int, data: Path, device: str):
    cfg = task_preset(task)
    cfg = dataclasses.replace(cfg, method=method, net_preset=preset, batch_size=batch, device=device)
    cfg.data.path = str(data)
    cfg.rs_imle.n_samples = n_samples
    return cfg


def time_steps(cfg, dataset, device: torch.device, flags: dict, warmup: int, steps: int) -> float:
    """Seconds per training step (the loop's hot path) with the given speed flags."""
    objective = build_objective(cfg)
    torch.manual_seed(0)
    net = build_network(network_spec(cfg, dataset, objective.timestep_embed_dim),
                        dataset.state_stats, dataset.action_stats).to(device)
    ema = EMA(net)
    opt = make_optimizer(net.parameters(), cfg, flags.get("fused_adam", False))
    windows = DeviceWindows(dataset, device) if flags.get("data_on_device") else None
    if flags.get("compile"):
        compile_network(net)
    runner = TrainStep(net, objective, 0.0, flags.get("amp", False))
    sampler = WindowSampler(len(dataset), cfg.batch_size, seed=0)
    net.train()

    def one(step: int) -> None:
        idx = sampler.local_indices(step)
        batch = windows.batch(idx) if windows is not None else _to_tensors(dataset.batch(idx), device)
        with batch_noise(BatchNoise(0, step, 0, cfg.batch_size, cfg.batch_size, device)):
            loss, _ = runner(**batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(net)

    for k in range(warmup):
        one(k)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for k in range(warmup, warmup + steps):
        one(k)
    sync()
    return (time.perf_counter() - t0) / steps


def scaling(task: str, data: Path, preset: str, batch: int, n_samples: int, device: str, steps: int,
            procs: list[int], threads: int) -> list[dict]:
    """steps/s of the real imle-train (rs_imle) on 1, 2, ... processes, the same global batch."""
    rows = []
    for n in procs:
        with tempfile.TemporaryDirectory() as tmp:
            log = max(1, steps // 4)
            argv = [sys.executable, "-m", "trainer.cli", "--task", task, "--data", str(data), "--preset", preset,
                    "--batch-size", str(batch), "--n-samples", str(n_samples), "--device", device,
                    "--steps", str(steps), "--log-every", str(log), "--checkpoint-every", str(10 * steps),
                    "--out", str(Path(tmp) / "r"), "--no-progress", "--nproc", str(n)]
            if device == "cpu":
                argv += ["--threads", str(threads)]
            t0 = time.perf_counter()
            proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                rows.append({"processes": n, "error": proc.stderr.strip().splitlines()[-1:]})
                continue
            recs = [json.loads(x) for x in (Path(tmp) / "r" / "metrics.jsonl").read_text().splitlines()]
            rates = [r["steps_per_s"] for r in recs[1:]] or [recs[-1]["steps_per_s"]]
            rate = float(np.median(rates))
            rows.append({"processes": n, "threads_per_process": threads if device == "cpu" else None,
                         "steps_per_s": rate, "step_ms": 1000 / rate, "samples_per_s": rate * batch,
                         "wall_s": wall})
    return rows


def markdown(result: dict) -> str:
    m = result["meta"]
    lines = [f"Training throughput on {m['device_name']} ({m['device']}), preset `{m['preset']}`, batch {m['batch']}, "
             f"RS-IMLE m = {m['n_samples']}; {m['steps']} timed steps after {m['warmup']}; torch {m['torch']}.", "",
             "| method | task | config | step (ms) | samples/s | vs eager |", "|---|---|---|---:|---:|---:|"]
    for r in result["steps"]:
        lines.append(f"| {r['method']} | {r['task']} | {r['config']} | {r['step_ms']:.1f} | {r['samples_per_s']:.0f} "
                     f"| {r['speedup']:.2f}x |")
    if result.get("scaling"):
        lines += ["", "| processes (imle-train, rs_imle) | threads each | steps/s | step (ms) | samples/s |",
                  "|---:|---:|---:|---:|---:|"]
        for r in result["scaling"]:
            if "error" in r:
                lines.append(f"| {r['processes']} | failed: {r['error']} | | | |")
            else:
                lines.append(f"| {r['processes']} | {r['threads_per_process'] or '-'} | {r['steps_per_s']:.2f} | "
                             f"{r['step_ms']:.0f} | {r['samples_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--preset", default=None, choices=("tiny", "small", "paper"),
                   help="U-Net size (default: paper on cuda, tiny on cpu)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--n-samples", type=int, default=20)
    p.add_argument("--methods", default="rs_imle,diffusion")
    p.add_argument("--tasks", default="pusht-state", help="comma-separated: pusht-state, pusht-image")
    p.add_argument("--configs", default=None, help=f"comma-separated of {', '.join(CONFIGS)} "
                                                   "(default: all on cuda; all but compile on cpu)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 3 cpu, 20 cuda)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 5 cpu, 50 cuda)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    p.add_argument("--scaling-procs", default="1,2", help="processes for the scaling rows ('' to skip)")
    p.add_argument("--scaling-steps", type=int, default=None, help="imle-train steps per scaling run "
                                                                   "(default 16 cpu, 200 cuda)")
    p.add_argument("--scaling-threads", type=int, default=1, help="CPU threads per process in the scaling rows")
    p.add_argument("--data", default=None, help="state replay buffer (default: the shared Push-T demos if present)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("train_throughput: error: --device cuda asked for, but torch sees no CUDA device", file=sys.stderr)
        return 2
    preset = args.preset or ("paper" if cuda else "tiny")
    configs = (args.configs.split(",") if args.configs else
               [c for c in CONFIGS if cuda or c != "compile"])
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        print(f"train_throughput: error: --configs {','.join(unknown)} unknown (known: {', '.join(CONFIGS)})",
              file=sys.stderr)
        return 2
    if not cuda and "all" in configs and "compile" not in configs:
        CONFIGS["all"] = {f: True for f in FLAGS if f != "compile"}  # "all" on CPU: without inductor's minutes
    warmup = args.warmup if args.warmup is not None else (20 if cuda else 3)
    steps = args.steps if args.steps is not None else (50 if cuda else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tmp = Path(tempfile.mkdtemp(prefix="train_throughput_"))
    rows = []
    for task in args.tasks.split(","):
        image = task.endswith("image")
        data = Path(args.data) if args.data and not image else None
        if data is None and not image and default_pusht_path().exists():
            data = default_pusht_path()
        if data is None:
            data = tmp / f"{task}.zarr"
            synthetic_buffer(data, image)
        for method in args.methods.split(","):
            cfg = train_config(task, method, preset, args.batch, args.n_samples, data, args.device)
            dataset = load_dataset(cfg.data)
            base = None
            time_steps(cfg, dataset, device, {}, warmup, 1)  # the process's one-time costs, before any timing
            for name in configs:
                flags = dict(CONFIGS[name])
                if name == "all" and image:
                    flags["data_on_device"] = cuda
                sec = time_steps(cfg, dataset, device, flags, warmup, steps)
                base = sec if name == "eager" else base
                row = {"task": task, "method": method, "config": name, "flags": flags, "step_ms": 1000 * sec,
                       "samples_per_s": args.batch / sec, "speedup": (base / sec) if base else float("nan")}
                rows.append(row)
                print(f"{task} {method} {name}: {1000 * sec:.1f} ms/step, {args.batch / sec:.0f} samples/s",
                      flush=True)
    procs = [int(x) for x in args.scaling_procs.split(",") if x]
    scale = []
    if procs:
        state_data = Path(args.data) if args.data else (default_pusht_path() if default_pusht_path().exists()
                                                         else tmp / "pusht-state.zarr")
        if not state_data.exists():
            synthetic_buffer(state_data, False)
        scale = scaling("pusht-state", state_data, preset, args.batch, args.n_samples, args.device,
                        args.scaling_steps or (200 if cuda else 16), procs, args.scaling_threads)
        for r in scale:
            print("scaling", r, flush=True)
    name = torch.cuda.get_device_name(0) if cuda else (platform.processor() or platform.machine())
    result = {"meta": {"device": args.device, "device_name": name, "preset": preset, "batch": args.batch,
                       "n_samples": args.n_samples, "warmup": warmup, "steps": steps, "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                       "command": " ".join([Path(sys.executable).name, *sys.argv])},
              "steps": rows, "scaling": scale}
    default_out = ROOT / "benchmarks" / "results" / f"train_throughput_{args.device}_{preset}.json"
    out = Path(args.out) if args.out else default_out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
