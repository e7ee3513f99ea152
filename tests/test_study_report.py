"""The sample-efficiency report: seeds pooled per cell and paired per-episode differences."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    # imported by name from a path entry (not from a file spec) so that the eval stage's spawned
    # workers, which unpickle its functions by module name, can import it too
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("sample_efficiency")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _write_run(root: Path, name: str, rewards: dict[str, np.ndarray]) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "train.json").write_text(json.dumps({"steps": 10, "wall_s": 1.0, "device": "cpu"}))
    for prec, r in rewards.items():
        per = [{"episode": i, "seed": 100 + i, "max_reward": float(v), "success": bool(v > 0.99)}
               for i, v in enumerate(r)]
        summary = {"score": {"value": float(r.mean()), "low": 0.0, "high": 1.0},
                   "success": {"value": float(np.mean(r > 0.99)), "low": 0.0, "high": 1.0}, "plan_latency_ms": 1.0}
        (d / f"eval_{prec}.json").write_text(json.dumps({"episodes": len(r), "seed": 100, "package_steps": 10,
                                                          "summary": summary, "per_episode": per}))


def test_paired_difference_matches_episodes_and_pools_seeds(study, tmp_path):
    rng = np.random.default_rng(0)
    hard = rng.random(40)  # per-episode difficulty shared by every method: pairing cancels it
    for seed in (0, 1):
        _write_run(tmp_path, f"rs_imle_f0.1_s{seed}", {"fp32": hard, "int8": hard - 0.01})
        _write_run(tmp_path, f"diffusion_f0.1_s{seed}", {"fp32": np.clip(hard - 0.2, 0, 1)})
    rows = study.collect(tmp_path)
    ci, n = study.paired_difference(rows, {"method": "rs_imle", "precision": "int8"},
                                    {"method": "rs_imle", "precision": "fp32"})
    assert n == 80  # 2 seeds x 40 episodes
    assert ci.value == pytest.approx(-0.01) and ci.low == pytest.approx(-0.01) and ci.high == pytest.approx(-0.01)
    ci, n = study.paired_difference(rows, {"method": "rs_imle", "fraction": 0.1, "precision": "fp32"},
                                    {"method": "diffusion", "fraction": 0.1, "precision": "fp32"})
    assert n == 80 and 0 < ci.low <= ci.value <= ci.high <= 0.2
    agg = study.aggregate(rows)
    cell = agg[("rs_imle", 0.1, "fp32")]
    assert cell["seeds"] == 2 and cell["score"] == pytest.approx(hard.mean())
    assert cell["score_ci"][0] < hard.mean() < cell["score_ci"][1]  # bootstrap over the 80 pooled episodes
    notes = study.targets(agg, rows)
    assert any("rs_imle int8 - fp32" in s and "met (the whole CI" in s for s in notes)
    # a study with one baseline still gets its paired comparison, without a verdict on the target
    fp32 = [s for s in notes if s.startswith("10% fp32: IMLE")]
    assert len(fp32) == 1 and "flow_matching not run -> target needs both baselines" in fp32[0]
    assert f"diffusion {np.mean(hard - np.clip(hard - 0.2, 0, 1)):+.3f} [" in fp32[0] and "80 episodes" in fp32[0]


def test_int8_gap_beyond_tolerance_is_reported_missed(study, tmp_path):
    r = np.linspace(0.2, 0.9, 30)
    _write_run(tmp_path, "flow_matching_f1_s0", {"fp32": r, "int8": r - 0.1})
    rows = study.collect(tmp_path)
    notes = study.targets(study.aggregate(rows), rows)
    assert any(s.startswith("flow_matching int8 - fp32") and s.endswith("MISSED") for s in notes)


def test_study_stages_run_end_to_end_on_a_tiny_buffer(study, tiny_buffer, tmp_path):
    """train -> export -> eval -> report through the script's own entry point (a few seconds of work)."""
    runs, out = tmp_path / "runs", tmp_path / "report"
    code = study.main(["--stage", "all", "--methods", "rs_imle", "--fractions", "1", "--seeds", "0",
                       "--data", str(tiny_buffer[0]), "--steps", "2", "--preset", "tiny", "--batch-size", "8",
                       "--n-samples", "4", "--device", "cpu", "--episodes", "1", "--max-steps", "8",
                       "--precisions", "fp32", "--eval-workers", "1", "--export-parallel", "1",
                       "--runs-dir", str(runs), "--out", str(out)])
    assert code in (0, None)
    ev = json.loads((runs / "rs_imle_f1_s0" / "eval_fp32.json").read_text())
    assert ev["episodes"] == 1 and ev["package_steps"] == 2
    report = json.loads((out / "sample_efficiency.json").read_text())
    assert [(r["method"], r["precision"]) for r in report["runs"]] == [("rs_imle", "fp32")]

    # a larger --episodes extends the evaluation: the finished episode is kept, only the new one runs
    common = ["--methods", "rs_imle", "--fractions", "1", "--seeds", "0", "--max-steps", "8", "--precisions",
              "fp32", "--eval-workers", "1", "--runs-dir", str(runs)]
    assert study.main(["--stage", "eval", "--episodes", "2", *common]) in (0, None)
    ev2 = json.loads((runs / "rs_imle_f1_s0" / "eval_fp32.json").read_text())
    assert ev2["episodes"] == 2 and ev2["summary"]["episodes"] == 2
    assert ev2["per_episode"][0] == ev["per_episode"][0]  # same record, wall time included: not run again
    assert [r["seed"] for r in ev2["per_episode"]] == [ev["seed"], ev["seed"] + 1]
    # asking for fewer episodes than exist keeps them all
    assert study.main(["--stage", "eval", "--episodes", "1", *common]) in (0, None)
    assert json.loads((runs / "rs_imle_f1_s0" / "eval_fp32.json").read_text()) == ev2


