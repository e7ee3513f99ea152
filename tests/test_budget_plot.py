"""benchmarks/budget_plot.py: the plotted points come from the recorded results; unreadable results are one line."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "budget_plot.py"
spec = importlib.util.spec_from_file_location("budget_plot", _PATH)
bp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bp)


def test_points_are_the_recorded_evaluations_in_budget_order():
    pts = bp.points()
    assert [p["steps"] for p in pts] == sorted(p["steps"] for p in pts)
    shipped = json.loads((bp.RESULTS / "candidate_selection.json").read_text())["settings"]["default"]
    assert next(p for p in pts if p["steps"] == 15000)["score"][0] == shipped["score"]["value"]
    for p in pts:
        for key in ("score", "success"):
            value, low, high = p[key]
            assert 0 <= low <= value <= high <= 1
        assert p["cpu_min"] == round(p["steps"] / bp.STEPS_PER_S / 60, 1)


def test_the_plot_and_its_values_are_written(tmp_path):
    out = tmp_path / "budget.png"
    assert bp.main(["--out", str(out)]) == 0
    assert out.stat().st_size > 0
    assert len(json.loads(out.with_suffix(".json").read_text())["test"]) == len(bp.points())


def test_missing_or_truncated_results_are_one_line(tmp_path, capsys):
    assert bp.main(["--results", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("budget_plot: error:") and "\n" not in err
    names = ("ship13_budget_extension.json", "candidate_selection.json", "default_recipe_7500_eval_int8_400000.json")
    for name in names:
        shutil.copy(bp.RESULTS / name, tmp_path / name)
    (tmp_path / "candidate_selection.json").write_text('{"settings": {"default": {"score": ')
    assert bp.main(["--results", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "JSONDecodeError" in err and "\n" not in err
