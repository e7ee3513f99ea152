"""Decoder fuzzing: >100,000 mutated frames plus random garbage, derandomized so CI is stable.

Claims checked:
  * the streaming decoder never raises and never reports an internal error, whatever the bytes;
  * strict codec functions raise ProtocolError and nothing else;
  * a mutated frame is rejected, unless the mutation was a no-op, in which case it decodes to the
    exact original (seq and message, bit for bit).
Corruptions CRC-32 detects with certainty (1-4 bit flips, bursts <= 32 bits) and arbitrary line
noise (multi-byte substitutions, insertions, deletions, truncation, splices, garbage, many flipped
bits) are both fed; for the latter CRC-32 alone leaves a ~2^-32 residual, which the COBS, version,
type and length checks shrink further (docs/protocol.md, "Error detection").

Then frames with a VALID CRC but hostile content (wrong types and directions, counts, non-finite and
huge targets, stale/replayed/duplicated sequence numbers, foreign-session Hellos, wrong-token
Goodbyes) go to the device core and to the host link: nothing raises, nothing implausible is applied.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge_gen import ARBITRARY, GUARANTEED, mutate_body, mutate_encoded, random_message, split_chunks
from firmware_bridge.protocol import (MAX_ENCODED, Frame, FrameDecoder, ProtocolError, cobs_decode, decode_frame,
                                      encode_frame)

EXAMPLES = 200
FRAMES_PER_EXAMPLE = 520   # 200 x 520 = 104,000 mutated frames
POOL = 24                  # distinct valid frames per example (generation is the slow part)
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
TOTALS = {"mutated": 0, "garbage_bytes": 0}


@FUZZ
@given(seed=st.integers(0, 2**64 - 1))
def test_mutated_frames_rejected_or_identical(seed: int) -> None:
    rng = random.Random(seed)
    pool = []
    for _ in range(POOL):
        msg, seq = random_message(rng), rng.randrange(65536)
        frame = encode_frame(msg, seq)
        pool.append((Frame(seq, msg), frame[:-1], cobs_decode(frame[:-1])))
    decoder = FrameDecoder()
    expected_ok = 0
    for i in range(FRAMES_PER_EXAMPLE):
        original, enc, body = pool[rng.randrange(POOL)]
        other = pool[rng.randrange(POOL)]
        roll = rng.random()
        if roll < 0.04:  # no-op "mutations": extra delimiters around an intact frame
            wire = b"\x00" * rng.randrange(1, 3) + enc + b"\x00" * rng.randrange(1, 3)
            kind = "noop"
        elif roll < 0.5:
            kind = GUARANTEED[i % len(GUARANTEED)]
            wire = mutate_body(rng, body, kind) + b"\x00"
        else:
            kind = ARBITRARY[i % len(ARBITRARY)]
            wire = mutate_encoded(rng, enc, other[1], kind) + b"\x00"
        got: list[Frame] = []
        for chunk in split_chunks(rng, wire):
            got += decoder.feed(chunk)
        if kind == "noop":
            expected_ok += 1
            assert got == [original], f"no-op mutation changed the frame: {got}"
            continue
        for frame in got:
            # The only acceptable accept: a splice that reproduced a whole valid frame byte for byte.
            assert kind == "splice" and frame == other[0], \
                f"corrupted frame accepted ({kind}, seed {seed}): {frame} from {original}"
    assert decoder.errors["internal"] == 0
    assert decoder.frames_ok >= expected_ok
    TOTALS["mutated"] += FRAMES_PER_EXAMPLE


@settings(max_examples=60, derandomize=True, deadline=None, database=None)
@given(seed=st.integers(0, 2**64 - 1), zero_rate=st.sampled_from([0.0, 0.002, 0.02, 0.2]))
def test_random_garbage_never_raises_and_stays_bounded(seed: int, zero_rate: float) -> None:
    rng = random.Random(seed)
    decoder = FrameDecoder()
    valid = encode_frame(random_message(rng), 7)
    accepted = 0
    for _ in range(40):
        data = bytearray(rng.randbytes(rng.randrange(1, 2000)))
        for j in range(len(data)):  # control how often delimiters appear
            if data[j] == 0 and rng.random() > zero_rate:
                data[j] = 1 + rng.randrange(255)
            elif rng.random() < zero_rate:
                data[j] = 0
        for chunk in split_chunks(rng, bytes(data)):
            accepted += len(decoder.feed(chunk))
            assert len(decoder._buf) <= MAX_ENCODED  # memory bound holds mid-stream
        TOTALS["garbage_bytes"] += len(data)
    # After any garbage, one delimiter resynchronises: the next valid frame gets through.
    assert len(decoder.feed(b"\x00" + valid)) == 1
    assert decoder.errors["internal"] == 0
    assert accepted == 0


@settings(max_examples=1500, derandomize=True, deadline=None, database=None)
@given(data=st.binary(max_size=700))
def test_strict_decode_raises_only_protocol_error(data: bytes) -> None:
    try:
        frame = decode_frame(data)
    except ProtocolError as exc:
        assert exc.reason != "internal", exc
    else:  # astronomically unlikely, but if it decodes it must re-encode to the same bytes
        assert encode_frame(frame.message, frame.seq)[:-1] == data


@settings(max_examples=400, derandomize=True, deadline=None, database=None)
@given(seed=st.integers(0, 2**64 - 1))
def test_random_messages_round_trip_bit_exact(seed: int) -> None:
    rng = random.Random(seed)
    msg, seq = random_message(rng), rng.randrange(65536)
    wire = encode_frame(msg, seq)
    assert wire.count(0) == 1 and wire.endswith(b"\x00")
    frame = decode_frame(wire[:-1])
    assert frame.seq == seq and frame.message == msg
    assert encode_frame(frame.message, seq) == wire


_values = st.one_of(st.none(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=300),
                    st.lists(st.floats(width=32), max_size=300), st.binary(max_size=40), st.booleans())


@settings(max_examples=400, derandomize=True, deadline=None, database=None)
@given(kind=st.integers(0, 10), a=_values, b=_values, c=_values, seq=st.one_of(st.integers(-5, 70000), _values))
def test_encoding_garbage_fields_raises_only_protocol_error(kind, a, b, c, seq) -> None:
    from firmware_bridge.protocol import (Ack, Capabilities, DeviceStatus, EStop, Fault, Heartbeat, Hello,
                                          JointCommand, Reset, State, StatusRequest)
    builders = [lambda: Hello(a, b), lambda: Capabilities(a, (), b, c, c), lambda: State(a, b, c),
                lambda: JointCommand(a, b), lambda: Heartbeat(), lambda: EStop(a), lambda: Fault(a, b),
                lambda: Reset(a, b), lambda: Ack(a, b, c), lambda: StatusRequest(), lambda: DeviceStatus(a, b, c)]
    try:
        msg = builders[kind]()
        wire = encode_frame(msg, seq)
    except ProtocolError:
        return
    assert decode_frame(wire[:-1]).message == msg


def test_fuzz_volume_reached() -> None:
    """Runs after the fuzzers in file order; guards against someone shrinking them by accident."""
    if TOTALS["mutated"] == 0:
        pytest.skip("run with the fuzz tests above")
    assert TOTALS["mutated"] >= 100_000


# ----------------------------------------------------------------------------------------------------
# Valid CRC, hostile content: the device core and the host link must refuse it, never act on it.

def _hostile_command(rng: random.Random, near: np.ndarray):
    from firmware_bridge.protocol import JointCommand
    roll = rng.random()
    if roll < 0.25:   # plausible: near the current target
        return JointCommand(near + [rng.uniform(-150, 150), rng.uniform(-150, 150)], rng.random() < 0.9)
    if roll < 0.45:   # just over the step limit, or far
        return JointCommand(near + rng.choice([-1, 1]) * rng.choice([200.5, 201.0, 300.0, 1e4, 1e30]))
    if roll < 0.6:    # non-finite, any bit pattern
        vals = np.frombuffer(rng.randbytes(8), "<f4").copy()
        vals[rng.randrange(2)] = rng.choice([np.nan, np.inf, -np.inf])
        return JointCommand(vals)
    if roll < 0.75:   # wrong joint count
        return JointCommand(np.full(rng.choice([0, 1, 3, 7, 125]), 256.0, np.float32))
    return JointCommand(np.frombuffer(rng.randbytes(8), "<f4").copy(), rng.random() < 0.5)  # raw bits


def _hostile_frame(rng: random.Random, near: np.ndarray, history: list[bytes], owner: int) -> bytes:
    """One frame with a valid CRC whose content is hostile to the device."""
    from firmware_bridge.protocol import (MsgType, Goodbye, Hello, encode_frame, encode_raw_frame)
    roll = rng.random()
    seq = rng.choice([rng.randrange(65536), 0, 65535])
    if roll < 0.35:
        return encode_frame(_hostile_command(rng, near), seq)
    if roll < 0.5 and history:          # replay an old frame of the owner, byte for byte
        return rng.choice(history)
    if roll < 0.6:                      # another host's Hello (never a takeover here)
        token = rng.choice([rng.getrandbits(64), owner ^ 1, 0])
        return encode_frame(Hello(nonce=rng.getrandbits(32), session_token=token), seq)
    if roll < 0.65:                     # wrong-token Goodbye
        return encode_frame(Goodbye(owner ^ rng.getrandbits(64) or 1), seq)
    if roll < 0.8:                      # a device -> host message arriving at the device
        return encode_frame(random_message(rng), seq)
    # Any type byte, any payload, valid CRC (wrong lengths, unknown types, reserved bits, ...)
    mtype = rng.choice([rng.randrange(256), *(int(t) for t in MsgType)])
    return encode_raw_frame(mtype, seq, rng.randbytes(rng.randrange(0, 40)))


@pytest.mark.parametrize("seed", range(4))
def test_device_core_refuses_hostile_frames_with_valid_crc(seed: int) -> None:
    pytest.importorskip("gym_pusht")
    from firmware_bridge.emulator.device import DeviceConfig, DeviceCore
    from firmware_bridge.emulator.plant import PushTPlant
    from firmware_bridge.protocol import Hello, JointCommand, encode_frame

    rng = random.Random(seed)
    sent: list[bytes] = []
    core = DeviceCore(DeviceConfig("realtime", watchdog_ms=0, state_hz=50.0), PushTPlant(seed),
                      lambda data: sent.append(data) or True, 0.0)
    applied: list[tuple[np.ndarray, np.ndarray]] = []  # (target before, command) for every applied command
    core.on_applied = lambda s, targets: applied.append((before[0], targets.copy()))
    before = [core.target.copy()]
    owner = 0xA11CE
    now = 0.0
    core.receive(encode_frame(Hello(nonce=1, session_token=owner), 0), now)
    history: list[bytes] = []
    seq = 1
    for i in range(3000):
        now += 0.01
        if i % 3 == 0:                  # the owner keeps the session alive with plausible commands
            step = [rng.uniform(-50, 50), rng.uniform(-50, 50)]
            frame = encode_frame(JointCommand(np.clip(core.target + step, 0, 512).astype(np.float32)), seq)
            seq = (seq + 1) & 0xFFFF
            history.append(frame)
        else:
            frame = _hostile_frame(rng, core.target.astype(np.float64), history[-50:], owner)
        before[0] = core.target.copy()
        core.receive(frame, now)
        assert core.session and core.session_token == owner, f"frame {i} ended or stole the session"
        assert core.target.shape == (2,) and np.all(np.isfinite(core.target))
        assert np.all((core.target >= 0) & (core.target <= 512))
    assert applied, "the owner's commands should have been applied"
    for prev, cmd in applied:
        assert cmd.shape == (2,) and np.all(np.isfinite(cmd))
        assert np.max(np.abs(cmd.astype(np.float64) - prev)) <= 200.0, (prev, cmd)
    status = core.status(now)
    assert status.commands_implausible > 0 and status.sessions_refused > 0
    assert core.decoder.errors["internal"] == 0


def _hostile_device_frame(rng: random.Random, host_seqs: list[int]) -> bytes:
    """A frame with a valid CRC and hostile content for the host: shapes, values, seqs, types."""
    from firmware_bridge.protocol import Ack, Capabilities, Fault, MsgType, State, encode_frame, encode_raw_frame
    roll = rng.random()
    seq = rng.randrange(65536)
    if roll < 0.3:  # States of any shape and value, acking any seq (stale, future, replayed)
        n, k = rng.choice([(2, 4), (1, 4), (3, 4), (2, 0), (0, 0), (2, 100)])
        vals = np.frombuffer(rng.randbytes(4 * (n + k)), "<f4").copy()
        ack = rng.choice(host_seqs) if host_seqs and rng.random() < 0.5 else rng.randrange(65536)
        return encode_frame(State(rng.getrandbits(64), vals[:n], vals[n:], rng.randrange(65536), ack), seq)
    if roll < 0.4:  # Capabilities nobody asked for (foreign nonce), hostile limits
        return encode_frame(Capabilities("evil", ("a",), [np.nan], [-1.0], [-5.0], nonce=rng.getrandbits(32),
                                         max_step=[np.inf]), seq)
    if roll < 0.5:  # Acks for frames never sent, of any type and result
        return encode_frame(Ack(rng.randrange(256), rng.randrange(65536), rng.choice([0, 1, 7])), seq)
    if roll < 0.65:  # Faults with any code, including unknown ones
        return encode_frame(Fault(rng.randrange(256), rng.choice(["", "x" * 255, "é"])), seq)
    if roll < 0.8:   # host -> device types and random valid messages
        return encode_frame(random_message(rng), seq)
    mtype = rng.choice([rng.randrange(256), *(int(t) for t in MsgType)])
    return encode_raw_frame(mtype, seq, rng.randbytes(rng.randrange(0, 60)))


def test_host_link_survives_hostile_frames_with_valid_crc() -> None:
    import os
    import threading
    import time
    import tty

    from firmware_bridge.protocol import Capabilities, FaultCode, Hello, JointCommand, State, encode_frame
    from firmware_bridge.serial_link import SerialLink

    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    stop = threading.Event()
    host_seqs: list[int] = []
    good_caps = Capabilities("fw", ("a", "b"), [0.0, 0.0], [1.0, 1.0], [0.0, 0.0], max_step=[0.5, 0.5])

    def device() -> None:
        decoder = FrameDecoder()
        rng = random.Random(7)
        seq = 0
        while not stop.is_set():
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            for frame in decoder.feed(data):
                msg = frame.message
                if isinstance(msg, Hello):
                    out = encode_frame(Capabilities(**{**good_caps.__dict__, "nonce": msg.nonce}), seq)
                elif isinstance(msg, JointCommand):
                    host_seqs.append(frame.seq)
                    out = b"".join(_hostile_device_frame(rng, host_seqs) for _ in range(20))
                    out += encode_frame(State(1, msg.targets, [], 0, frame.seq), seq + 1)  # then an honest reply
                else:
                    out = b""
                seq = (seq + 2) & 0xFFFF
                try:
                    os.write(master, out)
                except OSError:  # the test closed the pty
                    return

    threading.Thread(target=device, daemon=True).start()
    link = SerialLink(path, handshake_timeout_s=1.0, state_timeout_s=5.0, auto_reconnect=False)
    try:
        caps = link.connect()
        for i in range(150):
            seq = link.send_command([0.5, 0.5])
            st = link.wait_state(after_seq=seq, timeout=5.0)  # hostile States may satisfy it: any State
            assert isinstance(st, State)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and len(host_seqs) < 150:  # hostile acks end waits early
            time.sleep(0.02)
        expected = 1 + 21 * len(host_seqs)  # Capabilities, then 20 hostile frames + 1 State per command
        while time.monotonic() < deadline and link.stats.frames_ok + link.stats.corrupt_total < expected:
            time.sleep(0.02)
        stats = link.stats
        assert link._thread is not None and link._thread.is_alive()  # the reader survived it all
        assert link.capabilities is caps and caps.joint_count == 2  # unsolicited Capabilities ignored
        # Every frame is accounted for: decoded, or dropped by reason (never an internal error).
        assert stats.frames_ok + stats.corrupt_total == expected and len(host_seqs) >= 150
        assert stats.corrupt["internal"] == 0 and stats.corrupt_total > 100
        faults = link.take_faults()
        assert len(faults) <= SerialLink.FAULT_QUEUE and stats.faults > len(faults)
        assert any(not isinstance(f.code, FaultCode) for f in faults)  # unknown codes arrive as ints
        # Acks for frames it never sent confirm nothing: e-stop without a real Ack or ESTOP State is False
        # unless a hostile State with ESTOP set happened to arrive (then the device "said" so).
        assert link.send_command([0.5, 0.5]) is not None
    finally:
        stop.set()
        link.close()
        os.close(master)
        os.close(slave)
