"""The emulated device's firmware logic, driven directly with a simulated clock (no pty, no sleeps)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gym_pusht")

from firmware_bridge.emulator.device import DeviceConfig, DeviceCore  # noqa: E402
from firmware_bridge.emulator.faults import FaultConfig, FaultInjector  # noqa: E402
from firmware_bridge.emulator.plant import PushTPlant, make_pusht_env, reset_pusht  # noqa: E402
from firmware_bridge.protocol import (Ack, AckResult, Capabilities, CapabilityFlags, DeviceStatus, EStop,  # noqa: E402
                                      Fault, FaultCode, FrameDecoder, Goodbye, Heartbeat, Hello, JointCommand, Reset,
                                      State, StatusFlags, StatusRequest, encode_frame)


class Bench:
    """A DeviceCore on a fake clock; collects what it transmits."""

    def __init__(self, mode: str = "realtime", watchdog_ms: int = 200, seed: int = 0, state_hz: float = 50.0,
                 faults: FaultInjector | None = None) -> None:
        self.now = 1000.0
        self.decoder = FrameDecoder()
        self.frames: list = []
        self.core = DeviceCore(DeviceConfig(mode, watchdog_ms, state_hz), PushTPlant(seed), self._tx, self.now,
                               faults)
        self.seq = 0

    def _tx(self, data: bytes) -> bool:
        self.frames += self.decoder.feed(data)
        return True

    def send(self, msg, seq: int | None = None) -> int:
        seq = self.seq if seq is None else seq
        self.seq = (seq + 1) & 0xFFFF
        self.core.receive(encode_frame(msg, seq), self.now)
        return seq

    def advance(self, seconds: float, step: float = 0.002) -> None:
        end = self.now + seconds
        while self.now < end - 1e-12:
            self.now = min(end, self.now + step)
            self.core.tick(self.now)

    def take(self, cls) -> list:
        got = [f.message for f in self.frames if isinstance(f.message, cls)]
        self.frames = [f for f in self.frames if not isinstance(f.message, cls)]
        return got

    def connect(self, token: int = 1, takeover: bool = False) -> Capabilities:
        self.send(Hello(nonce=77, session_token=token, takeover=takeover))
        caps = self.take(Capabilities)
        assert len(caps) == 1 and caps[0].nonce == 77
        return caps[0]

    def position(self) -> np.ndarray:
        return self.core.plant.positions().astype(np.float64)


def test_handshake_and_streaming() -> None:
    bench = Bench()
    bench.send(JointCommand([1.0, 2.0]))  # before Hello: refused, and the host is told why
    assert [f.code for f in bench.take(Fault)] == [FaultCode.NO_SESSION]
    assert bench.take(State) == []
    caps = bench.connect()
    assert caps.joint_names == ("agent_x", "agent_y")
    assert caps.extra_names == ("block_x", "block_y", "block_angle", "coverage")
    assert caps.lower.tolist() == [0, 0] and caps.upper.tolist() == [512, 512]
    assert caps.watchdog_ms == 200 and caps.state_period_us == 20000
    assert caps.flags == CapabilityFlags.SIMULATED
    # Realistic limits (plant.MAX_STEP_PX: ~1.5x the largest per-tick step in the Push-T demos).
    assert caps.max_step.tolist() == [200.0, 200.0] and caps.max_velocity.tolist() == [2000.0, 2000.0]
    bench.take(State)
    bench.advance(1.0)
    states = bench.take(State)
    assert 49 <= len(states) <= 51  # 50 Hz on the device clock
    assert np.all(np.diff([s.timestamp_us for s in states]) > 0)
    status = bench.core.status(bench.now)
    assert status.commands_rejected == 1 and status.boots == 1


def test_watchdog_holds_within_timeout_and_pusher_stops() -> None:
    bench = Bench(watchdog_ms=200)
    bench.connect()
    start = bench.position()
    goal = start + [-190.0, 0.0]                       # within max_step (200 px) of the start
    last = bench.send(JointCommand(goal))
    fed_at = bench.now
    bench.advance(0.15)                                # moving towards the target
    moving = bench.take(State)
    assert np.linalg.norm(moving[-1].positions - moving[0].positions) > 5
    bench.advance(0.45)                                # the host stalls
    faults = bench.take(Fault)
    assert [f.code for f in faults] == [FaultCode.WATCHDOG]  # once, not every tick
    states = bench.take(State)
    held = [s for s in states if s.has(StatusFlags.WATCHDOG_HOLD)]
    assert held and all(s.ack_seq == last for s in states)
    trip_us = held[0].timestamp_us - (fed_at - bench.core.t0) * 1e6
    assert 200_000 <= trip_us <= 210_000               # trips just after watchdog_ms (2 ms ticks)
    assert all(np.array_equal(s.positions, held[0].positions) for s in held)  # does not move after the hold
    assert held[0].positions[0] > goal[0] + 10         # and stopped short of the target
    assert bench.core.status(bench.now).watchdog_trips == 1
    assert np.allclose(bench.core.target, held[0].positions, atol=1e-3)  # the reference is the held position
    bench.send(JointCommand(held[0].positions + [0.0, 150.0]))  # the next valid command clears the hold
    bench.advance(0.1)
    after = bench.take(State)
    assert not after[-1].has(StatusFlags.WATCHDOG_HOLD) and not after[-1].has(StatusFlags.FAULT)
    assert not np.array_equal(after[-1].positions, held[0].positions)


def test_heartbeats_feed_the_watchdog_but_do_not_clear_a_hold() -> None:
    bench = Bench(watchdog_ms=200)
    bench.connect()
    bench.send(JointCommand([200.0, 200.0]))
    for _ in range(10):
        bench.advance(0.1)
        bench.send(Heartbeat())
    assert bench.take(Fault) == [] and bench.core.status(bench.now).heartbeats == 10
    bench.advance(0.3)
    assert [f.code for f in bench.take(Fault)] == [FaultCode.WATCHDOG]
    bench.send(Heartbeat())
    bench.advance(0.05)
    assert bench.take(State)[-1].has(StatusFlags.WATCHDOG_HOLD)


def test_limits_clamp_and_report() -> None:
    bench = Bench()
    bench.connect()
    bench.send(Reset(0, [500.0, 10.0, 300.0, 300.0, 0.0]))  # near the corner, block out of the way
    bench.send(JointCommand([600.0, -5.0]))
    assert [f.code for f in bench.take(Fault)] == [FaultCode.LIMIT]
    assert bench.core.target.tolist() == [512.0, 0.0]
    bench.advance(0.05)
    assert bench.take(State)[-1].has(StatusFlags.LIMIT)
    bench.send(JointCommand([400.0, 100.0]))
    bench.advance(0.05)
    assert not bench.take(State)[-1].has(StatusFlags.LIMIT)
    assert bench.core.status(bench.now).limit_clamps == 1


def test_duplicate_bad_and_refused_commands_are_not_applied() -> None:
    bench = Bench()
    bench.connect()
    here = np.float32(bench.position() + 50)
    seq = bench.send(JointCommand(here))
    bench.send(JointCommand(here - 20), seq=seq)             # same seq again: a duplicate
    assert bench.core.target.tolist() == here.tolist()
    bench.send(JointCommand([np.nan, here[1]]))             # non-finite
    bench.send(JointCommand([1.0, 2.0, 3.0]))               # wrong joint count
    assert bench.core.target.tolist() == here.tolist()
    assert FaultCode.BAD_COMMAND in [f.code for f in bench.take(Fault)]
    bench.send(JointCommand([np.nan, np.nan], valid=False))  # no target: fine, keeps the current one
    status = bench.core.status(bench.now)
    assert (status.commands_applied, status.commands_duplicate, status.commands_rejected) == (2, 1, 2)


def test_estop_refuses_commands_until_released() -> None:
    bench = Bench(watchdog_ms=0)
    bench.connect()
    bench.send(JointCommand(bench.position() + [60.0, 140.0]))
    bench.advance(0.1)
    seq = bench.send(EStop(True))
    assert bench.take(Ack) == [Ack(EStop.TYPE, seq, AckResult.OK)]
    bench.send(JointCommand(bench.position() - 30))
    assert [f.code for f in bench.take(Fault)] == [FaultCode.ESTOP]
    bench.take(State)
    bench.advance(0.3)
    held = bench.take(State)
    assert all(s.has(StatusFlags.ESTOP) and np.array_equal(s.positions, held[0].positions) for s in held)
    seq = bench.send(EStop(False))
    assert bench.take(Ack)[0].acked_seq == seq
    bench.send(JointCommand(held[0].positions - [150.0, 0.0]))
    bench.advance(0.2)
    last = bench.take(State)[-1]
    assert not last.has(StatusFlags.ESTOP) and last.positions[0] < held[0].positions[0] - 5


def test_firmware_reset_forgets_the_session() -> None:
    bench = Bench()
    bench.connect()
    bench.advance(0.1)
    bench.core.reboot(bench.now)
    bench.frames.clear()
    bench.advance(0.2)
    assert bench.frames == []                      # no session: silent
    bench.send(JointCommand([1.0, 1.0]))
    assert bench.frames[-1].message.code == FaultCode.NO_SESSION and bench.frames[-1].seq == 0  # seq restarts
    bench.connect()
    assert bench.core.status(bench.now).boots == 2


def test_status_request() -> None:
    bench = Bench()
    bench.connect()
    bench.send(StatusRequest())
    (status,) = bench.take(DeviceStatus)
    assert status.rx_frames_ok == 2 and status.boots == 1


def test_lockstep_reproduces_in_process_pusht_exactly() -> None:
    bench = Bench(mode="lockstep")
    caps = bench.connect()
    assert caps.lockstep and caps.watchdog_ms == 0
    env = make_pusht_env()
    rng = np.random.default_rng(3)
    for seed, init in [(11, None), (12, [120.0, 330.0, 260.0, 250.0, 0.7])]:
        seq = bench.send(Reset(seed, [] if init is None else init))
        assert bench.take(Ack)[0].result == AckResult.OK
        st = bench.take(State)[-1]
        # The wire carries float32: the in-process reference starts from the same float32 values.
        obs = reset_pusht(env, seed, None if init is None else np.float32(init))
        assert st.ack_seq == seq and st.timestamp_us == 0
        assert np.array_equal(np.concatenate([st.positions, st.extras[:3]]), obs.astype(np.float32))
        action = st.positions.astype(np.float64)
        for step in range(40):
            action = np.clip(action + rng.uniform(-60, 60, 2), 60, 450).astype(np.float32)  # within max_step
            seq = bench.send(JointCommand(action))
            (st,) = bench.take(State)                  # exactly one reply per command
            obs, _, _, _, info = env.step(action)
            assert st.ack_seq == seq and st.timestamp_us == (step + 1) * 100_000
            assert np.array_equal(np.concatenate([st.positions, st.extras[:3]]), obs.astype(np.float32)), step
            assert st.extras[3] == np.float32(info["coverage"])
    bench.advance(1.0)                                   # keep-alive States repeat, time does not advance
    keepalive = bench.take(State)
    assert len(keepalive) >= 40 and all(s == keepalive[0] for s in keepalive)


def test_reset_places_the_block_where_asked() -> None:
    env = make_pusht_env()
    want = [100.0, 100.0, 300.0, 280.0, 2.0]
    obs = reset_pusht(env, 0, want)
    assert np.allclose(obs, want, atol=1e-6)
    # gym-pusht's own reset_to_state (position before angle) misplaces the block by tens of pixels.
    legacy, _ = env.reset(seed=0, options={"reset_to_state": want})
    assert np.linalg.norm(legacy[2:4] - np.array(want[2:4])) > 10
    bench = Bench(mode="lockstep")
    bench.connect()
    bench.send(Reset(1, [1.0, 2.0]))                     # wrong length: refused, plant untouched
    assert bench.take(Ack)[0].result == AckResult.REJECTED


def test_fault_injector_rates_are_seeded() -> None:
    inj = FaultInjector(FaultConfig(corrupt_one_in=1000, drop_fraction=0.1, seed=5))
    frame = bytes(range(1, 51))
    sent = [inj.on_tx(frame) for _ in range(20000)]
    dropped = sum(s is None for s in sent)
    changed = sum(1 for s in sent if s is not None and s != frame)
    assert 1800 <= dropped <= 2200 and dropped == inj.tx_dropped
    assert changed == inj.tx_corrupted and 700 <= changed <= 1100  # ~18000 * 50 / 1000 bytes
    again = FaultInjector(FaultConfig(corrupt_one_in=1000, drop_fraction=0.1, seed=5))
    assert [again.on_tx(frame) for _ in range(20000)] == sent


def test_estop_works_without_a_session() -> None:
    bench = Bench()
    seq = bench.send(EStop(True))                        # no Hello yet
    assert bench.take(Ack) == [Ack(EStop.TYPE, seq, AckResult.OK)] and bench.core.estop
    assert bench.take(Fault) == []


def test_a_second_host_is_refused_while_the_session_is_alive() -> None:
    bench = Bench(watchdog_ms=500)
    bench.connect(token=1)
    here = bench.position()
    mine = bench.send(JointCommand(here + 20))
    bench.advance(0.3)
    bench.frames.clear()
    bench.send(Hello(nonce=5, session_token=2))             # another host, 0.3 s after our last frame
    assert bench.core.session_alive(bench.now) and not bench.core.session_alive(bench.now + 1.01)
    faults = bench.take(Fault)
    assert [f.code for f in faults] == [FaultCode.SESSION_BUSY] and "takeover" in faults[0].text
    assert bench.take(Capabilities) == []
    assert bench.core.session_token == 1 and bench.core.ack_seq == mine  # the session is untouched
    assert bench.core.target.tolist() == np.float32(here + 20).tolist()
    bench.advance(0.05)
    assert not bench.take(State)[-1].has(StatusFlags.FAULT)   # a refused Hello is not our fault
    bench.connect(token=1)                                   # the owner re-handshakes freely
    assert bench.core.status(bench.now).sessions_refused == 1


def test_takeover_and_a_dead_session_let_another_host_in() -> None:
    bench = Bench(watchdog_ms=200)
    bench.connect(token=1)
    bench.send(JointCommand(bench.position() + 50))
    bench.send(Hello(nonce=77, session_token=2, takeover=True))  # explicit takeover: accepted
    assert len(bench.take(Capabilities)) == 1 and bench.core.session_token == 2
    assert np.allclose(bench.core.target, bench.position())     # the new host does not inherit the old target
    bench.send(Heartbeat())
    bench.advance(0.5)
    bench.send(Hello(nonce=6, session_token=3))              # 0.5 s: still alive (window max(1 s, 2 x 0.2 s))
    assert [f.code for f in bench.take(Fault)][-1] == FaultCode.SESSION_BUSY  # after the WATCHDOG hold
    bench.advance(0.6)                                       # 1.1 s without a frame: the session is dead
    bench.connect(token=3)
    assert bench.core.session_token == 3


def test_goodbye_ends_only_its_own_session() -> None:
    bench = Bench()
    bench.connect(token=1)
    bench.send(Goodbye(99))                                  # a stale/foreign token: ignored
    assert bench.core.session
    bench.send(Goodbye(1))
    assert not bench.core.session
    bench.frames.clear()
    bench.advance(0.2)
    assert bench.frames == []                                # no session: silent
    bench.connect(token=2)                                   # the next host need not wait


def test_estop_latch_survives_new_sessions_and_firmware_resets() -> None:
    bench = Bench()
    bench.connect(token=1)
    bench.send(EStop(True))
    bench.connect(token=1)                                   # re-handshake
    bench.send(Hello(nonce=77, session_token=2, takeover=True))
    bench.take(Capabilities)
    bench.core.reboot(bench.now)                             # firmware reset
    bench.connect(token=3)
    bench.take(State)
    bench.send(JointCommand(bench.position() + 10))
    assert [f.code for f in bench.take(Fault)] == [FaultCode.ESTOP]
    bench.advance(0.05)
    assert bench.take(State)[-1].has(StatusFlags.ESTOP)
    bench.send(EStop(False))                                 # only an explicit release clears it
    bench.send(JointCommand(bench.position() + 10))
    assert bench.take(Fault) == [] and not bench.core.estop


def test_implausible_jumps_are_refused_and_not_applied() -> None:
    bench = Bench(watchdog_ms=0)
    bench.connect()
    here = np.float32(bench.position())
    ok = bench.send(JointCommand(here + [-199.0, -199.0]))
    assert bench.core.ack_seq == ok and bench.take(Fault) == []
    target = bench.core.target.copy()
    for jump in ([201.0, 0.0], [0.0, -250.0], [1e30, 0.0], [-3e38, 3e38]):
        bench.send(JointCommand(target + np.float32(jump)))
        (fault,) = bench.take(Fault)
        assert fault.code == FaultCode.IMPLAUSIBLE and "max_step 200" in fault.text
        assert bench.core.target.tolist() == target.tolist() and bench.core.ack_seq == ok
    bench.advance(0.05)
    assert bench.take(State)[-1].has(StatusFlags.FAULT)
    status = bench.core.status(bench.now)
    assert (status.commands_implausible, status.commands_rejected, status.commands_applied) == (4, 4, 1)
    # After an e-stop the reference is the held position, not the last commanded target.
    bench.send(EStop(True))
    bench.send(EStop(False))
    held = bench.core.target.copy()
    assert np.allclose(held, bench.position())
    bench.send(JointCommand(held + [-40.0, 150.0]))  # > max_step from the last commanded target
    assert bench.take(Fault) == [] and np.allclose(bench.core.target, np.float32(held + [-40.0, 150.0]))


def test_max_step_zero_disables_the_check() -> None:
    bench = Bench()
    bench.core = DeviceCore(DeviceConfig("realtime", 0, 50.0, max_step=0.0), PushTPlant(0), bench._tx, bench.now)
    caps = bench.connect()
    assert caps.max_step.tolist() == [0.0, 0.0] and caps.max_velocity.tolist() == [0.0, 0.0]
    bench.send(JointCommand([500.0, 10.0]))
    assert bench.take(Fault) == [] and bench.core.target.tolist() == [500.0, 10.0]
    with pytest.raises(ValueError, match="max_step"):
        DeviceConfig(max_step=float("nan"))


# ----------------------------------------------------------------- hostile States (fault campaigns)
@pytest.mark.parametrize("kind", ["short", "long", "noextras", "nan", "huge"])
def test_hostile_states_then_normal_again(kind: str) -> None:
    bench = Bench(watchdog_ms=0)
    bench.connect()
    bench.take(State)
    bench.core.send_hostile_states(kind, 3)
    bench.advance(0.2)                                     # ~10 States at 50 Hz
    states = bench.take(State)
    assert len(states) >= 6
    hostile, normal = states[:3], states[3:]
    for st in hostile:
        n, k = len(st.positions), len(st.extras)
        assert n == {"short": 1, "long": 3}.get(kind, 2)
        assert k == (0 if kind == "noextras" else 4)
        if kind == "nan":
            assert np.isnan(st.positions[0]) and np.isfinite(st.positions[1])
        elif kind == "huge":
            assert st.positions[0] == np.float32(1e30)
        else:
            assert np.all(np.isfinite(st.positions))
    for st in normal:
        assert (len(st.positions), len(st.extras)) == (2, 4) and np.all(np.abs(st.positions) <= 512)
    assert bench.core.hostile_sent == 3 and bench.core.hostile_left == 0
    # Only the wire lies: the plant and the device's own target are untouched.
    assert np.all(np.isfinite(bench.core.target)) and np.all(np.abs(bench.position()) <= 512)


def test_hostile_states_in_lockstep_replace_the_command_reply() -> None:
    bench = Bench(mode="lockstep")
    bench.connect()
    bench.take(State)
    bench.core.send_hostile_states("short", 1)
    here = np.float32(bench.position())
    seq = bench.send(JointCommand(here + 5))
    (st,) = bench.take(State)
    assert st.ack_seq == seq and len(st.positions) == 1  # the reply itself is hostile
    seq = bench.send(JointCommand(here + 10))
    (st,) = bench.take(State)
    assert len(st.positions) == 2


@pytest.mark.parametrize("kind, count", [("bogus", 1), ("nan", -1), ("nan", 1.5), ("nan", True), ("nan", 10**10)])
def test_hostile_states_bad_requests_are_refused(kind, count) -> None:
    bench = Bench()
    with pytest.raises(ValueError, match="hostile State"):
        bench.core.send_hostile_states(kind, count)
    assert bench.core.hostile_left == 0


def test_hostile_states_zero_count_cancels() -> None:
    bench = Bench()
    bench.core.send_hostile_states("huge", 5)
    bench.core.send_hostile_states("huge", 0)
    assert bench.core.hostile_left == 0 and bench.core.hostile_kind is None


@pytest.mark.parametrize("spec, ok", [
    ("nan:0.5:3", ("nan", 0.5, 3)), ("short:0:1", ("short", 0.0, 1)),
    ("bogus:1:1", None), ("nan:1", None), ("nan:x:1", None), ("nan:1:x", None), ("nan:-1:1", None),
    ("nan:inf:1", None), ("nan:nan:1", None), ("nan:1:0", None), ("nan:1:1:1", None), ("", None)])
def test_hostile_states_cli_option(spec, ok, capsys) -> None:
    from firmware_bridge.emulator.cli import build_parser
    if ok is not None:
        assert build_parser().parse_args(["--hostile-states", spec]).hostile_states == [ok]
        return
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--hostile-states", spec])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and "--hostile-states" in err[-1] and "Traceback" not in "".join(err)


@pytest.mark.slow
def test_hostile_states_over_a_pty() -> None:
    """Both ways in: the CLI option (timed from the first handshake) and the stdin command."""
    pytest.importorskip("serial")
    from firmware_bridge.emulator import EmulatorError, start_emulator
    from firmware_bridge.serial_link import SerialLink
    with start_emulator("lockstep", state_hz=5.0, hostile_states=["long:0:2"]) as emu:
        with SerialLink(emu.port, state_timeout_s=2.0, handshake_timeout_s=2.0) as link:
            link.connect()
            start = link.latest_state()
            assert start is not None
            here = np.float32(start.positions[:2])
            lengths = [len(link.step(here).positions) for _ in range(4)]
            assert 1 <= lengths.count(3) <= 2 and lengths[-1] == 2  # a keep-alive State may take one of the two
            assert "ok hostile-state" == emu.command("hostile-state nan 1")
            st = link.step(here)
            assert np.isnan(st.positions[0]) and len(st.positions) == 2
            assert np.all(np.isfinite(link.step(here).positions))
            with pytest.raises(EmulatorError, match="hostile State kind"):
                emu.hostile_states("bogus", 1)
            with pytest.raises(EmulatorError, match="bad command"):
                emu.command("hostile-state nan")
