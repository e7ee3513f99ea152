"""Push-T state policy quality vs training budget (#23): one plot from the recorded evaluations.

Every point is an int8 package of the tiny CPU recipe evaluated on the same 300 fresh episodes
(gym-pusht seeds 400000..400299, 32 candidates): score and success with 95% intervals against the
CPU minutes its training takes on the reference machine (2 idle cores, 4.2 steps/s measured for
this recipe; 7,500 steps took 29.9 min). Validation while training (20 episodes, fp32) is drawn
thin, to show why it is too noisy to pick a checkpoint with.

    python benchmarks/budget_plot.py --out docs/img/pusht_state_budget.png

Reads benchmarks/results/{ship13_budget_extension,candidate_selection,default_recipe_7500_eval_int8_400000}.json
and writes the PNG plus <out>.json with the plotted values.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
STEPS_PER_S = 4.2  # the tiny recipe on 2 idle cores of the reference machine (docs/benchmarks.md)


def _interval(summary: dict, key: str) -> tuple[float, float, float]:
    v = summary[key]
    return float(v["value"]), float(v["low"]), float(v["high"])


def points(results: Path = RESULTS) -> list[dict]:
    """The test points: (steps, seed, score CI, success CI) from the recorded result files."""
    ext = json.loads((results / "ship13_budget_extension.json").read_text())
    shipped = json.loads((results / "candidate_selection.json").read_text())["settings"]["default"]
    recipe = json.loads((results / "default_recipe_7500_eval_int8_400000.json").read_text())["summary"]
    rows = [(7500, 0, recipe), (10000, 1, ext["seed1_10k"]["test"]["int8_400000x300"]["summary"]),
            (15000, 0, shipped), (20000, 0, ext["test"]["20k_int8_400000x300"]["summary"]),
            (25000, 0, ext["test"]["25k_int8_400000x300"]["summary"])]
    return [{"steps": s, "seed": seed, "cpu_min": round(s / STEPS_PER_S / 60, 1),
             "score": _interval(summ, "score"), "success": _interval(summ, "success")} for s, seed, summ in rows]


def validation(results: Path = RESULTS) -> dict[str, list[tuple[int, float, float]]]:
    ext = json.loads((results / "ship13_budget_extension.json").read_text())
    out = {}
    for name, curve in (("seed 0", ext["validation_fp32_20_episodes_seeds_200000"]),
                        ("seed 1 (to 10k)", ext["seed1_10k"]["validation_fp32_20_episodes_seeds_200000"])):
        out[name] = [(int(k), v["score"], v["success"]) for k, v in sorted(curve.items(), key=lambda kv: int(kv[0]))]
    return out


def plot(pts: list[dict], val: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, target in ((axes[0], "score", 0.95), (axes[1], "success", 0.60)):
        for seed, marker in ((0, "o"), (1, "s")):
            sel = [p for p in pts if p["seed"] == seed]
            x = [p["cpu_min"] for p in sel]
            y = [p[key][0] for p in sel]
            err = [[p[key][0] - p[key][1] for p in sel], [p[key][2] - p[key][0] for p in sel]]
            ax.errorbar(x, y, yerr=err, fmt=marker + "-", capsize=3, label=f"test, int8, seed {seed} (300 episodes)")
        for name, curve in val.items():
            ax.plot([s / STEPS_PER_S / 60 for s, *_ in curve], [c[1 if key == "score" else 2] for c in curve],
                    ":", lw=1, alpha=0.7, label=f"validation, fp32, {name} (20 episodes)")
        ax.axhline(target, color="grey", lw=0.8, ls="--")
        ax.text(2, target, f" target {target:g}", va="bottom", color="grey", fontsize=8)
        ax.set_xlabel(f"training CPU minutes (2 cores, {STEPS_PER_S} steps/s)")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].set_title("Push-T score vs budget (tiny recipe)")
    axes[1].set_title("Push-T success vs budget")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(RESULTS), help="folder with the result JSONs (default: benchmarks/results)")
    p.add_argument("--out", default="docs/img/pusht_state_budget.png")
    args = p.parse_args(argv)
    try:
        pts, val = points(Path(args.results)), validation(Path(args.results))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"budget_plot: error: the recorded results cannot be read ({type(exc).__name__}: {exc})",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(pts, val, out)
    out.with_suffix(".json").write_text(json.dumps({"test": pts, "validation": val}, indent=1))
    for q in pts:
        print(f"{q['steps']:>6} steps ({q['cpu_min']:5.1f} min, seed {q['seed']}): score {q['score'][0]:.3f}, "
              f"success {q['success'][0]:.1%}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
