"""Hardware-in-the-loop over a real pseudo-terminal: SerialLink <-> a device process.

The protocol and safety tests run against every device implementation (hil_tests/device_kinds.py):
the Python emulator, the C reference firmware's host build, the same firmware on an emulated ATmega2560
(simavr), and a real board given with --device / IMLE_HIL_DEVICE; a device that lacks what a test
needs (noise injection, a simulated plant, Push-T) is skipped with the reason. Every test starts its
own device and injects one kind of fault. Timeouts are generous and the assertions are on counts and
orderings, not tight timings, so a busy 2-core machine does not make them flaky.
"""
from __future__ import annotations

import json
import time
from typing import Callable, Optional

import numpy as np
import pytest

pytest.importorskip("serial")

from device_kinds import (COMMAND_LOG, FAULTS, LOSSLESS_LOG, NOISE, PLANT, PUSHT, STATUS, DeviceKind,  # noqa: E402
                          kinds)
from firmware_bridge.protocol import Fault, FaultCode, State, StatusFlags  # noqa: E402
from firmware_bridge.robot import HandshakeError  # noqa: E402
from firmware_bridge.serial_link import SerialLink  # noqa: E402

HOME = np.array([256.0, 256.0], np.float32)


def _starter(kind: DeviceKind):
    """start(**opts) -> device process; every device and link is stopped after the test."""
    if kind.unavailable:
        pytest.skip(f"{kind.name} device unavailable: {kind.unavailable}")
    started: list = []
    links: list[SerialLink] = []

    def start(**opts):
        emu = kind.start(**opts)
        started.append(emu)
        return emu

    start.links = links  # type: ignore[attr-defined]
    start.kind = kind  # type: ignore[attr-defined]
    return start, links, started


def _cleanup(links: list, started: list) -> None:
    for link in links:
        link.close()
    for emu in started:
        emu.stop()


KINDS = kinds()


@pytest.fixture(params=KINDS, ids=[k.name for k in KINDS])
def devices(request):
    """The protocol/safety tests: every device implementation."""
    start, links, started = _starter(request.param)
    yield start
    _cleanup(links, started)


@pytest.fixture
def emulators():
    """Tests of the Python emulator's own options (lock-step Push-T, malformed Capabilities)."""
    start, links, started = _starter(KINDS[0])
    yield start
    _cleanup(links, started)


def connect(emulators, emu, **opts) -> SerialLink:
    opts.setdefault("state_timeout_s", 1.0)
    opts.setdefault("handshake_timeout_s", 1.0)
    link = SerialLink(emu.port, **opts)
    emulators.links.append(link)
    link.connect()
    return link


