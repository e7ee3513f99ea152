"""`make demo`: the shipped Push-T policy drives the emulated microcontroller over a pseudo-terminal.

Runs `imle-run exported_models/pusht-state-imle --robot emulator` in real time (10 Hz) for a few
episodes: a live status line, then the summary table, and under runs/demo/ the rollout GIFs, the
per-step CSV, summary.json and timing.png (period jitter and plan latency).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime import cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "exported_models" / "pusht-state-imle"
DEMO_SEED = 100000  # imle-eval's first test seed, so the demo shows episodes the shipped score covers


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", default=str(PACKAGE))
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--seed", type=int, default=DEMO_SEED)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--max-steps", type=int, default=300, help="commands per episode (Push-T's limit: 300)")
    p.add_argument("--camera", default=None, help="camera of an image package (default: simulated, the emulated "
                   "plant drawn from the robot's States)")
    args = p.parse_args(argv)
    camera = []
    if _sees_camera(Path(args.package)) or args.camera:
        camera = ["--camera", args.camera or "simulated"]
    print(f"imle-policy demo: {Path(args.package).name} on an emulated Push-T robot over a pseudo-terminal, "
          f"{args.episodes} episodes in real time (10 Hz)" + (f", camera {camera[1]}" if camera else "")
          + f"; outputs in {args.out}/", flush=True)
    return cli.main([args.package, "--robot", "emulator", "--episodes", str(args.episodes), "--seed", str(args.seed),
                     "--max-steps", str(args.max_steps), "--out", args.out, "--save-media", "--status", "on", *camera])


def _sees_camera(package: Path) -> bool:
    """Whether the package's manifest declares an image (imle-run checks the package properly)."""
    import json
    try:
        return bool(json.loads((package / "manifest.json").read_text()).get("obs", {}).get("image_shape"))
    except (OSError, ValueError, AttributeError):
        return False  # imle-run reports an unreadable package on one line


if __name__ == "__main__":
    sys.exit(main())
