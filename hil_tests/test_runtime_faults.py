"""Runtime-level faults, runtime process <-> emulated Push-T over a pty (real time, 10 Hz).

Link-level faults (corruption, dropped frames, device reset, malformed capabilities) are covered in
test_serial_faults.py. Here: the device vanishing and coming back, the host stalling, a NaN plan.
Every test checks that nothing unsafe reached the device (its own log of applied commands).
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

pytest.importorskip("gym_pusht")

from runtime_fixtures import run_cli, tiny_package  # noqa: E402,F401  (fixtures; hil_tests/ is on sys.path)


@pytest.fixture
def emulator(tmp_path, request):
    from firmware_bridge.emulator import start_emulator

    extra = getattr(request, "param", [])
    emu = start_emulator("realtime", command_log=str(tmp_path / "commands.jsonl"), extra_args=extra)
    emu.command_log_path = tmp_path / "commands.jsonl"
    yield emu
    emu.stop()


def applied_commands(path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def assert_all_safe(cmds: list[dict]) -> None:
    assert cmds, "the device applied no command"
    targets = np.array([c["targets"] for c in cmds])
    assert np.all(np.isfinite(targets)) and np.all(targets >= 0) and np.all(targets <= 512)


def run(run_cli, package, emu, out, *extra):
    res = run_cli([package, "--robot", f"serial:{emu.port}", "--seed", 2, "--out", out, *extra])
    assert res.returncode == 0, res.stderr
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("emulator", [["--vanish-after", "2.0", "--vanish-for", "1.0"]], indirect=True)
def test_device_vanishes_and_comes_back(tiny_package, emulator, run_cli, tmp_path):
    s = run(run_cli, tiny_package, emulator, tmp_path / "out", "--max-steps", 50)
    c, link = s["counters"], s["link"]
    assert c["link_loss_events"] == 1 and c["link_recoveries"] == 1
    assert 5 <= c["link_hold_ticks"] <= 20  # about 1 s at 10 Hz, plus detection and re-handshake
    assert link["vanished_events"] >= 1 and link["reconnects"] >= 1
    assert s["episodes"][0]["steps"] == 50 and not s["episodes"][0]["aborted"]  # resumed, finished the episode
    cmds = applied_commands(emulator.command_log_path)
    assert_all_safe(cmds)
    gaps = np.diff([x["t"] for x in cmds])
    assert gaps.max() >= 0.9                          # nothing reached the device while it was gone
    assert int(np.argmax(gaps)) < len(cmds) - 10      # ... and commands resumed afterwards
    with open(tmp_path / "out" / "steps.csv") as fh:
        rows = list(csv.DictReader(fh))
    held = [r for r in rows if r["source"] == "link-hold"]
    assert len(held) == c["link_hold_ticks"] and all(r["command_target_x"] == "" for r in held)


def test_host_stall_device_holds_and_runtime_recovers(tiny_package, emulator, run_cli, tmp_path):
    s = run(run_cli, tiny_package, emulator, tmp_path / "out", "--max-steps", 30, "--inject-stall", "10:0.5")
    c = s["counters"]
    assert c["skipped_ticks"] >= 4 and c["missed_deadlines"] >= c["skipped_ticks"]
    assert c["link_loss_events"] == 0 and s["episodes"][0]["steps"] == 30
    # The device held on its own 300 ms into the stall and told the runtime (one WATCHDOG Fault while it ran).
    assert s["link"]["fault_codes"].get("WATCHDOG") == 1
    assert emulator.status()["watchdog_trips"] >= 1
    cmds = applied_commands(emulator.command_log_path)
    assert_all_safe(cmds)
    gaps = np.diff([x["t"] for x in cmds])
    stall = int(np.argmax(gaps))
    assert 0.45 <= gaps[stall] <= 0.7
    assert gaps[stall + 1:].min() > 0.05  # no burst of catch-up commands after the stall
    assert len(cmds) - stall - 1 >= 15     # and the loop carried on


def test_nan_plan_is_never_sent(tiny_package, emulator, run_cli, tmp_path):
    s = run(run_cli, tiny_package, emulator, tmp_path / "out", "--max-steps", 30, "--inject-nan-plan", "1")
    c = s["counters"]
    assert c["nan_blocked"] >= 1 and s["episodes"][0]["steps"] == 30
    cmds = applied_commands(emulator.command_log_path)
    assert_all_safe(cmds)
    assert emulator.status()["commands_rejected"] == 0  # the device never saw a non-finite target
    with open(tmp_path / "out" / "steps.csv") as fh:
        rows = list(csv.DictReader(fh))
    nan_rows = [i for i, r in enumerate(rows) if r["action_target_x"] and math.isnan(float(r["action_target_x"]))]
    assert len(nan_rows) == c["nan_blocked"]
    for i in nan_rows:  # held: the same command as the tick before
        assert rows[i]["command_target_x"] == rows[i - 1]["command_target_x"]


def test_ctrl_c_engages_estop_and_exits_with_the_summary(tiny_package, emulator, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from firmware_bridge.protocol import StatusFlags
    from firmware_bridge.serial_link import SerialLink

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo, PYGAME_HIDE_SUPPORT_PROMPT="1")
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", str(tiny_package), "--robot",
                             f"serial:{emulator.port}", "--max-steps", "300", "--out", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=repo, env=env)
    deadline = time.monotonic() + 60
    log = emulator.command_log_path
    while time.monotonic() < deadline and (not log.exists() or len(applied_commands(log)) < 10):
        time.sleep(0.1)  # wait until the loop is running
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in out and "e-stop engaged" in out
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["interrupted"] and s["counters"]["estops"] == 1 and s["episodes"][0]["aborted"] == "estop"
    assert_all_safe(applied_commands(log))
    # The device is holding in e-stop: a fresh session sees the flag.
    with SerialLink(emulator.port) as link:
        st = link.wait_state(timeout=2.0)
        assert st.has(StatusFlags.ESTOP)
