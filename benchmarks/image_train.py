"""Image training on this CPU: steps/s and peak memory of ``imle-train --task pusht-image`` per image encoder.

Each encoder trains in its own ``imle-train`` process under ``/usr/bin/time -v`` (peak RSS of the whole
run: data loading, network, optimiser) on the shared Push-T image demos, one torch thread, batch 64,
RS-IMLE m = 10, the tiny U-Net. Steps/s comes from the run's metrics.jsonl (``steps_per_s`` of each
logging window), the first window (warm-up) dropped.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/image_train.py                    # light and resnet18gn
    .venv/bin/python benchmarks/image_train.py --encoders light --steps 40

Writes benchmarks/results/image_train.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENCODERS = ("light", "resnet18gn")
STEPS = {"light": 40, "resnet18gn": 15}  # a few logging windows each (resnet18gn: several s/step on 1 thread)


def train_once(encoder: str, steps: int, log_every: int, batch: int, m: int, preset: str, work: Path) -> dict:
    out = work / encoder
    cmd = [str(ROOT / ".venv/bin/imle-train"), "--task", "pusht-image", "--preset", preset, "--image-encoder", encoder,
           "--threads", "1", "--steps", str(steps), "--batch-size", str(batch), "--n-samples", str(m),
           "--log-every", str(log_every), "--checkpoint-every", str(10 * steps), "--out", str(out), "--no-resume",
           "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"imle-train ({encoder}) exited {proc.returncode}: {' | '.join(tail)}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    rates = [json.loads(line)["steps_per_s"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "steps_per_s" in line]
    steady = rates[1:] or rates
    rate = sum(steady) / len(steady)
    return {"encoder": encoder, "steps": steps, "batch_size": batch, "n_samples": m, "unet": preset, "threads": 1,
            "steps_per_s": rate, "s_per_step": 1.0 / rate, "windows": rates, "peak_rss_mb": rss_kb / 1024.0,
            "wall": wall, "command": " ".join(["imle-train", *cmd[1:]])}


def markdown(rows: list[dict]) -> str:
    lines = ["| image encoder | U-Net | batch | m | steps/s (1 thread) | s/step | steps in 40 min | peak RSS |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['encoder']} | {r['unet']} | {r['batch_size']} | {r['n_samples']} | "
                     f"{r['steps_per_s']:.3f} | {r['s_per_step']:.2f} | {int(2400 * r['steps_per_s'])} | "
                     f"{r['peak_rss_mb'] / 1024:.2f} GiB |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS)
    ap.add_argument("--steps", type=int, default=None, help="steps per encoder (default: 40 light, 15 resnet18gn)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n-samples", type=int, default=10)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/image_train"), help="path stem for .json and .md")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="imle-image-train-") as tmp:
        for enc in args.encoders:
            steps = args.steps or STEPS[enc]
            rows.append(train_once(enc, steps, max(1, steps // 4), args.batch_size, args.n_samples, args.preset,
                                   Path(tmp)))
            r = rows[-1]
            print(f"{enc}: {r['steps_per_s']:.3f} steps/s, peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "command": " ".join(sys.argv)}, indent=2))
    out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
