"""trainer.evaluate.record: the shipped package's evaluation and lock-step reference in its manifest."""
import json

import pytest

pytest.importorskip("gym_pusht")

from runtime.package import load_package  # noqa: E402
from trainer.evaluate.record import record  # noqa: E402


def test_record_writes_an_evaluation_the_runtime_accepts(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hil_tests"))
    from runtime_fixtures import build_tiny_package

    pkg = build_tiny_package(tmp_path / "pkg")
    hashes = {f["name"]: f["sha256"] for f in json.loads((pkg / "manifest.json").read_text())["files"]}
    summary = {"precision": "fp32", "candidates": 4, "options": {"seed": 5},
               "summary": {"episodes": 2, "score": {"value": 0.5, "low": 0.4, "high": 0.6},
                           "success": {"value": 0.0, "low": 0.0, "high": 0.8}}}
    ev = record(pkg, summary, reference_episodes=1)
    m = load_package(pkg).manifest
    assert m.evaluation == ev and ev.score == 0.5 and ev.seed == 5
    assert len(ev.reference_max_rewards) == 1 and 0.0 <= ev.reference_max_rewards[0] <= 1.0
    assert len(ev.reference_first_actions) == 16 and len(ev.reference_first_actions[0]) == 2
    # the graphs are untouched: same hashes
    assert {f.name: f.sha256 for f in m.files} == hashes
