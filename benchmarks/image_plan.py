"""Image-policy plan latency: 32 candidates, one onnxruntime thread, int8, encoder included, per image encoder.

For each image encoder (``light``: 4 conv layers + spatial softmax; ``resnet18gn``: the paper's ResNet-18
with GroupNorm) on the given U-Net preset, a randomly initialised Push-T image policy (96x96 frames,
centre crop 84, To = 2) is exported as a package (fp32 + int8; timing does not depend on the weights)
and planned through the robot's runtime (runtime.Policy). Reported per encoder and precision:

- plan latency (median, p90) with 32 candidates on 1 thread;
- the encoder's share: onnxruntime's per-node profile of the same graph, the nodes that do not depend
  on the latents z (crop, image encoder, state normalisation) against all nodes;
- that the encoder runs once per plan: no image-encoder node of the optimised graph depends on z (the
  candidates only meet the condition in the U-Net's FiLM layers, where [1, C] broadcasts over N).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/image_plan.py            # both encoders, tiny U-Net
    .venv/bin/python benchmarks/image_plan.py --encoders light --repeats 20

Writes benchmarks/results/image_plan.json and .md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from runtime import Policy  # noqa: E402
from runtime.onnx_session import session_options  # noqa: E402
from trainer.data import MinMax  # noqa: E402
from trainer.export import checkpoint_state, export_package  # noqa: E402
from trainer.export.encoder_once import image_convs, nodes_on  # noqa: E402
from trainer.models import PRESETS, NetworkSpec, UNetConfig, build_network  # noqa: E402
from trainer.models.encoders import IMAGE_ENCODERS  # noqa: E402

STATE_STATS = MinMax(min=[13.5, 32.5], max=[496.1, 510.9])  # Push-T agent x, y (px)
ACTION_STATS = MinMax(min=[12.0, 25.0], max=[511.0, 511.0])
TARGET_MS = 50.0  # issue #21: plan of 32 candidates, 1 thread, int8, encoder included
SHIPPED = "light"


def build(encoder: str, preset: str, seed: int = 0):
    torch.manual_seed(seed)
    unet = UNetConfig(**{**PRESETS[preset].__dict__, "timestep_embed_dim": 0})
    spec = NetworkSpec(state_dim=2, action_dim=2, image_shape=(3, 96, 96), crop=84, image_encoder=encoder, unet=unet)
    return build_network(spec, STATE_STATS, ACTION_STATS).eval()


def observations(k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    lo, hi = np.array(STATE_STATS.min, np.float32), np.array(STATE_STATS.max, np.float32)
    return [((lo + (hi - lo) * rng.random((2, 2))).astype(np.float32),
             rng.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8)) for _ in range(k)]


def obs_only_nodes(model) -> set[str]:
    """Names of the nodes that do not depend on the input 'z' (they run once per plan whatever N is)."""
    return {n.name for n in model.graph.node} - nodes_on(model, "z")


def image_nodes_on_z(model) -> list[str]:
    """Convolutions over images (the encoder's) that depend on z: must be none."""
    on = nodes_on(model, "z")
    return [n.name for n in image_convs(model) if n.name in on]


def profile_share(path: Path, feeds: list[dict], repeats: int) -> tuple[float, float, int, list[str]]:
    """(encoder ms per plan, all nodes ms per plan, encoder nodes, image convs on z) from onnxruntime's profile
    of the optimised graph at 1 thread."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="imle-prof-") as tmp:
        so = session_options(1)
        so.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "prof")
        sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        for f in feeds[:2]:
            sess.run(None, f)  # warm-up, profiled too: dropped below by run count
        for i in range(repeats):
            sess.run(None, feeds[i % len(feeds)])
        events = json.loads(Path(sess.end_profiling()).read_text())
        opt = onnx.load(str(Path(tmp) / "opt.onnx"), load_external_data=False)
    free = obs_only_nodes(opt)
    per_node: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"][:-len("_kernel_time")]].append(e["dur"] / 1000.0)
    enc = sum(sum(v[-repeats:]) for k, v in per_node.items() if k in free) / repeats
    total = sum(sum(v[-repeats:]) for v in per_node.values()) / repeats
    return enc, total, len(free), image_nodes_on_z(opt)


def time_plans(pkg: Path, precision: str, candidates: int, obs: list, repeats: int) -> list[float]:
    pol = Policy(pkg, precision=precision, candidates=candidates, threads=1, seed=0)
    for s, img in obs[:3]:
        pol.plan(s, img)
    out = []
    for i in range(repeats):
        s, img = obs[i % len(obs)]
        t0 = time.perf_counter()
        pol.plan(s, img)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def run(args) -> dict:
    obs = observations(8)
    rows = []
    with tempfile.TemporaryDirectory(prefix="imle-image-plan-") as tmp:
        for enc in args.encoders:
            net = build(enc, args.preset)
            params = sum(p.numel() for p in net.image_encoder.parameters())
            pkg = export_package(checkpoint_state(net, STATE_STATS, ACTION_STATS, task="pusht-image"),
                                 Path(tmp) / f"{enc}", quantize="int8", calibration="random", n_calibrate=8,
                                 n_parity=4, parity_candidates=4, progress=False)
            rng = np.random.default_rng(1)
            for precision in ("int8", "fp32"):
                ms = time_plans(pkg, precision, args.candidates, obs, args.repeats)
                name = "generator.int8.onnx" if precision == "int8" else "generator.onnx"
                feeds = [{"obs_state": s[None], "obs_image": i[None],
                          "z": rng.standard_normal((args.candidates, 16, 2), dtype=np.float32)} for s, i in obs]
                enc_ms, node_ms, n_free, on_z = profile_share(pkg / name, feeds, args.repeats)
                rows.append({"encoder": enc, "encoder_params": params, "unet": args.preset, "precision": precision,
                             "candidates": args.candidates, "threads": 1, "plan_ms_median": float(np.median(ms)),
                             "plan_ms_p90": float(np.percentile(ms, 90)), "encoder_ms": enc_ms,
                             "graph_ms": node_ms, "encoder_share": enc_ms / node_ms if node_ms else float("nan"),
                             "obs_only_nodes": n_free, "encoder_convs_on_z": on_z, "repeats": args.repeats})
                r = rows[-1]
                print(f"{enc:10s} {precision}: plan {r['plan_ms_median']:.1f} ms (p90 {r['plan_ms_p90']:.1f}), "
                      f"encoder {enc_ms:.1f} ms = {100 * r['encoder_share']:.0f}% of the graph, "
                      f"encoder convs depending on z: {len(on_z)}", flush=True)
    shipped = next((r for r in rows if r["encoder"] == SHIPPED and r["precision"] == "int8"), None)
    return {"rows": rows, "machine": {"cpu": _cpu(), "python": platform.python_version(),
                                      "onnxruntime": __import__("onnxruntime").__version__, "torch": torch.__version__},
            "target": {"what": f"{SHIPPED} encoder, int8, {args.candidates} candidates, 1 thread, plan median",
                       "limit_ms": TARGET_MS, "value_ms": shipped["plan_ms_median"] if shipped else None,
                       "met": bool(shipped and shipped["plan_ms_median"] < TARGET_MS)},
            "command": " ".join(["benchmarks/image_plan.py", *sys.argv[1:]])}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(result: dict) -> str:
    lines = ["| image encoder (params) | U-Net | precision | plan, 32 cand., 1 thread: median (p90) | encoder per plan "
             "(share of graph time) | encoder convs depending on z |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['encoder']} ({r['encoder_params'] / 1e6:.2f} M) | {r['unet']} | {r['precision']} | "
                     f"{r['plan_ms_median']:.1f} ms ({r['plan_ms_p90']:.1f}) | {r['encoder_ms']:.1f} ms "
                     f"({100 * r['encoder_share']:.0f}%) | {len(r['encoder_convs_on_z'])} |")
    t = result["target"]
    verdict = "met" if t["met"] else "NOT met"
    lines.append(f"\nTarget ({t['what']}) < {t['limit_ms']:.0f} ms: {t['value_ms']:.1f} ms, {verdict}. "
                 f"CPU: {result['machine']['cpu']}; onnxruntime {result['machine']['onnxruntime']}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoders", nargs="+", default=list(IMAGE_ENCODERS), choices=list(IMAGE_ENCODERS))
    ap.add_argument("--preset", default="tiny", choices=list(PRESETS), help="U-Net preset (default tiny)")
    ap.add_argument("--candidates", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/image_plan"), help="path stem for .json and .md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
