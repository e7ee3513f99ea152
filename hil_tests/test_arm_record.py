"""imle-record through the Franka bridge against franka-sim (motion limits enforced): before each episode the
arm is driven to the episode's start pose (--start), then the scripted reach-around planner is recorded. Two
short episodes; the buffer holds them from their starts, and franka-sim never aborted a motion. Skipped only
when franka-sim cannot run here."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pylibfranka", reason="pylibfranka not installed (pip install 'imle-policy[franka]')")
pytest.importorskip("franka_sim", reason="franka-sim not installed (pip install 'imle-policy[franka-sim]')")
pytest.importorskip("mujoco", reason="franka-sim needs mujoco")
pytest.importorskip("zarr")

from franka_fixtures import franka_sim  # noqa: E402,F401  (hil_tests/ is on sys.path)

TASK = Path(__file__).resolve().parents[1] / "trainer" / "tasks" / "franka-reach-around.toml"


@pytest.mark.slow
def test_imle_record_moves_the_arm_to_each_start_and_records_through_the_bridge(franka_sim, tmp_path, capsys):
    from runtime.record.buffer import ReplayBufferWriter
    from runtime.record.cli import main
    from trainer.data import load_replay_buffer
    from trainer.demos.franka_reach import start_for_seed

    out = tmp_path / "bridge.zarr"
    code = main(["--task", str(TASK), "--out", str(out), "--robot", f"franka:{franka_sim.host}",
                 "--robot.realtime", "ignore", "--source", "scripted:trainer.demos.franka_reach:reach",
                 "--start", "trainer.demos.franka_reach:start", "--start-speed", "0.4", "--episodes", "2",
                 "--max-steps", "12", "--seed", "1000", "--review", "auto"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert printed.out.count("moved to start in ") == 2
    rb = load_replay_buffer(out)
    assert rb.episode_ends.tolist() == [12, 24]  # short episodes: cut at --max-steps
    with ReplayBufferWriter(out) as w:
        assert w.seeds().tolist() == [1000, 1001]
    s, a = rb.data["state"], rb.data["action"]
    for i, seed in enumerate((1000, 1001)):
        # the recording begins at the episode's start (within the move's tolerance) and the planner moves away from it
        assert np.max(np.abs(s[12 * i] - start_for_seed(seed))) <= 0.01
        assert np.max(np.abs(s[12 * i + 11] - s[12 * i])) > 0.05
        assert np.all(np.isfinite(a[12 * i:12 * (i + 1)]))
    assert franka_sim.aborts() == [], franka_sim.aborts()
