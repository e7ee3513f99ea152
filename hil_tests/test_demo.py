"""`make demo` (python -m runtime.demo): the shipped package in real time against the emulated
microcontroller, shortened here to one 20-step episode; checks what a newcomer gets."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gym_pusht")

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_and_writes_its_outputs(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "runtime.demo", "--episodes", "1", "--max-steps", "20",
                          "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "imle-policy demo: pusht-state-imle" in res.stdout
    assert "episode 1/1 step" in res.stderr  # the live status line
    for name in ("summary.json", "steps.csv", "timing.png", "rollout_ep0.gif"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "realtime" and summary["episodes"][0]["steps"] == 20
    assert summary["counters"]["nan_blocked"] == 0


def test_demo_without_the_package_is_a_one_line_error(tmp_path):
    res = subprocess.run([sys.executable, "-m", "runtime.demo", "--package", str(tmp_path / "none"),
                          "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"imle-run: error: package not found: {tmp_path / 'none'}"]