def test_study_keeps_and_exports_the_best_validated_checkpoint(study, tiny_buffer, tmp_path):
    """--eval-every validates while training (best.pt kept); --checkpoint best exports that one."""
    runs = tmp_path / "runs"
    common = ["--methods", "rs_imle", "--fractions", "1", "--seeds", "0", "--runs-dir", str(runs),
              "--data", str(tiny_buffer[0]), "--export-parallel", "1"]
    assert study.main(["--stage", "train", "--steps", "4", "--preset", "tiny", "--batch-size", "8", "--n-samples", "4",
                       "--device", "cpu", "--eval-every", "2", "--eval-episodes", "1", *common]) in (0, None)
    d = runs / "rs_imle_f1_s0"
    checks = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if "eval_score" in line]
    assert [c["step"] for c in checks] == [2, 4] and all(c["eval_episodes"] == 1 for c in checks)
    assert (d / "best.pt").exists()
    assert study.main(["--stage", "export", "--checkpoint", "best", *common]) in (0, None)
    assert json.loads((d / "export.json").read_text())["checkpoint"] == "best.pt"
    best_step = max(checks, key=lambda c: c["eval_score"])["step"]  # the first of equals is kept
    manifest = json.loads((d / "package" / "manifest.json").read_text())
    assert manifest["training"]["steps"] == best_step
    evaluate = ["--stage", "eval", "--episodes", "1", "--max-steps", "8", "--precisions", "fp32",
                "--eval-workers", "1", "--runs-dir", str(runs)]
    assert study.main(evaluate) in (0, None)
    assert json.loads((d / "eval_fp32.json").read_text())["checkpoint"] == "best.pt"
    assert study.main(["--stage", "report", "--runs-dir", str(runs)]) in (0, None)
    assert "best.pt (the best closed-loop validation while training) for 1 of 1 runs" in \
        (runs / "report" / "sample_efficiency.md").read_text()
    # asking for last.pt again re-exports (the package is not silently the best one), and the
    # best package's episodes are not kept for the new one: it is evaluated again
    assert study.main(["--stage", "export", "--checkpoint", "last", *common]) in (0, None)
    assert json.loads((d / "export.json").read_text())["checkpoint"] == "last.pt"
    assert study.main(evaluate) in (0, None)
    assert json.loads((d / "eval_fp32.json").read_text())["checkpoint"] == "last.pt"
    assert study.main(["--stage", "report", "--runs-dir", str(runs)]) in (0, None)
    assert "best.pt" not in (runs / "report" / "sample_efficiency.md").read_text()
    # best.pt missing: that run's export fails with a reason, the stage does not crash
    (d / "best.pt").unlink()
    args = study.build_parser().parse_args(["--stage", "export", "--checkpoint", "best", *common])
    args.precisions = ["fp32"]
    assert "no best.pt" in study.export_one(study.select_runs(args)[0], args)


