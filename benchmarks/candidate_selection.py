"""Does candidate selection earn its cost? Paired closed-loop comparison of plan-selection settings (#23).

One package, the same gym-pusht seeds for every setting (episode i: seed + i fixes the start and the
latents), so each episode is a pair and the difference is measured per episode:

  default      the package's own setting (32 candidates, temporal consistency, re-draw every 5 plans)
  one          1 candidate: plain IMLE, no selection
  no-redraw    32 candidates, temporal consistency that never re-draws its reference
  random       32 candidates generated, one picked without consistency (same cost as default)
  taN          the package's selection, executing N actions per plan instead of the package's Ta

    python benchmarks/candidate_selection.py exported_models/pusht-state-imle --episodes 300 --seed 400000 \
        --workers 2 --out benchmarks/results/candidate_selection

Writes <out>.json (per-episode rows + summary) and <out>.md (table); prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SETTINGS = {  # name -> EvalOptions overrides
    "default": {},
    "one": {"candidates": 1},
    "no-redraw": {"tc_reset_after": 0},
    "random": {"temporal_consistency": False},
}


def overrides(name: str) -> dict:
    """EvalOptions overrides of a setting name (KeyError for an unknown one)."""
    if name in SETTINGS:
        return SETTINGS[name]
    if name.startswith("ta") and name[2:].isdigit():
        return {"action_horizon": int(name[2:])}
    raise KeyError(name)


def paired_difference(a: np.ndarray, b: np.ndarray, resamples: int = 10000,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over paired episodes with a percentile-bootstrap 95% interval over episodes."""
    from trainer.evaluate.metrics import bootstrap_mean_ci

    ci = bootstrap_mean_ci(np.asarray(a, float) - np.asarray(b, float), resamples=resamples, seed=seed)
    return ci.value, ci.low, ci.high


def run(package: str, settings: list[str], episodes: int, seed: int, precision: str | None,
        workers: int) -> dict:
    from trainer.evaluate.rollout import EvalOptions, evaluate_package

    out: dict = {"package": package, "episodes": episodes, "seed": seed, "settings": {}}
    for name in settings:
        opts = EvalOptions(episodes=episodes, seed=seed, precision=precision, workers=workers, progress=True,
                           **overrides(name))
        report = evaluate_package(package, opts)
        out["precision"] = report.precision
        out["settings"][name] = {
            "candidates": report.candidates, "temporal_consistency": report.temporal_consistency,
            "action_horizon": report.options.action_horizon,
            "score": report.summary.score.__dict__, "success": report.summary.success.__dict__,
            "plan_ms": float(np.mean([r.plan_latency_ms for r in report.results])),
            "wall_s": report.wall_s,
            "max_reward": [r.max_reward for r in report.results],
            "succeeded": [bool(r.success) for r in report.results],
        }
        print(f"{name}: score {report.summary.score}  success {report.summary.success}", file=sys.stderr)
    base = out["settings"].get("default")
    if base is not None:
        for name, s in out["settings"].items():
            if name == "default":
                continue
            out["settings"][name]["vs_default_score"] = paired_difference(s["max_reward"], base["max_reward"])
            out["settings"][name]["vs_default_success"] = paired_difference(
                np.array(s["succeeded"], float), np.array(base["succeeded"], float))
    return out


def table(result: dict) -> str:
    rows = ["| setting | candidates | consistency | Ta | score [95% CI] | success [95% CI] | score - default (paired) "
            "| success - default (paired) | plan ms |", "|---|---:|---|---:|---|---|---|---|---:|"]
    for name, s in result["settings"].items():
        sc, su = s["score"], s["success"]
        d1 = s.get("vs_default_score")
        d2 = s.get("vs_default_success")
        fmt = (lambda d: "-" if d is None else f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]")
        tc = ("n/a" if s["candidates"] == 1 else "no" if not s["temporal_consistency"]
              else "never re-drawn" if name == "no-redraw" else "yes")
        rows.append(f"| {name} | {s['candidates']} | {tc} | {s.get('action_horizon', '-')} | "
                    f"{sc['value']:.3f} [{sc['low']:.3f}, {sc['high']:.3f}] | "
                    f"{su['value']:.0%} [{su['low']:.0%}, {su['high']:.0%}] | {fmt(d1)} | {fmt(d2)} | "
                    f"{s['plan_ms']:.1f} |")
    return "\n".join(rows)


def _known(name: str) -> bool:
    try:
        overrides(name)
    except KeyError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package")
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help=f"comma list of {', '.join(SETTINGS)}, taN (N actions per plan)")
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--seed", type=int, default=400000)
    p.add_argument("--precision", choices=("fp32", "int8"), default=None)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/candidate_selection")
    args = p.parse_args(argv)
    names = [s for s in args.settings.split(",") if s]
    bad = [s for s in names if not _known(s)]
    if bad or not names:
        print(f"candidate_selection: error: --settings {args.settings!r}: use {', '.join(SETTINGS)} or taN",
              file=sys.stderr)
        return 2
    if args.episodes < 1 or args.workers < 1:
        print(f"candidate_selection: error: --episodes {args.episodes} and --workers {args.workers} must be >= 1",
              file=sys.stderr)
        return 2
    if not (Path(args.package) / "manifest.json").is_file():
        print(f"candidate_selection: error: {args.package} is not a model package (no manifest.json)", file=sys.stderr)
        return 2
    result = run(args.package, names, args.episodes, args.seed, args.precision, args.workers)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    text = (f"{args.package}, {result['precision']}, {args.episodes} paired episodes (seeds {args.seed}.."
            f"{args.seed + args.episodes - 1})\n\n" + table(result) + "\n")
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
