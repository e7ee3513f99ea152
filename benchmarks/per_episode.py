"""Where two methods of the sample-efficiency study differ, initial state by initial state.

Every run of a study is evaluated on the same seeded episodes, so each episode (one initial state of
gym-pusht) has one score per training run. Averaging over runs gives a per-state score per method;
this script compares two methods on them: the outcome histogram, the correlation of the per-state
scores, and the states that one method solves in most runs while the other fails them in most runs.
A table goes to the terminal; JSON and a scatter plot to --out.

  python benchmarks/per_episode.py --runs-dir runs/se_10pct_16 --fraction 0.1 --out benchmarks/results
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_efficiency import collect  # noqa: E402  (the study's own reader of eval JSONs)

BINS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0 - 1e-9, 1.0 + 1e-9)  # the last bin is success (reward 1)
BIN_LABELS = ("<0.1", "0.1-0.3", "0.3-0.5", "0.5-0.7", "0.7-0.9", "0.9-1", "success")


def per_state_scores(rows: list[dict], method: str, fraction: float, precision: str) -> tuple[np.ndarray, list[int]]:
    """[runs, episodes] max rewards of ``method`` on the environment seeds every one of its runs has."""
    rs = sorted((r for r in rows if r["method"] == method and r["fraction"] == fraction
                 and r["precision"] == precision), key=lambda r: r["seed"])
    if not rs:
        raise ValueError(f"no evaluated {method} runs at fraction {fraction} ({precision})")
    seeds = sorted(set.intersection(*(set(r["episodes_reward"]) for r in rs)))
    return np.array([[r["episodes_reward"][s] for s in seeds] for r in rs]), seeds


def _states(ma: np.ndarray, mb: np.ndarray, seeds: list[int], idx) -> list[dict]:
    return [{"env_seed": int(seeds[i]), "a": round(float(ma[i]), 3), "b": round(float(mb[i]), 3)} for i in idx]


def method_specific(ma: np.ndarray, mb: np.ndarray, seeds: list[int], solved: float = 0.8,
                    failed: float = 0.2) -> dict[str, list[dict]]:
    """From per-state mean scores: states one method solves (mean >= solved) and the other fails (<= failed)."""
    return {"only_a": _states(ma, mb, seeds, np.flatnonzero((ma >= solved) & (mb <= failed))),
            "only_b": _states(ma, mb, seeds, np.flatnonzero((mb >= solved) & (ma <= failed)))}


def largest_differences(ma: np.ndarray, mb: np.ndarray, seeds: list[int], k: int = 5) -> dict[str, list[dict]]:
    """From per-state mean scores: the k states where a leads b most, and the k where b leads a most."""
    order = np.argsort(ma - mb)
    return {"a_ahead": _states(ma, mb, seeds, order[::-1][:k]), "b_ahead": _states(ma, mb, seeds, order[:k])}


def compare(rows: list[dict], a: str, b: str, fraction: float, precision: str = "fp32") -> dict:
    ra, seeds_a = per_state_scores(rows, a, fraction, precision)
    rb, seeds_b = per_state_scores(rows, b, fraction, precision)
    seeds = sorted(set(seeds_a) & set(seeds_b))
    ra = ra[:, [seeds_a.index(s) for s in seeds]]
    rb = rb[:, [seeds_b.index(s) for s in seeds]]
    ma, mb = ra.mean(0), rb.mean(0)  # per-state scores, averaged over each method's runs
    return {"methods": [a, b], "fraction": fraction, "precision": precision, "runs": [len(ra), len(rb)],
            "episodes": len(seeds), "score": [float(ra.mean()), float(rb.mean())],
            "histogram": {m: dict(zip(BIN_LABELS, np.histogram(x, BINS)[0].tolist())) for m, x in ((a, ra), (b, rb))},
            "state_correlation": float(np.corrcoef(ma, mb)[0, 1]),
            "method_specific": method_specific(ma, mb, seeds),
            "largest_differences": largest_differences(ma, mb, seeds),
            "per_state": {"env_seed": seeds, a: ma.round(4).tolist(), b: mb.round(4).tolist()}}


def table(res: dict) -> str:
    a, b = res["methods"]
    lines = [f"| outcome per episode | {a} | {b} |", "|---|---|---|"]
    n = [sum(res["histogram"][m].values()) for m in (a, b)]
    for label in BIN_LABELS:
        ca, cb = res["histogram"][a][label], res["histogram"][b][label]
        lines.append(f"| {label} | {ca} ({ca / n[0]:.1%}) | {cb} ({cb / n[1]:.1%}) |")
    lines.append(f"| score | {res['score'][0]:.3f} | {res['score'][1]:.3f} |")
    ms = res["method_specific"]
    lines += ["", f"{res['episodes']} states x {res['runs'][0]} / {res['runs'][1]} runs; correlation of per-state "
              f"scores {res['state_correlation']:.2f}",
              f"solved (mean >= 0.8) by {a} and failed (<= 0.2) by {b}: {[s['env_seed'] for s in ms['only_a']]}",
              f"solved by {b} and failed by {a}: {[s['env_seed'] for s in ms['only_b']]}"]
    for key, name in (("a_ahead", a), ("b_ahead", b)):
        ld = res["largest_differences"][key]
        lines.append(f"largest leads of {name} (env seed: {a} / {b}): "
                     + ", ".join(f"{s['env_seed']}: {s['a']:.2f} / {s['b']:.2f}" for s in ld))
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = res["methods"]
    xa, xb = np.array(res["per_state"][a]), np.array(res["per_state"][b])
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(xb, xa, s=14, alpha=0.7)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.set_xlabel(f"{b}: mean over {res['runs'][1]} runs")
    ax.set_ylabel(f"{a}: mean over {res['runs'][0]} runs")
    ax.set_title(f"per initial state, {res['fraction']:.0%} of demos ({res['episodes']} states)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs-dir", type=Path, required=True, help="a sample-efficiency study folder")
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--a", default="rs_imle", help="first method (default rs_imle)")
    p.add_argument("--b", default="diffusion", help="second method (default diffusion)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8"))
    p.add_argument("--out", type=Path, help="write per_episode_<a>_<b>_f<fraction>.{json,png} here")
    args = p.parse_args(argv)
    if not args.runs_dir.is_dir():
        p.error(f"no study folder at {args.runs_dir}")
    try:
        res = compare(collect(args.runs_dir), args.a, args.b, args.fraction, args.precision)
    except ValueError as e:
        p.error(str(e))
    print(table(res))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"per_episode_{args.a}_{args.b}_f{args.fraction:g}"  # not with_suffix: "f0.1" has a dot
        (args.out / f"{stem}.json").write_text(json.dumps(res, indent=1))
        plot(res, args.out / f"{stem}.png")
        print(f"wrote {args.out / stem}.json, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
