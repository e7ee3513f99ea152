"""benchmarks/candidate_selection.py: paired differences and one-line refusals (the rollouts are the benchmark's)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "candidate_selection.py"
spec = importlib.util.spec_from_file_location("candidate_selection", _PATH)
cs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cs)


def test_paired_difference_is_the_mean_of_per_episode_differences():
    a = np.array([1.0, 0.5, 0.9, 0.2])
    b = np.array([0.5, 0.5, 1.0, 0.0])
    mean, low, high = cs.paired_difference(a, b)
    assert mean == pytest.approx(np.mean(a - b))
    assert low <= mean <= high
    same = cs.paired_difference(a, a)
    assert same == (0.0, 0.0, 0.0)  # identical settings: no difference, no spread


@pytest.mark.parametrize("argv, needle", [
    (["PKG", "--settings", "default,bogus"], "--settings"),
    (["PKG", "--settings", ","], "--settings"),
    (["PKG", "--settings", "ta"], "--settings"),
    (["PKG", "--settings", "ta-1,taX"], "--settings"),
    (["PKG", "--episodes", "0"], "--episodes 0"),
    (["PKG", "--workers", "-1"], "--workers -1"),
    (["/nonexistent/pkg"], "not a model package"),
])
def test_mistakes_are_one_line(argv, needle, capsys, tmp_path):
    argv = [str(tmp_path) if a == "PKG" else a for a in argv]
    assert cs.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_table_marks_what_each_setting_means():
    row = {"candidates": 32, "temporal_consistency": True, "plan_ms": 2.0,
           "score": {"value": 0.9, "low": 0.8, "high": 1.0}, "success": {"value": 0.5, "low": 0.4, "high": 0.6}}
    result = {"settings": {"default": row, "one": {**row, "candidates": 1, "vs_default_score": (0.01, -0.1, 0.1),
                                                   "vs_default_success": (0.0, -0.1, 0.1)},
                           "no-redraw": {**row}, "random": {**row, "temporal_consistency": False}}}
    text = cs.table(result)
    assert "| one | 1 | n/a |" in text and "never re-drawn" in text and "| random | 32 | no |" in text
    assert "+0.010 [-0.100, +0.100]" in text


def test_action_horizon_settings_are_parsed_from_their_name():
    assert cs.overrides("ta6") == {"action_horizon": 6} and cs.overrides("one") == {"candidates": 1}
    for bad in ("ta", "tax", "ta-3", "t6"):
        with pytest.raises(KeyError):
            cs.overrides(bad)
