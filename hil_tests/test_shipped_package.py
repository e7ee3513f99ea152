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


def _reference(manifest: dict, precision: str) -> dict:
    """The lock-step reference recorded for this precision on this machine's class of CPU (int8 kernels
    differ with x86 VNNI / ARM dot product); skips with the reason when none was recorded here."""
    from runtime.golden import int8_kernel_flags

    kernels = int8_kernel_flags() if precision == "int8" else []
    for ref in manifest["evaluation"].get("references", []):
        if ref["precision"] == precision and ref["int8_kernels"] == kernels:
            return ref
    pytest.skip(f"no {precision} lock-step reference recorded for CPUs with int8 kernels {kernels or 'none'}: "
                f"record one with python -m trainer.evaluate.record {SHIPPED} --references-only")


@pytest.fixture(scope="module", params=["fp32", "int8"])
def shipped_run(request, tmp_path_factory):
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    ev = manifest["evaluation"]
    ref = _reference(manifest, request.param)
    out = tmp_path_factory.mktemp(f"shipped-{request.param}")
    cmd = [sys.executable, "-m", "runtime.cli", str(SHIPPED), "--robot", "emulator-lockstep",
           "--episodes", str(len(ref["max_rewards"])), "--seed", str(ev["seed"]), "--precision", request.param,
           "--out", str(out), "--status", "off"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    return ref, json.loads((out / "summary.json").read_text()), out / "steps.csv"


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
    refs = ev["references"]
    assert {r["precision"] for r in refs} == {"fp32", "int8"}
    assert all(len(r["first_actions"]) == 16 and len(r["max_rewards"]) == ev["reference_episodes"] for r in refs)


def test_lockstep_first_actions_match_the_recorded_ones(shipped_run):
    ref, summary, steps_csv = shipped_run
    with open(steps_csv) as fh:
        rows = [r for r in csv.DictReader(fh) if r["episode"] == "0"][: len(ref["first_actions"])]
    sent = np.array([[float(r["command_target_x"]), float(r["command_target_y"])] for r in rows])
    # same class of machine: equal to float32 rounding; a broken path is off by pixels
    np.testing.assert_allclose(sent, np.array(ref["first_actions"]), atol=1e-3)


def test_lockstep_scores_match_the_recorded_ones(shipped_run):
    ref, summary, _ = shipped_run
    rewards = [min(1.0, e["max_progress"] / 0.95) for e in summary["episodes"]]
    assert len(rewards) == len(ref["max_rewards"])
    np.testing.assert_allclose(rewards, ref["max_rewards"], atol=0.05)
    c = summary["counters"]
    assert c["nan_blocked"] == 0 and c["held_ticks"] == 0
