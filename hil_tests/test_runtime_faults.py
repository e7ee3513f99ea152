"""Runtime-level faults, runtime process <-> emulated Push-T over a pty (real time, 10 Hz).

Link-level faults (corruption, dropped frames, device reset, malformed capabilities) are covered in
test_serial_faults.py. Here: the device vanishing (and coming back, or not), the host stalling, a NaN
plan, commands the device refuses, a device e-stopped from before, packages that drive into the limits.
Every test checks that nothing unsafe reached the device (its own log of applied commands) and that
the exit code says how the run went (0 clean, 3 faults seen, 4 stopped, 5 e-stop unconfirmed, 130).
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


MAX_STEP = 200.0  # the emulated Push-T device's max_step (px per command), so also the host's step limit


def run(run_cli, package, emu, out, *extra, code=0):
    res = run_cli([package, "--robot", f"serial:{emu.port}", "--seed", 2, "--out", out, *extra])
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["exit_code"] == code
    return s


def largest_step(cmds: list[dict]) -> float:
    targets = np.array([c["targets"] for c in cmds])
    return float(np.abs(np.diff(targets, axis=0)).max()) if len(targets) > 1 else 0.0


def device_estopped(port) -> bool:
    from firmware_bridge.protocol import StatusFlags
    from firmware_bridge.serial_link import SerialLink

    with SerialLink(port) as link:
        return link.wait_state(timeout=2.0).has(StatusFlags.ESTOP)


@pytest.mark.parametrize("emulator", [["--vanish-after", "2.0", "--vanish-for", "1.0"]], indirect=True)
def test_device_vanishes_and_comes_back(tiny_package, emulator, run_cli, tmp_path):
    s = run(run_cli, tiny_package, emulator, tmp_path / "out", "--max-steps", 50, code=3)  # completed, link dropped
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


@pytest.mark.parametrize("emulator", [["--drop-fraction", "0.3", "--fault-seed", "3"]], indirect=True)
def test_a_degraded_link_completes_with_exit_3_and_says_so(tiny_package, emulator, run_cli, tmp_path):
    # 30% of the device's frames lost: every step still runs, but the operator must not read "clean"
    s = run(run_cli, tiny_package, emulator, tmp_path / "out", "--max-steps", 30, code=3)
    errs = s["link_errors"]
    assert errs["degraded"] and 0.15 < errs["fraction"] < 0.45 and errs["lost"] == s["link"]["seq_gaps"]
    assert s["episodes"][0]["steps"] == 30 and s["counters"]["device_faults"] == 0
    assert_all_safe(applied_commands(emulator.command_log_path))
    # the same run with a budget above the loss is clean: the budget is the operator's
    s = run(run_cli, tiny_package, emulator, tmp_path / "out2", "--max-steps", 30, "--link-error-budget", "0.6")
    assert not s["link_errors"]["degraded"] and s["link_errors"]["budget"] == 0.6


def test_host_stall_device_holds_and_runtime_recovers(tiny_package, emulator, run_cli, tmp_path):
    # the device's watchdog tripped: the run completes, but not as a clean one
    s = run(run_cli, tiny_package, emulator, tmp_path / "out", "--max-steps", 30, "--inject-stall", "10:0.5", code=3)
    c = s["counters"]
    assert c["skipped_ticks"] >= 4 and c["missed_deadlines"] >= c["skipped_ticks"]
    assert c["link_loss_events"] == 0 and s["episodes"][0]["steps"] == 30
    # The device held on its own 300 ms into the stall and told the runtime (one WATCHDOG Fault while it ran).
    assert s["link"]["fault_codes"].get("WATCHDOG") == 1
    assert s["device_reports"]["faults"] == {"WATCHDOG": 1} and c["device_faults"] == 1 and not s["stop_reason"]
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
    assert "Traceback" not in err and "interrupted" in out and "e-stop engaged (confirmed by the device)" in out
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["interrupted"] and s["counters"]["estops"] == 1 and s["episodes"][0]["aborted"] == "estop"
    assert s["estop"]["confirmed"] and s["exit_code"] == 130
    assert_all_safe(applied_commands(log))
    # The device is holding in e-stop: a fresh session sees the flag.
    with SerialLink(emulator.port) as link:
        st = link.wait_state(timeout=2.0)
        assert st.has(StatusFlags.ESTOP)


# ----------------------------------------------------------------------------- what the device says
def test_refused_commands_stop_the_run_and_reach_the_operator(tiny_package, emulator, run_cli, tmp_path):
    # Step 10 is sent 300 px past what the host allowed (as a corrupted command would be): the device's
    # plausibility check refuses it (IMPLAUSIBLE), the loop stops (default --on-device-fault stop), e-stops.
    out = tmp_path / "out"
    res = run_cli([tiny_package, "--robot", f"serial:{emulator.port}", "--seed", 2, "--out", out,
                   "--max-steps", 40, "--inject-jump", "10:300"])
    assert res.returncode == 4, res.stderr
    assert "Traceback" not in res.stderr and "imle-run: stopped: device fault IMPLAUSIBLE" in res.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["device_reports"]["faults"].get("IMPLAUSIBLE") == 1 and s["counters"]["refused_commands"] == 1
    assert s["stop_reason"].startswith("device fault IMPLAUSIBLE") and s["estop"]["confirmed"]
    assert "refused commands 1" in res.stdout and "STOPPED: device fault IMPLAUSIBLE" in res.stdout
    assert s["episodes"][0]["steps"] < 15  # stopped within a tick or two of the refusal
    assert emulator.status()["commands_rejected"] >= 1
    cmds = applied_commands(emulator.command_log_path)
    assert_all_safe(cmds)
    assert largest_step(cmds) <= MAX_STEP  # the jump never reached the actuator
    assert device_estopped(emulator.port)


def test_refused_commands_with_hold_policy_complete_with_exit_3(tiny_package, emulator, run_cli, tmp_path):
    s = run(run_cli, tiny_package, emulator, tmp_path / "out", "--max-steps", 40, "--inject-jump", "10:300:5",
            "--on-device-fault", "hold", code=3)
    c = s["counters"]
    assert c["refused_commands"] >= 3 and c["fault_holds"] >= 3 and s["episodes"][0]["steps"] == 40
    assert s["device_reports"]["faults"]["IMPLAUSIBLE"] == c["refused_commands"]
    assert emulator.status()["commands_rejected"] == c["refused_commands"]  # every refusal reached the operator
    cmds = applied_commands(emulator.command_log_path)
    assert_all_safe(cmds)
    assert largest_step(cmds) <= MAX_STEP
    with open(tmp_path / "out" / "steps.csv") as fh:
        assert sum(r["source"] == "fault-hold" for r in csv.DictReader(fh)) == c["fault_holds"]


def test_device_estopped_from_before_is_not_driven_until_released(tiny_package, emulator, run_cli, tmp_path):
    from firmware_bridge.serial_link import SerialLink

    with SerialLink(emulator.port) as link:  # someone pressed the e-stop before this run
        assert link.estop(True)
    res = run_cli([tiny_package, "--robot", f"serial:{emulator.port}", "--max-steps", 10, "--out", tmp_path / "a"])
    assert res.returncode == 4, res.stderr
    assert "the device's e-stop is engaged" in res.stderr and "--release-estop" in res.stderr
    assert not emulator.command_log_path.exists() or not applied_commands(emulator.command_log_path)
    assert emulator.status()["commands_applied"] == 0
    s = run(run_cli, tiny_package, emulator, tmp_path / "b", "--max-steps", 10, "--release-estop")
    assert s["settings"]["estop_released_at_start"] and s["episodes"][0]["steps"] == 10
    assert_all_safe(applied_commands(emulator.command_log_path))


@pytest.mark.parametrize("emulator", [["--vanish-after", "3.0", "--vanish-for", "600"]], indirect=True)
def test_device_unplugged_for_good_still_writes_the_outputs(tiny_package, emulator, run_cli, tmp_path):
    cfg = tmp_path / "robot.toml"
    cfg.write_text("[loop]\nlink_give_up_s = 1.0\n")
    out = tmp_path / "out"
    res = run_cli([tiny_package, "--robot", f"serial:{emulator.port}", "--episodes", 3, "--max-steps", 300,
                   "--out", out, "--robot-config", cfg])
    # the link is gone: the run stops, the e-stop cannot be confirmed, and the operator is told so
    assert res.returncode == 5, res.stderr
    assert "Traceback" not in res.stderr and "E-STOP NOT CONFIRMED" in res.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["stop_reason"].startswith("link lost for more than 1 s") and not s["estop"]["confirmed"]
    assert s["estop"]["attempts"] >= 1 and s["counters"]["link_loss_events"] == 1
    assert (out / "steps.csv").stat().st_size > 0 and (out / "timing.png").exists()
    assert "E-STOP NOT CONFIRMED" in res.stdout and "e-stop engaged" not in res.stdout


# ----------------------------------------------------------------------------- packages that drive into the limits
@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    from hostile_packages import build_hostile_package

    built = {}

    def get(kind):
        if kind not in built:
            built[kind] = build_hostile_package(tmp_path_factory.mktemp(kind) / kind, kind)
        return built[kind]
    return get


@pytest.mark.parametrize("kind", ["tampered", "corner"])
def test_package_driving_into_the_limits_is_held_to_the_robots_box(kind, hostile, run_cli, tmp_path):
    from firmware_bridge.emulator import start_emulator

    emu = start_emulator("lockstep", command_log=str(tmp_path / "commands.jsonl"))
    try:
        out = tmp_path / "out"
        res = run_cli([hostile(kind), "--robot", f"serial:{emu.port}", "--max-steps", 40, "--seed", 1,
                       "--out", out])
        status = emu.status()
    finally:
        emu.stop()
    assert res.returncode == 0, res.stderr  # the host kept every command inside what the device accepts
    s = json.loads((out / "summary.json").read_text())
    c = s["counters"]
    assert c["clipped"] + c["rate_limited"] >= 10 and c["device_faults"] == 0
    if kind == "tampered":  # its +-1e9 action range was noted and did not widen the box
        assert "package action range of joint agent_x [-1e+09, 1e+09] is wider" in res.stderr
        assert len(s["limits"]["notes"]) == 2
    j = s["limits"]["joints"]["agent_x"]
    assert (j["lower"], j["upper"], j["max_step"]) == (0.0, 512.0, MAX_STEP)
    cmds = applied_commands(tmp_path / "commands.jsonl")
    assert len(cmds) == 40 and status["commands_rejected"] == 0 and status["limit_clamps"] == 0
    assert_all_safe(cmds)
    assert largest_step(cmds) <= MAX_STEP


def test_sigterm_is_acted_on_whatever_the_period(tiny_package, emulator, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo, PYGAME_HIDE_SUPPORT_PROMPT="1")
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", str(tiny_package), "--robot",
                             f"serial:{emulator.port}", "--period", "10", "--out", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=repo, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and emulator.status()["plant_resets"] < 1:
        time.sleep(0.1)  # the loop reset the plant: it is now waiting 10 s for its first tick
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 8.0  # not the rest of the 10 s period (plus the e-stop's own round trip)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["interrupted"] and s["estop"]["confirmed"] and "Traceback" not in err
    assert emulator.status()["commands_applied"] == 0
    assert device_estopped(emulator.port)
