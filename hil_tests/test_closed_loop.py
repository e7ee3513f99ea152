"""The runtime process (`python -m runtime.cli`) drives the emulated Push-T robot over a real pty."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

pytest.importorskip("gym_pusht")

from runtime_fixtures import run_cli, tiny_package  # noqa: E402,F401  (fixtures; hil_tests/ is on sys.path)

SEED, EPISODES, STEPS = 3, 2, 40


def in_process_rollout(package, seed: int, episodes: int, max_steps: int) -> list[list[np.ndarray]]:
    """trainer.evaluate's in-process rollout through runtime.Policy: episode i uses environment seed
    seed + i and policy seed seed + i; returns the actions each episode executed."""
    from runtime.policy import Policy
    from trainer.evaluate.env import make_env
    from trainer.evaluate.rollout import ActionRecorder, run_episode

    env = make_env(None, max_steps)
    out = []
    try:
        for ep in range(episodes):
            rec = ActionRecorder(Policy(package, precision="fp32", seed=seed + ep))
            result, _ = run_episode(rec, env, seed + ep, ep, max_steps)
            out.append(rec.actions[:result.steps])
    finally:
        env.close()
    return out


def read_commands(path) -> dict[int, list[np.ndarray]]:
    by_ep: dict[int, list[np.ndarray]] = {}
    with open(path) as fh:
        for row in csv.DictReader(fh):
            cmd = np.array([float(row["command_target_x"]), float(row["command_target_y"])], np.float32)
            by_ep.setdefault(int(row["episode"]), []).append(cmd)
    return by_ep


def test_lockstep_actions_equal_in_process_evaluation(tiny_package, tmp_path, run_cli):
    out = tmp_path / "run"
    res = run_cli([tiny_package, "--robot", "emulator-lockstep", "--episodes", EPISODES, "--seed", SEED,
                   "--max-steps", STEPS, "--precision", "fp32", "--out", out])
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "lockstep"
    assert summary["temporal_consistency"] and summary["tc_reset_after"] == 5  # the package's, as in-process
    c = summary["counters"]
    assert c["clipped"] == 0 and c["rate_limited"] == 0 and c["nan_blocked"] == 0 and c["held_ticks"] == 0
    remote = read_commands(out / "steps.csv")
    local = in_process_rollout(tiny_package, SEED, EPISODES, STEPS)
    for ep in range(EPISODES):
        assert len(remote[ep]) == len(local[ep]) == summary["episodes"][ep]["steps"]
        for step, (a, b) in enumerate(zip(remote[ep], local[ep])):
            assert a.tobytes() == b.tobytes(), f"episode {ep} step {step}: runtime {a} vs in-process {b}"


def test_realtime_closed_loop_over_pty(tiny_package, tmp_path, run_cli):
    out = tmp_path / "rt"
    res = run_cli([tiny_package, "--robot", "emulator", "--max-steps", 30, "--seed", 1, "--out", out,
                   "--save-media"])
    assert res.returncode == 0, res.stderr
    assert "period jitter" in res.stdout and "Traceback" not in res.stderr
    s = json.loads((out / "summary.json").read_text())
    c = s["counters"]
    assert s["mode"] == "realtime" and s["episodes"][0]["steps"] == 30
    assert c["plans"] >= 3 and c["plan_errors"] == 0 and c["link_loss_events"] == 0
    assert c["missed_deadlines"] <= 1  # 10 Hz on a loaded 2-core machine: a miss would need a > 20 ms stall
    # a loop that slips a whole period is broken; below that, jitter is the machine's load (seen: 54 ms with four
    # jobs on two cores), measured by benchmarks/control_loop.py, not asserted here
    assert s["jitter_ms"]["p99"] < 100.0
    assert sum(s["link"]["corrupt"].values()) == 0
    assert c["held_ticks"] <= 3  # only until the first plan arrives
    for name in ("steps.csv", "timing.png", "rollout_ep0.gif"):
        assert (out / name).stat().st_size > 0


def test_user_mistakes_are_one_line_errors(tiny_package, tmp_path, run_cli):
    cases = [
        ([tmp_path / "nope", "--robot", "emulator"], "package not found"),
        ([tiny_package, "--robot", "usb0"], "bad --robot spec"),
        ([tiny_package, "--robot", "serial:/dev/does-not-exist"], "does not exist"),
    ]
    # A port with nothing behind it: the handshake fails.
    master, slave = os.openpty()
    try:
        cases.append(([tiny_package, "--robot", f"serial:{os.ttyname(slave)}"], "Capabilities"))
        for args, text in cases:
            res = run_cli(args, timeout=60)
            assert res.returncode == 2, (args, res.stderr)
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and text in lines[0] and lines[0].startswith("imle-run: error:"), res.stderr
    finally:
        os.close(master)
        os.close(slave)
