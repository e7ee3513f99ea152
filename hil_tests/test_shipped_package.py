"""Regression of the shipped package: `imle-run` drives the emulated Push-T microcontroller over a
pty in lock-step mode, and its score and first actions must match what was recorded at export
(manifest `evaluation`, written by `python -m trainer.evaluate.record`). A change that breaks
deployment anywhere (package loading, the ONNX graph, selection, loop, protocol, emulator) fails here."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gym_pusht")

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "exported_models" / "pusht-state-imle"


@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory):
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    ev = manifest["evaluation"]
    out = tmp_path_factory.mktemp("shipped")
    cmd = [sys.executable, "-m", "runtime.cli", str(SHIPPED), "--robot", "emulator-lockstep",
           "--episodes", str(ev["reference_episodes"]), "--seed", str(ev["seed"]), "--precision", ev["precision"],
           "--out", str(out), "--status", "off"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    return ev, json.loads((out / "summary.json").read_text()), out / "steps.csv"


def test_manifest_records_provenance_and_score():
    m = json.loads((SHIPPED / "manifest.json").read_text())
    assert m["method"] == "rs_imle" and m["task"] == "pusht-state"
    assert {f["precision"] for f in m["files"]} == {"fp32", "int8"}
    assert m["training"]["command"].startswith("imle-train --task pusht-state")
    assert m["training"]["steps"] > 0 and len(m["training"]["episodes"]) == 206
    assert m["training"]["code_version"]
    ev = m["evaluation"]
    assert ev["episodes"] >= 50 and 0.0 <= ev["score"] <= 1.0
    assert len(ev["reference_first_actions"]) == 16


def test_lockstep_first_actions_match_the_recorded_ones(shipped_run):
    ev, summary, steps_csv = shipped_run
    with open(steps_csv) as fh:
        rows = [r for r in csv.DictReader(fh) if r["episode"] == "0"][: len(ev["reference_first_actions"])]
    sent = np.array([[float(r["command_target_x"]), float(r["command_target_y"])] for r in rows])
    # same machine type: equal to float32 rounding; a broken path is off by pixels
    np.testing.assert_allclose(sent, np.array(ev["reference_first_actions"]), atol=1e-3)


def test_lockstep_scores_match_the_recorded_ones(shipped_run):
    ev, summary, _ = shipped_run
    rewards = [min(1.0, e["max_coverage"] / 0.95) for e in summary["episodes"]]
    assert len(rewards) == ev["reference_episodes"]
    np.testing.assert_allclose(rewards, ev["reference_max_rewards"], atol=0.05)
    c = summary["counters"]
    assert c["nan_blocked"] == 0 and c["held_ticks"] == 0