def drive(link: SerialLink, seconds: float, target=HOME, hz: float = 20.0,
          until: Optional[Callable[[], bool]] = None) -> bool:
    """Send `target` at `hz` for `seconds` (or until `until()`); returns whether `until` became true."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        link.send_command(np.asarray(target, np.float32))
        if until is not None and until():
            return True
        time.sleep(1.0 / hz)
    return until is None


def test_handshake_stream_and_estop(devices) -> None:
    kind = devices.kind
    kind.need(PLANT)                             # drives the joints to fixed targets
    emu = devices(state_hz=50, watchdog_ms=500)
    link = connect(devices, emu)
    caps = link.capabilities
    assert caps is not None and caps.firmware_version.startswith(kind.firmware_prefix)
    assert caps.joint_names == kind.joint_names and caps.joint_count == 2
    assert caps.extra_names == kind.extra_names
    assert caps.lower.tolist() == [0.0, 0.0] and caps.upper.tolist() == [512.0, 512.0]
    assert caps.watchdog_ms == 500 and caps.state_period_us == 20_000 and not caps.lockstep
    assert caps.max_step.tolist() == [200.0, 200.0] and caps.max_velocity.tolist() == [kind.max_velocity] * 2
    drive(link, 1.0, target=[300.0, 300.0])
    stats = link.stats
    assert 10 <= stats.states <= 80            # ~50 in one second at 50 Hz (fewer on a starved machine)
    assert stats.corrupt_total == 0 and stats.seq_gaps == 0 and stats.handshakes == 1
    st = link.latest_state()
    assert link.healthy and st is not None and stats.last_state_age_s < 0.5
    assert st.extras.shape == (len(kind.extra_names),)
    if PUSHT in kind.features:
        assert 0.0 <= st.extras[3] <= 1.0

    assert link.estop(True)                    # confirmed by the device
    link.take_faults()
    time.sleep(0.2)
    held = link.wait_state(timeout=2.0)
    assert held.has(StatusFlags.ESTOP)
    drive(link, 0.4, target=[150.0, 150.0])    # refused while engaged
    assert FaultCode.ESTOP in [f.code for f in link.take_faults()]
    assert link.stats.refused.get("ESTOP", 0) >= 1 and link.stats.state_flags.get("ESTOP", 0) >= 1
    assert np.array_equal(link.wait_state(timeout=2.0).positions, held.positions)
    assert link.estop(False)
    drive(link, 0.4, target=[150.0, 150.0])
    moved = link.wait_state(timeout=2.0)
    assert not moved.has(StatusFlags.ESTOP) and moved.positions[0] < held.positions[0] - 5
    link.close()
    assert emu.stop() == 0 and "stopped;" in emu.log()   # SIGTERM ends it cleanly


def test_lockstep_matches_in_process_evaluation(emulators) -> None:
    from firmware_bridge.emulator.plant import make_pusht_env, reset_pusht
    emu = emulators(mode="lockstep", state_hz=5)
    link = connect(emulators, emu)
    assert link.capabilities.lockstep and link.capabilities.watchdog_ms == 0
    env = make_pusht_env()
    rng = np.random.default_rng(0)
    for seed, init in [(3, None), (4, np.float32([200, 150, 300, 320, 1.25]))]:
        st = link.reset_plant(seed, init)
        obs = reset_pusht(env, seed, init)
        assert np.array_equal(np.concatenate([st.positions, st.extras[:3]]), obs.astype(np.float32))
        action = st.positions.astype(np.float64)
        for _ in range(30):  # a random walk within the device's max_step (200 px)
            action = np.clip(action + rng.uniform(-80, 80, 2), 60, 450).astype(np.float32)
            st = link.step(action, timeout=5.0)
            obs, _, _, _, info = env.step(action)
            assert np.array_equal(np.concatenate([st.positions, st.extras[:3]]), obs.astype(np.float32))
            assert st.extras[3] == np.float32(info["coverage"])
    assert st.timestamp_us == 30 * 100_000     # simulated time: one 100 ms control step per command


def test_corrupted_bytes_both_ways_counted_and_never_acted_on(devices, tmp_path) -> None:
    devices.kind.need(NOISE, STATUS, COMMAND_LOG)
    log_path = tmp_path / "commands.jsonl"
    emu = devices(state_hz=100, watchdog_ms=0, command_log=str(log_path), fault_seed=3)
    link = connect(devices, emu)
    emu.set_corruption(1000, 1000)             # 1 in 1000 bytes, each direction, from now on
    sent: dict[int, np.ndarray] = {}
    i = 0
    while i < 6000:                             # ~800 commands; more if a busy machine slowed the device
        # triangle waves: every step is small (<= 7 px), so no command is refused as implausible
        target = np.array([50 + abs(i % 800 - 400), 60 + abs((7 * i) % 760 - 380) + 0.25], np.float32)
        seq = link.send_command(target)
        assert seq is not None
        sent[seq] = target
        time.sleep(0.0025)
        i += 1
        if i % 400 == 0 and i >= 800:
            dev = emu.status()
            if dev["tx_corrupted"] >= 3 and dev["rx_bad_cobs"] + dev["rx_bad_crc"] + dev["rx_bad_other"] >= 3:
                break
    emu.set_corruption(0, 0)
    for i in range(10):                        # clean commands reveal any trailing losses
        seq = link.send_command(HOME)
        sent[seq] = HOME.copy()
        time.sleep(0.01)
    time.sleep(0.5)
    dev = emu.status()
    stats = link.stats
    # On the MCU the log leaves by its second UART after the counter moved: on a loaded machine the
    # simulation lags the wall clock, so wait (bounded) for the log to catch up with the counter.
    deadline = time.monotonic() + 10.0
    while len(log_path.read_text().splitlines()) < dev["commands_applied"] and time.monotonic() < deadline:
        time.sleep(0.1)
    applied = [json.loads(line) for line in log_path.read_text().splitlines()]

    # Device -> host: corrupt frames dropped and counted; each one is a sequence gap.
    assert dev["tx_corrupted"] >= 1
    assert 1 <= stats.corrupt_total <= 2 * dev["tx_corrupted"]
    assert dev["tx_corrupted"] <= stats.seq_gaps <= 2 * dev["tx_corrupted"]
    assert stats.corrupt["internal"] == 0
    # Host -> device: no corrupted command acted on, none acted on twice, every loss accounted for.
    seqs = [a["seq"] for a in applied]
    assert len(seqs) == len(set(seqs)) == dev["commands_applied"] and dev["commands_duplicate"] == 0
    for a in applied:
        assert np.array_equal(np.float32(a["targets"]), sent[a["seq"]]), a
    lost = len(sent) - len(applied)
    assert 1 <= lost and lost == dev["rx_seq_gaps"]
    assert dev["rx_bad_cobs"] + dev["rx_bad_crc"] + dev["rx_bad_other"] >= 1
    # The link kept working throughout.
    assert link.healthy and stats.silent_events == 0 and stats.reconnects == 0


def test_dropped_frames_are_counted_as_sequence_gaps(devices) -> None:
    devices.kind.need(NOISE, STATUS)
    emu = devices(state_hz=100, watchdog_ms=0)
    link = connect(devices, emu)
    emu.set_drop(0.2)
    deadline = time.monotonic() + 15.0          # until enough drops, however slow the machine
    while time.monotonic() < deadline and emu.status()["tx_dropped"] < 15:
        drive(link, 0.5, hz=20)
    emu.set_drop(0.0)
    time.sleep(0.3)
    dev = emu.status()
    time.sleep(0.2)
    stats = link.stats
    assert dev["tx_dropped"] >= 15
    assert stats.seq_gaps == dev["tx_dropped"] + dev["tx_overflow"]
    assert stats.corrupt_total == 0 and link.healthy


def test_device_vanishes_and_link_reconnects(devices) -> None:
    devices.kind.need(FAULTS, STATUS)
    emu = devices(state_hz=50, watchdog_ms=300)
    link = connect(devices, emu, reconnect_interval_s=0.1)
    drive(link, 0.3)
    emu.vanish(0.7)
    t_gone = time.monotonic()
    unsent = 0
    deadline = t_gone + 15.0
    while time.monotonic() < deadline and not (link.stats.reconnects >= 1 and link.healthy):
        unsent += link.send_command(HOME) is None
        time.sleep(0.05)
    outage = time.monotonic() - t_gone
    stats = link.stats
    assert stats.vanished_events == 1 and stats.port_reopens >= 1
    assert stats.reconnects == 1 and stats.handshakes == 2
    assert unsent >= 1 and stats.tx_errors >= 1   # commands during the outage were refused, not queued
    assert 0.5 <= outage < 15.0
    before = emu.status()["commands_applied"]
    drive(link, 0.5)
    assert emu.status()["commands_applied"] > before
    assert link.healthy


def test_device_reset_triggers_a_new_handshake(devices) -> None:
    devices.kind.need(FAULTS, STATUS)
    emu = devices(state_hz=50, watchdog_ms=300)
    link = connect(devices, emu, reconnect_interval_s=0.1)
    drive(link, 0.3)
    emu.device_reset()
    assert drive(link, 10.0, until=lambda: link.stats.reconnects >= 1 and link.healthy)
    stats = link.stats
    assert stats.device_resets == 1 and stats.handshakes == 2 and stats.vanished_events == 0
    dev = emu.status()
    assert dev["boots"] == 2
    before = dev["commands_applied"]
    drive(link, 0.5)
    assert emu.status()["commands_applied"] > before


def test_silent_device_detected_and_recovered(devices) -> None:
    devices.kind.need(FAULTS)
    emu = devices(state_hz=50, watchdog_ms=0)
    link = connect(devices, emu, state_timeout_s=0.3, reconnect_interval_s=0.1)
    drive(link, 0.3)
    assert link.healthy
    emu.go_silent(1.2)
    t0 = time.monotonic()
    assert drive(link, 5.0, until=lambda: not link.healthy)
    went_unhealthy = time.monotonic() - t0
    assert drive(link, 10.0, until=lambda: link.healthy)
    outage = time.monotonic() - t0
    stats = link.stats
    assert went_unhealthy < 1.2 and outage >= 0.8
    assert stats.silent_events == 1 and stats.reconnects == 1 and stats.vanished_events == 0


def test_watchdog_holds_when_the_host_stalls(devices) -> None:
    devices.kind.need(PLANT)
    emu = devices(state_hz=100, watchdog_ms=200)
    link = connect(devices, emu)
    link.reset_plant(0, devices.kind.reset_state(100, 100))  # (Push-T: block out of the pusher's way)
    states: list[State] = []
    faults: list[tuple[float, Fault]] = []
    link.add_listener(lambda m: states.append(m) if isinstance(m, State) else
                      faults.append((time.monotonic(), m)) if isinstance(m, Fault) else None)
    target = np.float32([290, 100])            # 190 px away: within max_step
    last = None
    for _ in range(3):                          # start moving towards x = 290
        last = link.send_command(target)
        time.sleep(0.05)
    stall_start = time.monotonic()
    time.sleep(0.5)                             # the host stalls; the watchdog is 200 ms
    stall_end = time.monotonic()
    resumed = link.send_command(target)
    drive(link, 0.6, target=target)             # keep feeding it this time

    watchdog = [(t, f) for t, f in faults if f.code == FaultCode.WATCHDOG]
    assert len(watchdog) == 1 and stall_start < watchdog[0][0] < stall_end + 0.05
    during = [s for s in states if s.ack_seq == last]
    held = [s for s in during if s.has(StatusFlags.WATCHDOG_HOLD)]
    assert held, "no State with WATCHDOG_HOLD while the host stalled"
    assert held[0].rx_time < stall_end          # held before the host came back
    fed = next(s for s in during if not s.has(StatusFlags.WATCHDOG_HOLD))
    trip_ms = (held[0].timestamp_us - fed.timestamp_us) / 1000
    assert 180 <= trip_ms <= 450                # device clock: 200 ms after the last command
    assert all(np.array_equal(s.positions, held[0].positions) for s in held)  # no motion after the hold
    assert held[0].positions[0] < 280           # it stopped short of the target
    after = [s for s in states if s.ack_seq != last and s.ack_seq >= resumed]
    assert after and not after[-1].has(StatusFlags.WATCHDOG_HOLD)
    assert after[-1].positions[0] > held[0].positions[0] + 1  # moving again


@pytest.mark.parametrize("kind, message", [
    ("truncated", r"no valid Capabilities from .* after 3 Hello tries of 0.3 s \(dropped malformed frames: length=3\)"),
    ("invalid", r"invalid Capabilities from device: joint 0 \(agent_x\) limits \[512.0, 0.0\]"),
])
def test_malformed_capabilities_give_a_clear_error(emulators, kind: str, message: str) -> None:
    emu = emulators(malformed_caps=kind)
    link = SerialLink(emu.port, handshake_timeout_s=0.3, handshake_retries=3)
    emulators.links.append(link)
    t0 = time.monotonic()
    with pytest.raises(HandshakeError, match=message) as info:
        link.connect()
    assert "\n" not in str(info.value)
    assert time.monotonic() - t0 < 5.0
    assert not link.healthy


def test_a_second_link_cannot_open_the_port(devices) -> None:
    emu = devices(state_hz=50, watchdog_ms=500)
    first = connect(devices, emu)
    second = SerialLink(emu.port, handshake_timeout_s=0.5)
    devices.links.append(second)
    with pytest.raises(HandshakeError, match="another process has it open") as info:
        second.connect()
    assert "\n" not in str(info.value)
    drive(first, 0.3, target=first.wait_state(timeout=2.0).positions)
    assert first.healthy and first.stats.handshakes == 1    # untouched
    first.close()                                           # Goodbye: the next host gets in at once
    third = connect(devices, emu)
    assert third.healthy or third.wait_state(timeout=2.0) is not None
    if STATUS in devices.kind.features:
        assert emu.status()["sessions_refused"] == 0


HOST_SCRIPT = """
import sys, time
from firmware_bridge.serial_link import SerialLink
link = SerialLink(sys.argv[1], handshake_timeout_s=2.0)
link.connect()
print("connected", flush=True)
while True:
    link.send_heartbeat()
    time.sleep(0.05)
