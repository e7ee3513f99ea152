"""A lab's own 7-joint arm, end to end: its replay buffer -> imle-task init -> the user names the fields and
marks the wrap-around joint -> imle-train -> imle-export -> a manifest that carries the names, the angle and
the period -> imle-run on the emulated device of a robot-only install (no torch, no gym-pusht)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.package import load_package
from runtime.task_spec import TaskSpec
from tests.arm7_fixtures import make_arm7_buffer, name_arm7_task

ROOT = Path(__file__).resolve().parents[1]
JOINTS = [f"joint{i}" for i in range(1, 8)]

# Run a runtime entry point as a robot-only install would: torch, the trainer's data stack and gym-pusht absent.
ROBOT_ONLY = """
import sys, importlib.abc
class _Absent(importlib.abc.MetaPathFinder):
    BLOCK = ("torch", "zarr", "gym_pusht", "pymunk", "trainer")
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCK:
            raise ImportError(f"{name} is not installed (robot-only install)")
sys.meta_path.insert(0, _Absent())
from runtime.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_arm7_init_edit_train_export_run(tmp_path, capsys):
    from trainer.cli import train_main
    from trainer.export.cli import main as export_main
    from trainer.task_cli import main as task_main

    data = tmp_path / "arm7.zarr"
    make_arm7_buffer(data)
    task = tmp_path / "arm7.toml"
    assert task_main(["init", str(data), "--out", str(task)]) == 0
    task.write_text(name_arm7_task(task.read_text(), period_s=0.05))
    assert task_main(["check", str(task), str(data)]) == 0
    spec = TaskSpec.from_toml(task)
    assert spec.state.use == tuple(JOINTS) and spec.state.angle_dims == (6,)

    run = tmp_path / "run"
    assert train_main(["--task", str(task), "--data", str(data), "--steps", "3", "--batch-size", "8", "--preset",
                       "tiny", "--n-samples", "4", "--warmup", "1", "--threads", "1", "--out", str(run),
                       "--no-progress"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["task"] == "arm7" and cfg["angle_dims"] == [6] and cfg["data"]["state_dims"] == list(range(7))
    assert cfg["task_spec"] == spec.to_dict()

    pkg = tmp_path / "arm7-imle"
    assert export_main([str(run), "--out", str(pkg), "--calibration-obs", "8", "--parity-obs", "8",
                        "--no-progress"]) == 0
    os.environ.setdefault("IMLE_ALLOW_UNSIGNED", "1")
    m = load_package(pkg, trust=False).manifest
    assert m.task == "arm7" and m.obs.state_names == JOINTS and m.obs.state_dim == 7
    assert m.action.names == [f"target_joint{i}" for i in range(1, 8)] and m.control.period_s == 0.05
    carried = m.get_task_spec()
    assert carried == spec and carried.state.angles == ("joint7",) and carried.action.joints == tuple(JOINTS)
    assert carried.success is None  # the starter file declares none; nothing is guessed

    out = tmp_path / "out"
    env = {**os.environ, "IMLE_ALLOW_UNSIGNED": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", ROBOT_ONLY, str(pkg), "--robot", "emulator", "--episodes", "1",
                          "--max-steps", "12", "--out", str(out), "--status", "off"],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert res.returncode in (0, 3), res.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] and summary["episodes"][0]["steps"] > 0
    header = (out / "steps.csv").read_text().splitlines()[0]
    assert all(f"pos_{j}" in header for j in JOINTS), header
