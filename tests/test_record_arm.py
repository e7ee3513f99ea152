"""imle-record records the franka-reach-around task by itself (--start trainer.demos.franka_reach:start): every
episode begins at its seed's start, and benchmarks/arm_task.py compare judges the buffer with the task's rule."""
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zarr")

from runtime.record.cli import main  # noqa: E402
from trainer.data import load_replay_buffer  # noqa: E402
from trainer.demos.franka_reach import start_for_seed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASK = REPO / "trainer" / "tasks" / "franka-reach-around.toml"
sys.path.insert(0, str(REPO / "benchmarks"))
import arm_task  # noqa: E402


def test_the_cli_records_the_arm_task_from_chosen_starts_and_compare_judges_it(tmp_path, capsys):
    out = tmp_path / "arm.zarr"
    assert main(["--task", str(TASK), "--out", str(out), "--robot", "emulator-lockstep", "--source",
                 "scripted:trainer.demos.franka_reach:reach", "--start", "trainer.demos.franka_reach:start",
                 "--episodes", "3", "--seed", "1000", "--review", "auto", "--max-steps", "150"]) == 0
    rb = load_replay_buffer(out)
    begins = np.concatenate([[0], rb.episode_ends[:-1]])
    for i, b in enumerate(begins):
        assert np.max(np.abs(rb.data["state"][b] - start_for_seed(1000 + i))) <= 0.01
    capsys.readouterr()
    report = arm_task.compare([str(out), str(out)])
    one = report["buffers"][0]
    assert one["episodes"] == 3 and one["success"] == 3 and one["entered_avoid_box"] == 0
    assert sum(one["modes"].values()) == 3 and one["modes"]["none"] == 0
    assert report["max_abs_diff_state_mean"] == 0.0
    table = arm_task.table(report)
    assert "| judge: success | 3/3 | 3/3 |" in table


def test_compare_counts_a_demo_that_breaks_the_task_rule(tmp_path):
    """A buffer whose demonstration enters the avoid box is reported, not passed."""
    from runtime.record.buffer import ArraySpec, ReplayBufferWriter
    from trainer.demos.franka_reach import REACH_AROUND
    goal = np.asarray(REACH_AROUND.goal, np.float32)
    start = start_for_seed(1000)
    path = np.linspace(start, goal, 30).astype(np.float32)  # straight through the box
    path[:, 1] = -0.1
    with ReplayBufferWriter(tmp_path / "b.zarr", [ArraySpec("state", (7,)), ArraySpec("action", (7,))]) as w:
        w.append_episode({"state": path, "action": path}, 0)
    stats = arm_task.buffer_stats(str(tmp_path / "b.zarr"))
    assert stats["success"] == 0 and stats["entered_avoid_box"] == 1 and stats["failed_seeds_index"] == [0]
