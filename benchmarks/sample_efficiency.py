"""Sample efficiency: RS-IMLE vs Diffusion Policy vs flow matching at 10/25/50/100% of the Push-T demos.

Every (method, fraction, seed) is one run directory under --runs-dir, trained with the same step
budget on the same U-Net, exported (fp32 + int8) and evaluated on the same seeded episodes
THROUGH runtime.Policy. Stages skip finished work, so the study can run in parts, on different
machines (pass --data where the replay buffer lives elsewhere), and be re-assembled by --stage report.
export and eval default to every run already trained in --runs-dir (the grid flags narrow it):

  python benchmarks/sample_efficiency.py --stage all --steps 20 --episodes 2 --runs-dir /tmp/se   # smoke
  python benchmarks/sample_efficiency.py --stage all --device cuda --steps 3000 --parallel 12 --runs-dir runs/se
  python benchmarks/sample_efficiency.py --stage report --runs-dir runs/se
  # what the budget did:
  python benchmarks/sample_efficiency.py --stage report --runs-dir runs/se_6000 --against runs/se_3000

Layout: RUNS/<method>_f<fraction>_s<seed>/ {last.pt, train.json, train.log, package/, eval_fp32.json,
eval_int8.json}. Report: a markdown table on stdout, --out (default RUNS/report)/sample_efficiency.{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("rs_imle", "diffusion", "flow_matching")
FRACTIONS = (0.1, 0.25, 0.5, 1.0)
PRECISIONS = ("fp32", "int8")
# published anchors (for the docs table): Diffusion Policy, Push-T images, 500 gym-pusht episodes
ANCHORS = {"diffusion_policy_pusht_image": {"score": 0.957, "success": 0.642, "episodes": 500},
           "imle_policy_paper": "matches its baselines with 38% less data"}


@dataclass(frozen=True)
class Run:
    method: str
    fraction: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}_f{self.fraction:g}_s{self.seed}"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _read_json(p: Path) -> dict | None:
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


# ------------------------------------------------------------------------------------------ train
def train_command(run: Run, args, threads: int) -> list[str]:
    cmd = [sys.executable, "-c", "import sys; from trainer.cli import train_main; sys.exit(train_main())",
           "--task", "pusht-state", "--method", run.method, "--fraction", str(run.fraction),
           "--seed", str(run.seed), "--steps", str(args.steps), "--device", args.device, "--threads", str(threads),
           "--out", str(args.runs_dir / run.name), "--no-progress", "--checkpoint-every", str(args.checkpoint_every)]
    if args.eval_every:  # the paper's protocol: closed-loop validation while training, best.pt kept
        cmd += ["--eval-every", str(args.eval_every), "--eval-episodes", str(args.eval_episodes)]
    for flag, value in (("--data", args.data), ("--preset", args.preset), ("--batch-size", args.batch_size),
                        ("--lr", args.lr), ("--warmup", args.warmup), ("--state-encoder", args.state_encoder),
                        ("--obs-noise", args.obs_noise)):
        if value is not None:
            cmd += [flag, str(value)]
    if run.method == "rs_imle":
        for flag, value in (("--n-samples", args.n_samples), ("--epsilon", args.epsilon)):
            if value is not None:
                cmd += [flag, str(value)]
    return cmd


def train_one(run: Run, args, threads: int) -> str:
    d = args.runs_dir / run.name
    done = _read_json(d / "train.json")
    if done and done.get("steps", 0) >= args.steps and (d / "last.pt").exists():
        return f"{run.name}: trained ({done['steps']} steps), skipped"
    d.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with (d / "train.log").open("a") as log:
        rc = subprocess.run(train_command(run, args, threads), stdout=log, stderr=subprocess.STDOUT,
                            env=_python_env(), cwd=ROOT).returncode
    if rc != 0:
        return f"{run.name}: TRAINING FAILED (exit {rc}), see {d / 'train.log'}"
    (d / "train.json").write_text(json.dumps({"steps": args.steps, "wall_s": time.time() - t0, "device": args.device}))
    return f"{run.name}: trained {args.steps} steps in {time.time() - t0:.0f} s"


def stage_train(runs: list[Run], args) -> None:
    k = max(1, min(args.parallel, len(runs)))
    threads = args.threads or max(1, (os.cpu_count() or 1) // k)
    _log(f"train: {len(runs)} runs, {k} at once, {threads} thread(s) each, device {args.device}")
    _pooled(lambda r: train_one(r, args, threads), runs, k, "train")


def _pooled(fn, items: list, k: int, desc: str) -> None:
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=k) as pool, tqdm(total=len(items), desc=desc, unit="run",
                                                           disable=not sys.stderr.isatty()) as bar:
        for msg in pool.map(fn, items):
            _log(msg)
            bar.update(1)


# ------------------------------------------------------------------------------------------ export
def checkpoint_to_export(run_dir: Path, which: str) -> Path | None:
    """last.pt, or best.pt (kept by validation while training); None when best.pt is asked for and absent."""
    path = run_dir / f"{which}.pt"
    return path if path.exists() or which == "last" else None


def export_one(run: Run, args) -> str:
    d = args.runs_dir / run.name
    trained = _read_json(d / "train.json")
    if not trained:
        return f"{run.name}: not trained yet, export skipped"
    ckpt = checkpoint_to_export(d, args.checkpoint)
    if ckpt is None:
        return f"{run.name}: EXPORT FAILED: --checkpoint best but the run has no best.pt (train with --eval-every)"
    done = _read_json(d / "export.json")
    if (done and done.get("steps") == trained["steps"] and done.get("checkpoint", "last.pt") == ckpt.name
            and (d / "package" / "manifest.json").exists()):
        return f"{run.name}: exported ({', '.join(done['precisions'])}), skipped"
    cmd = [sys.executable, "-c", "import sys; from trainer.export.cli import main; sys.exit(main())",
           str(ckpt), "--out", str(d / "package"), "--quantize", "int8", "--no-progress"]
    if args.data:
        cmd += ["--data", str(args.data)]
    if run.method == "diffusion" and args.diffusion_sampler != "ddpm":
        cmd += ["--sampler", "ddim", "--sampler-steps", str(args.diffusion_steps)]
    if run.method == "flow_matching":
        cmd += ["--sampler", "euler", "--sampler-steps", str(args.flow_steps)]
    if (d / "package").exists():  # an older export (fewer steps): replace it
        import shutil

        shutil.rmtree(d / "package")
    t0 = time.time()
    with (d / "export.log").open("a") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=_python_env(), cwd=ROOT).returncode
        if rc != 0:  # keep the study going on fp32 when int8 quantisation fails; the report shows the gap
            log.write("\n[sample_efficiency] int8 export failed; retrying fp32 only\n")
            log.flush()
            cmd.remove("--quantize")
            cmd.remove("int8")
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=_python_env(), cwd=ROOT).returncode
    if rc != 0:
        return f"{run.name}: EXPORT FAILED (exit {rc}), see {d / 'export.log'}"
    precs = sorted({f["precision"] for f in _read_json(d / "package" / "manifest.json")["files"]})
    (d / "export.json").write_text(json.dumps({"steps": trained["steps"], "precisions": precs,
                                               "checkpoint": ckpt.name, "wall_s": time.time() - t0}))
    note = "" if "int8" in precs else " (INT8 EXPORT FAILED: fp32 only, see export.log)"
    return f"{run.name}: exported {', '.join(precs)} in {time.time() - t0:.0f} s{note}"


def stage_export(runs: list[Run], args) -> None:
    k = max(1, min(args.export_parallel or os.cpu_count() or 1, len(runs)))
    _log(f"export: {len(runs)} runs, {k} at once (fp32 + int8)")
    _pooled(lambda r: export_one(r, args), runs, k, "export")


# ------------------------------------------------------------------------------------------ eval
_CACHE: dict = {}


def _eval_task(task: tuple) -> tuple:
    """One episode of one (package, precision), in a worker; packages and envs are cached per worker."""
    from trainer.evaluate.rollout import EvalOptions, package_factory, run_episode
    from trainer.evaluate.env import make_env

    pkg_dir, precision, i, seed0, max_steps = task
    key = (pkg_dir, precision)
    if key not in _CACHE:
        from runtime.package import load_package

        pkg = load_package(pkg_dir)
        opts = EvalOptions(precision=precision, threads=1)
        shape = pkg.manifest.obs.image_shape
        _CACHE[key] = (package_factory(pkg, opts), make_env(tuple(shape) if shape else None, max_steps))
    factory, env = _CACHE[key]
    result, _ = run_episode(factory(seed0 + i), env, seed0 + i, i, max_steps)
    return pkg_dir, precision, result


def _package_source(run_dir: Path) -> dict:
    """What the run's package was exported from: the training budget and the checkpoint (last.pt or
    best.pt). An evaluation belongs to the package only while both match."""
    return {"package_steps": _read_json(run_dir / "train.json")["steps"],
            "checkpoint": (_read_json(run_dir / "export.json") or {}).get("checkpoint", "last.pt")}


def _reusable_episodes(old: dict | None, eval_seed: int, source: dict) -> list:
    """Episodes of an earlier evaluation that a new one can keep: same first environment seed and the
    same package (episode i always runs environment and policy seed eval_seed + i)."""
    from trainer.evaluate.metrics import EpisodeResult

    if (not old or old.get("seed") != eval_seed or old.get("package_steps") != source["package_steps"]
            or old.get("checkpoint", "last.pt") != source["checkpoint"]):
        return []
    eps = sorted(old.get("per_episode", []), key=lambda r: r["episode"])
    if [r["episode"] for r in eps] != list(range(len(eps))):
        return []  # not a contiguous prefix: run them all again
    return [EpisodeResult(**r) for r in eps]


def stage_eval(runs: list[Run], args) -> None:
    from tqdm.auto import tqdm

    from trainer.evaluate.metrics import summarize

    # (package, precision) -> (its eval file, the episodes an earlier evaluation of it already ran)
    todo: dict[tuple[str, str], tuple[Path, list]] = {}
    for run in runs:
        d = args.runs_dir / run.name
        if not (d / "package" / "manifest.json").exists():
            _log(f"{run.name}: no package yet, eval skipped")
            continue
        have = {f.get("precision") for f in _read_json(d / "package" / "manifest.json").get("files", [])}
        for prec in args.precisions:
            if prec not in have:
                _log(f"{run.name}: package has no {prec} graph, {prec} eval skipped")
                continue
            out = d / f"eval_{prec}.json"
            kept = _reusable_episodes(_read_json(out), args.eval_seed, _package_source(d))
            if len(kept) >= args.episodes:
                continue  # never throw finished episodes away; a larger --episodes extends the evaluation
            todo[(str(d / "package"), prec)] = (out, kept)
    if not todo:
        _log("eval: nothing to do")
        return
    tasks = [(pkg, prec, i, args.eval_seed, args.max_steps) for (pkg, prec), (_, kept) in todo.items()
             for i in range(len(kept), args.episodes)]
    # longest first: diffusion (DDPM, 100 network calls per plan) dominates the wall time
    tasks.sort(key=lambda t: "diffusion" not in t[0])
    workers = max(1, min(args.eval_workers or os.cpu_count() or 1, len(tasks)))
    _log(f"eval: {len(todo)} (package, precision) pairs up to {args.episodes} episodes, {len(tasks)} to run, "
         f"on {workers} worker(s)")
    results: dict[tuple[str, str], list] = {k: [] for k in todo}
    t0 = time.time()
    ctx = mp.get_context("spawn")  # workers import onnxruntime only; never fork a process holding torch threads
    with ctx.Pool(workers) as pool, tqdm(total=len(tasks), desc="eval", unit="ep", dynamic_ncols=True) as bar:
        for pkg, prec, res in pool.imap_unordered(_eval_task, tasks, chunksize=1):
            results[(pkg, prec)].append(res)
            bar.update(1)
            out, kept = todo[(pkg, prec)]
            if len(kept) + len(results[(pkg, prec)]) == args.episodes:
                eps = kept + sorted(results[(pkg, prec)], key=lambda r: r.episode)
                s = summarize(eps)
                d = Path(pkg).parent
                out.write_text(json.dumps({
                    "run": d.name, "precision": prec, "episodes": args.episodes, "seed": args.eval_seed,
                    **_package_source(d), "summary": s.to_dict(),
                    "per_episode": [r.to_dict() for r in eps]}, indent=1))
                _log(f"{d.name} {prec}: score {s.score}  success {s.success}")
    _log(f"eval: done in {time.time() - t0:.0f} s")


# ------------------------------------------------------------------------------------------ report
def collect(runs_dir: Path) -> list[dict]:
    """One row per evaluated (run, precision); ``episodes_reward`` (env seed -> max reward) is kept for
    paired comparisons and left out of the JSON."""
    rows = []
    for d in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        for prec in PRECISIONS:
            e = _read_json(d / f"eval_{prec}.json")
            if not e:
                continue
            run = parse_run_name(d.name)
            if run is None:
                continue
            t = _read_json(d / "train.json") or {}
            rows.append({"method": run.method, "fraction": run.fraction, "seed": run.seed, "precision": prec,
                         "steps": e["package_steps"], "checkpoint": e.get("checkpoint", "last.pt"),
                         "train_wall_s": t.get("wall_s"), "episodes": e["episodes"],
                         "train_device": t.get("device"),
                         "preset": (_read_json(d / "config.json") or {}).get("net_preset"),
                         "score": e["summary"]["score"]["value"], "score_low": e["summary"]["score"]["low"],
                         "score_high": e["summary"]["score"]["high"], "success": e["summary"]["success"]["value"],
                         "success_low": e["summary"]["success"]["low"], "success_high": e["summary"]["success"]["high"],
                         "plan_ms": e["summary"]["plan_latency_ms"],
                         "episodes_reward": {int(r["seed"]): float(r["max_reward"]) for r in e.get("per_episode", [])}})
    return rows


def _episode_rewards(rs: list[dict]) -> np.ndarray:
    return np.array([v for r in rs for v in r["episodes_reward"].values()])


def aggregate(rows: list[dict]) -> dict:
    """(method, fraction, precision) -> mean over seeds. The CI is the episode bootstrap of one seed, or,
    with several seeds, of all their episodes pooled (rollout noise; seed-to-seed spread is score_std)."""
    from trainer.evaluate.metrics import bootstrap_mean_ci, wilson_ci

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["fraction"], r["precision"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        one = len(rs) == 1
        pooled = _episode_rewards(rs)
        if one or len(pooled) == 0:
            score_ci = (rs[0]["score_low"], rs[0]["score_high"])
            success_ci = (rs[0]["success_low"], rs[0]["success_high"])
        else:
            ci = bootstrap_mean_ci(pooled)
            wins = int(round(sum(r["success"] * r["episodes"] for r in rs)))
            w = wilson_ci(wins, sum(r["episodes"] for r in rs))
            score_ci, success_ci = (ci.low, ci.high), (w.low, w.high)
        out[key] = {"seeds": len(rs), "score": float(np.mean([r["score"] for r in rs])), "score_ci": score_ci,
                    "score_std": float(np.std([r["score"] for r in rs])),
                    "success": float(np.mean([r["success"] for r in rs])), "success_ci": success_ci,
                    "plan_ms": float(np.mean([r["plan_ms"] for r in rs])), "steps": rs[0]["steps"],
                    "episodes": min(r["episodes"] for r in rs), "episodes_max": max(r["episodes"] for r in rs)}
    return out


def paired_groups(rows: list[dict], a: dict, b: dict) -> list[np.ndarray]:
    """Per-episode differences (max reward of a minus b), one array per matched run pair: runs matched on
    the fields neither selection fixes, episodes on environment seed; a and b select rows by their fields."""
    free = [k for k in ("method", "fraction", "seed", "precision") if k not in a and k not in b]

    def pick(sel):
        return {tuple(r[k] for k in free): r for r in rows if all(r[k] == v for k, v in sel.items())}

    ra, rb = pick(a), pick(b)
    return [np.array([ra[k]["episodes_reward"][s] - rb[k]["episodes_reward"][s]
                      for s in sorted(ra[k]["episodes_reward"].keys() & rb[k]["episodes_reward"].keys())])
            for k in sorted(ra.keys() & rb.keys())]


def paired_difference(rows: list[dict], a: dict, b: dict):
    """Mean paired difference of a minus b (:func:`paired_groups`) with a CI that resamples episodes
    (rollout noise), and the number of paired episodes."""
    from trainer.evaluate.metrics import bootstrap_mean_ci

    groups = paired_groups(rows, a, b)
    n = sum(len(g) for g in groups)
    return (bootstrap_mean_ci(np.concatenate(groups)), n) if n else (None, 0)


def paired_cis(rows: list[dict], a: dict, b: dict):
    """(episode CI, run-and-episode CI, paired episodes) of a minus b: :func:`group_cis` of
    :func:`paired_groups`."""
    return group_cis(paired_groups(rows, a, b))


def group_cis(groups: list[np.ndarray]):
    """(episode CI, run-and-episode CI, episodes) of per-run paired differences. The second CI resamples
    the runs and then their episodes, which adds the training-seed spread: "would new training runs agree"."""
    from trainer.evaluate.metrics import bootstrap_mean_ci, two_level_bootstrap_ci

    n = sum(len(g) for g in groups)
    if not n:
        return None, None, 0
    return bootstrap_mean_ci(np.concatenate(groups)), two_level_bootstrap_ci(groups), n


def markdown(agg: dict) -> str:
    methods = [m for m in METHODS if any(k[0] == m for k in agg)]
    fracs = sorted({k[1] for k in agg})
    head = "| method | precision | " + " | ".join(f"{f:.0%} of demos" for f in fracs) + " |"
    lines = [head, "|" + "---|" * (2 + len(fracs))]
    most = max(a["seeds"] for a in agg.values())
    precisions = [p for p in PRECISIONS if any(k[2] == p for k in agg)]
    for m in methods:
        for prec in precisions:
            cells = []
            for f in fracs:
                a = agg.get((m, f, prec))
                if a is None:
                    cells.append("–")
                    continue
                ci = f" [{a['score_ci'][0]:.2f}, {a['score_ci'][1]:.2f}]"
                fewer = f" ({a['seeds']} seed{'s' if a['seeds'] > 1 else ''})" if a["seeds"] < most else ""
                cells.append(f"{a['score']:.3f}{ci} / {a['success']:.0%}{fewer}")
            lines.append(f"| {m} | {prec} | " + " | ".join(cells) + " |")
    any_a = next(iter(agg.values()))
    lo, hi = min(a["episodes"] for a in agg.values()), max(a["episodes_max"] for a in agg.values())
    lines.append("")
    lines.append(f"cells: score (average max coverage/0.95, mean over training seeds) [95% CI over the pooled "
                 f"episodes] / success rate; {lo if lo == hi else f'{lo}-{hi}'} episodes per seed, "
                 f"{any_a['steps']} training steps; "
                 f"{most} training seed(s) per cell unless marked")
    return "\n".join(lines)


INT8_TOLERANCE = 0.02


def targets(agg: dict, rows: list[dict] | None = None) -> list[str]:
    """The issue's targets, each with the paired per-episode difference and its bootstrap 95% CI (the same
    environment seeds for every method and precision: pairing removes the initial-state variance)."""
    rows = rows or []
    notes = []
    for f in (0.1, 0.25):
        for prec in PRECISIONS:
            imle = agg.get(("rs_imle", f, prec))
            base = {m: agg.get((m, f, prec)) for m in ("diffusion", "flow_matching")}
            if not imle or not any(base.values()):
                continue
            diffs = []
            for m, b in base.items():
                if not b:
                    continue
                ci, cr, n = paired_cis(rows, {"method": "rs_imle", "fraction": f, "precision": prec},
                                       {"method": m, "fraction": f, "precision": prec})
                if ci is not None:
                    diffs.append(f"{m} {ci.value:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] "
                                 f"(runs resampled too: [{cr.low:+.3f}, {cr.high:+.3f}]; {n} episodes)")
            paired = "; IMLE minus (paired): " + ", ".join(diffs) if diffs else ""
            scores = ", ".join(f"{m} {b['score']:.3f}" if b else f"{m} not run" for m, b in base.items())
            if all(base.values()):
                ok = all(round(imle["score"], 3) >= round(b["score"], 3) for b in base.values())  # as printed
                verdict = "met" if ok else "MISSED"
            else:
                verdict = "target needs both baselines"
            notes.append(f"{f:.0%} {prec}: IMLE {imle['score']:.3f} vs {scores} -> {verdict}{paired}")
    # int8 vs fp32: per cell the gap is rollout noise (about +-0.09 at 50 episodes); pooled over fractions and
    # seeds the paired difference can show whether int8 costs more than the tolerance
    for m in (*METHODS, None):
        sel = {"method": m} if m else {}
        ci, cr, n = paired_cis(rows, {**sel, "precision": "int8"}, {**sel, "precision": "fp32"})
        if ci is None:
            continue
        if -INT8_TOLERANCE <= ci.low and ci.high <= INT8_TOLERANCE:
            verdict = "met (the whole CI within +-0.02)"
        elif abs(ci.value) <= INT8_TOLERANCE:
            verdict = "not shown (the mean is within +-0.02, the CI is wider)"
        else:
            verdict = "MISSED"
        notes.append(f"{m or 'all methods'} int8 - fp32, paired over all fractions and seeds ({n} episodes): "
                     f"{ci.value:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] "
                     f"(runs resampled too: [{cr.low:+.3f}, {cr.high:+.3f}]) -> {verdict}")
    for (m, f, prec) in sorted(agg):
        if prec == "int8" and (m, f, "fp32") in agg:  # paired: only the seeds evaluated in both precisions
            ci, n = paired_difference(rows, {"method": m, "fraction": f, "precision": "int8"},
                                      {"method": m, "fraction": f, "precision": "fp32"})
            if ci is not None:
                notes.append(f"{m} {f:.0%}: int8 - fp32 = {ci.value:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] "
                             f"({n} paired episodes; one cell, see the pooled lines)")
    return notes


def against(rows: list[dict], other: list[dict], label: str) -> list[str]:
    """Each (method, fraction, precision) here minus the same cell of another study (``--against``), paired
    on training seed and environment seed: what changing one setting (a longer step budget, say) did to the
    very runs it was changed for."""
    tagged = [{**r, "study": "here"} for r in rows] + [{**r, "study": "other"} for r in other]
    notes = []
    for m, f, prec in sorted({(r["method"], r["fraction"], r["precision"]) for r in rows}):
        cell = {"method": m, "fraction": f, "precision": prec}
        groups = paired_groups(tagged, {**cell, "study": "here"}, {**cell, "study": "other"})
        ci, cr, n = group_cis(groups)
        if ci is None:
            continue
        seeds = len(groups)
        notes.append(f"{m} {f:.0%} {prec}: here minus {label} = {ci.value:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] "
                     f"(runs resampled too: [{cr.low:+.3f}, {cr.high:+.3f}]; {seeds} seeds, {n} paired episodes)")
    return notes


def plot(agg: dict, path: Path, rows: list[dict] | None = None) -> None:
    """Score against data fraction per method and precision, fp32 with its episode CI; with ``rows``,
    each training run's fp32 score as a dot beside its line, so the seed spread shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    colors = {"rs_imle": "C0", "diffusion": "C1", "flow_matching": "C2"}
    for m in METHODS:
        for prec, style in (("fp32", "-o"), ("int8", "--s")):
            pts = sorted((f, a) for (mm, f, p), a in agg.items() if mm == m and p == prec)
            if not pts:
                continue
            xs = [f * 100 for f, _ in pts]
            ys = [a["score"] for _, a in pts]
            ax.plot(xs, ys, style, color=colors[m], label=f"{m} {prec}", alpha=1.0 if prec == "fp32" else 0.6)
            if prec == "fp32":
                ax.fill_between(xs, [a["score_ci"][0] for _, a in pts], [a["score_ci"][1] for _, a in pts],
                                color=colors[m], alpha=0.12)
                runs = [r for r in rows or [] if r["method"] == m and r["precision"] == prec]
                shift = 1.0 + 0.025 * (METHODS.index(m) - 1)  # side by side, not on top of each other
                ax.scatter([r["fraction"] * 100 * shift for r in runs], [r["score"] for r in runs], s=9,
                           color=colors[m], alpha=0.5, linewidths=0)
    ax.set_xscale("log")
    present = sorted({f for (_, f, _) in agg}) or list(FRACTIONS)  # the axis spans the fractions measured
    ax.set_xticks([f * 100 for f in present], [f"{f * 100:g}%" for f in present])
    ax.minorticks_off()
    ax.set_xlim(present[0] * 100 / 1.15, present[-1] * 100 * 1.15)
    ax.set_xlabel("fraction of the 206 Push-T demonstrations")
    ax.set_ylabel("score (average max coverage/0.95)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def stage_report(args) -> None:
    rows = collect(args.runs_dir) if args.runs_dir.exists() else []
    rows = [r for r in rows if r["precision"] in args.precisions]  # --precisions fp32: no int8 rows or notes
    if not rows:
        _log(f"report: no evaluated runs in {args.runs_dir}")
        return
    agg = aggregate(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    md = markdown(agg)
    source = {(r["method"], r["fraction"], r["seed"]): r["checkpoint"] for r in rows}
    best = sum(c == "best.pt" for c in source.values())
    if best:  # a different protocol from the final weights: say so under the table
        md += (f"\npackages: best.pt (the best closed-loop validation while training) for {best} of "
               f"{len(source)} runs, last.pt for the rest")
    presets = sorted({(r["method"], r["preset"]) for r in rows if r["preset"]})
    if len({p for _, p in presets}) > 1:  # a probe that mixes network sizes: say which is which
        md += "\nU-Net preset: " + ", ".join(f"{m} {p}" for m, p in presets)
    notes = targets(agg, rows)
    if args.against is not None:
        other = [r for r in collect(args.against) if r["precision"] in args.precisions]
        if not other:
            _log(f"report: no evaluated runs in {args.against} to compare against")
        notes += against(rows, other, args.against.name)
    print(md)
    print("\n".join(notes))
    (args.out / "sample_efficiency.md").write_text(md + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    (args.out / "sample_efficiency.json").write_text(json.dumps({
        "runs": [{k: v for k, v in r.items() if k != "episodes_reward"} for r in rows],
        "aggregate": [{"method": k[0], "fraction": k[1], "precision": k[2], **v} for k, v in agg.items()],
        "targets": notes, "anchors": ANCHORS}, indent=1))
    plot(agg, args.out / "sample_efficiency.png", rows)
    _log(f"report: {args.out / 'sample_efficiency.md'}, .json, .png")


# ------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["train", "export", "eval", "report", "all"], default="all")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "sample_efficiency")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the report files (default RUNS_DIR/report; the study recorded in "
                        "docs/benchmarks.md is written with --out benchmarks/results)")
    # The grid. train and all default to every method and fraction at seed 0; export and eval default
    # to every run already trained in --runs-dir, and these flags then narrow that set.
    p.add_argument("--methods", default=None, help=f"comma separated (default {','.join(METHODS)})")
    p.add_argument("--fractions", default=None, help=f"comma separated (default {','.join(map(str, FRACTIONS))})")
    p.add_argument("--seeds", default=None,
                   help="training seeds, comma separated (default 0; the demo subset is fixed)")
    p.add_argument("--data", default=None, help="replay buffer (default: the shared Push-T demos)")
    p.add_argument("--against", type=Path, default=None,
                   help="report: also print each cell minus the same runs (method, fraction, seed) of this "
                        "other study folder, paired by episode, e.g. a longer step budget against a shorter one")
    # training (the same for every method; RS-IMLE-only flags apply to rs_imle runs)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--parallel", type=int, default=1, help="trainings at once")
    p.add_argument("--threads", type=int, default=0, help="torch threads per training (default: cores / parallel)")
    p.add_argument("--preset", default=None, help="U-Net size: tiny, small (default), paper")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--state-encoder", default=None)
    p.add_argument("--n-samples", type=int, default=None)
    p.add_argument("--epsilon", type=float, default=None)
    p.add_argument("--obs-noise", type=float, default=None,
                   help="train: observation-noise augmentation (imle-train --obs-noise), every method")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    # export / evaluation
    p.add_argument("--eval-every", type=int, default=0,
                   help="train: closed-loop validation of the EMA weights every N steps on validation seeds "
                        "(200000+, disjoint from --eval-seed's), keeping best.pt as the paper does (0 = off)")
    p.add_argument("--eval-episodes", type=int, default=10, help="validation episodes per --eval-every check")
    p.add_argument("--checkpoint", choices=["last", "best"], default="last",
                   help="export: the final EMA weights (last.pt) or the best validated ones (best.pt)")
    p.add_argument("--export-parallel", type=int, default=0, help="exports at once (default: cores)")
    p.add_argument("--diffusion-sampler", choices=["ddpm", "ddim"], default="ddpm",
                   help="diffusion packages: DDPM-100 (Diffusion Policy's setting, default) or DDIM")
    p.add_argument("--diffusion-steps", type=int, default=10, help="DDIM steps with --diffusion-sampler ddim")
    p.add_argument("--flow-steps", type=int, default=10, help="flow matching: Euler steps (default 10)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--eval-seed", type=int, default=100000)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--eval-workers", type=int, default=0, help="episode processes (default: cores)")
    return p


def parse_run_name(name: str) -> Run | None:
    """``rs_imle_f0.1_s3`` -> Run; None for a folder that is not a run (report/, logs...)."""
    try:
        method, frac, seed = name.rsplit("_", 2)
        if method in METHODS and frac[0] == "f" and seed[0] == "s":
            return Run(method, float(frac[1:]), int(seed[1:]))
    except (ValueError, IndexError):
        pass
    return None


def select_runs(args) -> list[Run]:
    """The runs a stage works on: the flags' grid for train/all; for export/eval alone, the runs trained
    in --runs-dir that the flags (where given) allow."""
    def listed(text: str | None, cast, default) -> list:
        if text is None:
            return list(default)
        try:
            return [cast(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"cannot read {text!r} as a comma-separated list") from None

    methods = listed(args.methods, str, METHODS)
    fractions = listed(args.fractions, float, FRACTIONS)
    seeds = listed(args.seeds, int, [0])
    bad = [m for m in methods if m not in METHODS] + [p for p in args.precisions if p not in PRECISIONS]
    if bad:
        raise ValueError(f"unknown method/precision {', '.join(bad)}")
    if args.stage in ("train", "all"):
        return [Run(m, f, s) for f in fractions for m in methods for s in seeds]
    found = {parse_run_name(p.parent.name) for p in args.runs_dir.glob("*/train.json")} - {None}
    return sorted((r for r in found if (args.methods is None or r.method in methods)
                   and (args.fractions is None or r.fraction in fractions)
                   and (args.seeds is None or r.seed in seeds)),
                  key=lambda r: (r.fraction, METHODS.index(r.method), r.seed))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.runs_dir = args.runs_dir.resolve()
    args.against = args.against.resolve() if args.against is not None else None
    args.out = args.runs_dir / "report" if args.out is None else args.out  # never overwrite a recorded study by default
    args.precisions = [p for p in args.precisions.split(",") if p]
    try:
        runs = select_runs(args)
    except ValueError as exc:
        print(f"sample_efficiency: error: {exc}", file=sys.stderr)
        return 2
    if args.against is not None and (args.stage not in ("report", "all") or not args.against.is_dir()):
        print(f"sample_efficiency: error: --against needs --stage report (or all) and an existing study folder; "
              f"got --stage {args.stage} and {args.against}", file=sys.stderr)
        return 2
    if not runs and args.stage in ("export", "eval"):
        print(f"sample_efficiency: error: no trained runs in {args.runs_dir} match --methods/--fractions/--seeds "
              "(a trained run is a <method>_f<fraction>_s<seed> folder with train.json)", file=sys.stderr)
        return 2
    if args.device == "cuda":
        try:
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError
        except Exception:
            print("sample_efficiency: error: --device cuda but torch sees no CUDA device", file=sys.stderr)
            return 2
    t0 = time.time()
    stages = ["train", "export", "eval", "report"] if args.stage == "all" else [args.stage]
    if "eval" in stages or (args.eval_every and "train" in stages):  # before any work, not per training
        from trainer.evaluate.env import SimUnavailable, require_gym_pusht

        try:
            require_gym_pusht()
        except SimUnavailable as exc:
            print(f"sample_efficiency: error: {exc}", file=sys.stderr)
            return 2
    for stage in stages:
        if stage == "train":
            stage_train(runs, args)
        elif stage == "export":
            stage_export(runs, args)
        elif stage == "eval":
            stage_eval(runs, args)
        else:
            stage_report(args)
    _log(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