def test_validation_without_the_simulator_is_one_error_before_any_training(study, tmp_path, monkeypatch, capsys):
    import trainer.evaluate.env as env

    def missing():
        raise env.SimUnavailable("gym-pusht is not installed")

    monkeypatch.setattr(env, "require_gym_pusht", missing)
    argv = ["--stage", "train", "--methods", "rs_imle", "--fractions", "1", "--steps", "2", "--runs-dir", str(tmp_path)]
    assert study.main([*argv, "--eval-every", "1"]) == 2
    assert "gym-pusht is not installed" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing was started


def test_report_defaults_to_the_runs_folder_not_the_recorded_study(study, tmp_path):
    r = np.linspace(0.2, 0.9, 10)
    _write_run(tmp_path, "rs_imle_f0.1_s0", {"fp32": r})
    assert study.main(["--stage", "report", "--runs-dir", str(tmp_path)]) in (0, None)
    report = json.loads((tmp_path / "report" / "sample_efficiency.json").read_text())
    assert report["runs"][0]["score"] == pytest.approx(r.mean())


def test_export_and_eval_default_to_the_runs_already_trained(study, tmp_path):
    """--stage export/eval without grid flags work on every trained run in the folder (not only seed 0),
    and the flags narrow that set."""
    for name in ("rs_imle_f0.1_s3", "diffusion_f0.25_s7", "rs_imle_f0.1_s4"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.json").write_text("{}")
    (tmp_path / "rs_imle_f0.1_s5").mkdir()  # not trained: no train.json
    (tmp_path / "report").mkdir()
    args = study.build_parser().parse_args(["--stage", "export", "--runs-dir", str(tmp_path)])
    args.precisions = ["fp32"]
    assert [r.name for r in study.select_runs(args)] == ["rs_imle_f0.1_s3", "rs_imle_f0.1_s4", "diffusion_f0.25_s7"]
    args.seeds = "4,7"
    assert [r.name for r in study.select_runs(args)] == ["rs_imle_f0.1_s4", "diffusion_f0.25_s7"]
    args.methods, args.seeds = "diffusion", None
    assert [r.name for r in study.select_runs(args)] == ["diffusion_f0.25_s7"]
    # train keeps the flags' grid, seed 0 by default
    args = study.build_parser().parse_args(["--stage", "train", "--methods", "rs_imle", "--fractions", "0.1,1"])
    args.precisions = ["fp32"]
    assert [r.name for r in study.select_runs(args)] == ["rs_imle_f0.1_s0", "rs_imle_f1_s0"]
    # a folder with nothing trained is a clear error, not a silent no-op
    assert study.main(["--stage", "eval", "--runs-dir", str(tmp_path / "report")]) == 2
    assert study.main(["--stage", "export", "--seeds", "x", "--runs-dir", str(tmp_path)]) == 2


def test_report_against_another_study_pairs_the_same_runs(study, tmp_path, capsys):
    """--against: each cell minus the same (method, fraction, seed) of another folder, paired by episode;
    runs present in only one folder are left out."""
    rng = np.random.default_rng(1)
    long, short = tmp_path / "long", tmp_path / "short"
    for seed in (0, 1):
        hard = rng.random(30)
        _write_run(short, f"rs_imle_f0.1_s{seed}", {"fp32": hard})
        _write_run(long, f"rs_imle_f0.1_s{seed}", {"fp32": np.clip(hard + 0.1, 0, 2)})
    _write_run(long, "rs_imle_f0.1_s2", {"fp32": np.ones(30)})  # no partner in short: must not count
    _write_run(short, "diffusion_f0.1_s0", {"fp32": np.ones(30)})  # nothing of it in long
    assert study.main(["--stage", "report", "--runs-dir", str(long), "--against", str(short)]) in (0, None)
    lines = [s for s in capsys.readouterr().out.splitlines() if "here minus short" in s]
    assert len(lines) == 1 and lines[0].startswith("rs_imle 10% fp32: here minus short = +0.100 [+0.100, +0.100]")
    assert "2 seeds, 60 paired episodes" in lines[0]
    report = json.loads((long / "report" / "sample_efficiency.json").read_text())
    assert lines[0] in report["targets"]
    # a mistyped folder or a stage that makes no report is a one-line error, not a silent no-op
    assert study.main(["--stage", "report", "--runs-dir", str(long), "--against", str(tmp_path / "nope")]) == 2
    assert study.main(["--stage", "export", "--runs-dir", str(long), "--against", str(short)]) == 2
    assert "--against needs --stage report" in capsys.readouterr().err


def test_per_episode_comparison_finds_states_one_method_alone_solves(study, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        per_episode = importlib.import_module("per_episode")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rng = np.random.default_rng(1)
    shared = rng.uniform(0.3, 0.7, 20)  # both methods score these states alike
    for seed in (0, 1, 2):
        a, b = shared + rng.normal(0, 0.02, 20), shared + rng.normal(0, 0.02, 20)
        a[3], b[3] = 1.0, 0.05  # state 3 (env seed 103): only rs_imle solves it, in every run
        b[7], a[7] = 0.9, 0.0   # state 7 (env seed 107): only diffusion
        _write_run(tmp_path, f"rs_imle_f0.1_s{seed}", {"fp32": np.clip(a, 0, 1)})
        _write_run(tmp_path, f"diffusion_f0.1_s{seed}", {"fp32": np.clip(b, 0, 1)})
    res = per_episode.compare(study.collect(tmp_path), "rs_imle", "diffusion", 0.1)
    assert res["runs"] == [3, 3] and res["episodes"] == 20
    assert [s["env_seed"] for s in res["method_specific"]["only_a"]] == [103]
    assert [s["env_seed"] for s in res["method_specific"]["only_b"]] == [107]
    assert res["largest_differences"]["a_ahead"][0]["env_seed"] == 103
    assert res["largest_differences"]["b_ahead"][0]["env_seed"] == 107
    assert res["histogram"]["rs_imle"]["success"] == 3 and res["histogram"]["diffusion"]["success"] == 0
    assert sum(res["histogram"]["diffusion"].values()) == 60
    out = tmp_path / "report"
    assert per_episode.main(["--runs-dir", str(tmp_path), "--fraction", "0.1", "--out", str(out)]) == 0
    assert (out / "per_episode_rs_imle_diffusion_f0.1.json").is_file()
    assert (out / "per_episode_rs_imle_diffusion_f0.1.png").stat().st_size > 0
    with pytest.raises(SystemExit):  # no runs at that fraction: one argparse error, no traceback
        per_episode.main(["--runs-dir", str(tmp_path), "--fraction", "0.5"])


def test_report_keeps_only_the_precisions_asked_for(study, tmp_path):
    r = np.linspace(0.2, 0.9, 10)
    _write_run(tmp_path, "rs_imle_f0.1_s0", {"fp32": r, "int8": r[::-1] * 0.5})
    assert study.main(["--stage", "report", "--runs-dir", str(tmp_path), "--precisions", "fp32"]) in (0, None)
    md = (tmp_path / "report" / "sample_efficiency.md").read_text()
    report = json.loads((tmp_path / "report" / "sample_efficiency.json").read_text())
    assert "| rs_imle | fp32 |" in md and "| rs_imle | int8 |" not in md and "int8 - fp32" not in md
    assert [row["precision"] for row in report["runs"]] == ["fp32"]
    assert study.main(["--stage", "report", "--runs-dir", str(tmp_path)]) in (0, None)  # default: both
    assert "| rs_imle | int8 |" in (tmp_path / "report" / "sample_efficiency.md").read_text()


def test_report_names_the_network_sizes_when_runs_mix_them(study, tmp_path):
    r = np.linspace(0.2, 0.9, 10)
    for name, preset in (("rs_imle_f0.1_s0", "paper"), ("diffusion_f0.1_s0", "tiny")):
        _write_run(tmp_path, name, {"fp32": r})
        (tmp_path / name / "config.json").write_text(json.dumps({"net_preset": preset}))
    assert study.main(["--stage", "report", "--runs-dir", str(tmp_path)]) in (0, None)
    assert "U-Net preset: diffusion tiny, rs_imle paper" in (tmp_path / "report" / "sample_efficiency.md").read_text()
    (tmp_path / "rs_imle_f0.1_s0" / "config.json").write_text(json.dumps({"net_preset": "tiny"}))
    assert study.main(["--stage", "report", "--runs-dir", str(tmp_path)]) in (0, None)
    assert "U-Net preset" not in (tmp_path / "report" / "sample_efficiency.md").read_text()