"""


def test_a_live_session_refuses_another_host_unless_it_takes_over(devices) -> None:
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path
    devices.kind.need(STATUS)                               # a real board's window may be shorter than the test
    emu = devices(state_hz=50, watchdog_ms=2000)            # session window max(1 s, 2 x 2 s) = 4 s
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    host = subprocess.Popen([sys.executable, "-c", HOST_SCRIPT, emu.port], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert host.stdout is not None and host.stdout.readline().strip() == "connected"
        host.send_signal(signal.SIGKILL)                    # a crashed host: no Goodbye, port freed
        host.wait(10)
        busy = SerialLink(emu.port, handshake_timeout_s=0.5)
        devices.links.append(busy)
        with pytest.raises(HandshakeError, match=r"in use by another host's session .*--takeover") as info:
            busy.connect()
        assert "\n" not in str(info.value)
        busy.close()
        taker = connect(devices, emu, takeover=True)        # the operator's explicit decision
        drive(taker, 0.3)
        assert taker.healthy and emu.status()["sessions_refused"] >= 1
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(10)


def test_estop_latch_survives_a_new_session(devices) -> None:
    emu = devices(state_hz=50, watchdog_ms=500)
    first = connect(devices, emu)
    here = first.wait_state(timeout=2.0).positions          # stay put: any device, any limits
    drive(first, 0.2, target=here)
    assert first.estop(True)
    first.close()
    second = connect(devices, emu)                          # a new host, a new session
    assert second.wait_state(timeout=2.0).has(StatusFlags.ESTOP)
    drive(second, 0.3, target=here)
    assert FaultCode.ESTOP in [f.code for f in second.take_faults()]
    assert second.estop(False)                              # only an explicit release clears it
    drive(second, 0.3, target=here)
    assert not second.wait_state(timeout=2.0).has(StatusFlags.ESTOP)


def logged_device(devices, tmp_path):
    """A 50 Hz device without a watchdog that logs what it applies: (device, link, log path, where it is)."""
    devices.kind.need(STATUS, COMMAND_LOG)
    log_path = tmp_path / "commands.jsonl"
    emu = devices(state_hz=50, watchdog_ms=0, command_log=str(log_path))
    link = connect(devices, emu)
    return emu, link, log_path, link.wait_state(timeout=2.0).positions


def test_implausible_command_is_refused_and_reported(devices, tmp_path) -> None:
    emu, link, log_path, here = logged_device(devices, tmp_path)
    far = np.float32(here + [0.0, 250.0] if here[1] < 250 else here - [0.0, 250.0])
    seq = link.send_command(far)
    drive(link, 0.3, target=here, until=lambda: link.stats.refused.get("IMPLAUSIBLE", 0) >= 1)
    faults = [f for f in link.take_faults() if f.code == FaultCode.IMPLAUSIBLE]
    assert len(faults) == 1 and "max_step 200" in faults[0].text
    applied = [json.loads(line)["seq"] for line in log_path.read_text().splitlines()]
    assert seq not in applied and emu.status()["commands_implausible"] == 1


def test_a_burst_of_commands_is_applied_and_logged_whole(devices, tmp_path) -> None:
    # A host that was descheduled catches up with a burst: the device applies the queued commands back to
    # back. Every applied command must reach the device's command log.
    devices.kind.need(LOSSLESS_LOG)
    emu, link, log_path, here = logged_device(devices, tmp_path)
    sent = []
    for i in range(120):  # no pause: one write after another, small steps (never implausible)
        seq = link.send_command(np.float32(here + [0.5 * (i % 8), 0.25 * (i % 4)]))
        assert seq is not None
        sent.append(seq)
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline and emu.status()["commands_applied"] < len(sent):
        time.sleep(0.1)
    dev = emu.status()
    while time.monotonic() < deadline and len(log_path.read_text().splitlines()) < dev["commands_applied"]:
        time.sleep(0.1)
    applied = [json.loads(line)["seq"] for line in log_path.read_text().splitlines()]
    assert dev["commands_applied"] == len(sent) and dev["rx_seq_gaps"] == 0
    assert applied == sent
