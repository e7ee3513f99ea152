"""SerialLink pieces that need no emulator: validation, error messages, the Robot interface.
Real ptys stand in for devices (no pyserial mocks)."""
from __future__ import annotations

import os
import threading
import time
import tty

import numpy as np
import pytest

from firmware_bridge.protocol import (CRC16_V1, CRC32, Ack, AckResult, Capabilities, EStop, Fault, FaultCode,
                                      FrameDecoder, Goodbye, Hello, JointCommand, MsgType, State, StatusFlags,
                                      encode_frame)
from firmware_bridge.robot import HandshakeError, LinkError, LinkStats, Robot
from firmware_bridge.serial_link import SerialLink, SessionState, _seq_reached, validate_capabilities


def caps(**kw) -> Capabilities:
    base = dict(firmware_version="t", joint_names=("a", "b"), lower=[0.0, 0.0], upper=[1.0, 1.0],
                max_velocity=[0.0, 0.0])
    base.update(kw)
    return Capabilities(**base)


@pytest.mark.parametrize("bad, match", [
    (dict(joint_names=(), lower=[], upper=[], max_velocity=[]), "zero joints"),
    (dict(lower=[0.0, 2.0]), r"joint 1 \(b\) limits \[2.0, 1.0\]"),
    (dict(upper=[np.nan, 1.0]), "joint 0"),
    (dict(max_velocity=[-1.0, 0.0]), "max velocity"),
    (dict(max_step=[0.0, np.inf]), "joint 1 max step inf"),
    (dict(max_step=[-1.0, 0.0]), "joint 0 max step -1.0"),
    (dict(protocol_version=9), "protocol version 9"),
])
def test_validate_capabilities(bad: dict, match: str) -> None:
    validate_capabilities(caps())
    with pytest.raises(HandshakeError, match=match) as info:
        validate_capabilities(caps(**bad))
    assert "\n" not in str(info.value)


def test_seq_reached_wraps() -> None:
    assert _seq_reached(5, 5) and _seq_reached(6, 5) and not _seq_reached(4, 5)
    assert _seq_reached(2, 65530) and not _seq_reached(65530, 2)


def test_serial_link_is_a_robot() -> None:
    link = SerialLink("/nonexistent")
    assert isinstance(link, Robot)
    assert isinstance(link.stats, LinkStats) and link.latest_state() is None and not link.healthy


def test_missing_port_gives_one_line_error() -> None:
    with pytest.raises(HandshakeError, match="cannot open /nonexistent/tty") as info:
        SerialLink("/nonexistent/tty").connect()
    assert "\n" not in str(info.value)


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_mute_device_times_out_with_clear_error(pty_pair) -> None:
    _, path = pty_pair
    link = SerialLink(path, handshake_timeout_s=0.2, handshake_retries=2)
    t0 = time.monotonic()
    with pytest.raises(HandshakeError, match=r"after 2 Hello tries of 0.2 s \(no frames received\)"):
        link.connect()
    assert time.monotonic() - t0 < 2.0


def _answer_hellos(master: int, stop: threading.Event, version: int | None = None, check=CRC32,
                   on_frame=None, accept=lambda hello: True) -> None:
    """A minimal device on the pty master: answers every Hello with two-joint Capabilities (encoded with
    another protocol version / checksum if asked), and hands every frame to on_frame(frame) -> bytes."""
    decoder = FrameDecoder()  # it understands our Hello whatever it answers with (a v1 device would not)
    extra = {"check": check} if version is None else {"version": version, "check": check}
    while not stop.is_set():
        try:
            data = os.read(master, 256)
        except OSError:
            return
        for frame in decoder.feed(data):
            reply = b""
            if isinstance(frame.message, Hello) and accept(frame.message):
                reply = encode_frame(caps(nonce=frame.message.nonce), 0, **extra)
            if on_frame is not None:
                reply += on_frame(frame)
            if reply:
                try:
                    os.write(master, reply)
                except OSError:
                    return


@pytest.fixture
def fake_device(pty_pair):
    """fake_device(**opts) -> port path, with a minimal device thread answering on it."""
    master, path = pty_pair
    stop = threading.Event()

    def start(**opts) -> str:
        threading.Thread(target=_answer_hellos, args=(master, stop), kwargs=opts, daemon=True).start()
        return path

    yield start
    stop.set()


@pytest.mark.parametrize("version, check, said", [
    (1, CRC16_V1, "device speaks protocol version 1, host 2"),   # a v1 device: CRC-16 frames
    (3, CRC32, "device speaks protocol version 3, host 2"),
])
def test_version_mismatch_is_named(fake_device, version: int, check, said: str) -> None:
    path = fake_device(version=version, check=check)
    with pytest.raises(HandshakeError, match=said):
        SerialLink(path, handshake_timeout_s=0.3, handshake_retries=2).connect()


def test_wrong_target_count_is_a_one_line_error(fake_device) -> None:
    link = SerialLink(fake_device(), handshake_timeout_s=0.5)
    try:
        assert link.connect().joint_count == 2
        with pytest.raises(LinkError, match="command has 3 targets; .* has 2 joints"):
            link.send_command(np.zeros(3))
        assert link.send_command(np.zeros(2)) is not None
    finally:
        link.close()


def test_hello_carries_the_links_token_and_close_says_goodbye(fake_device) -> None:
    seen: list = []
    path = fake_device(on_frame=lambda f: seen.append(f.message) or b"")
    link = SerialLink(path, handshake_timeout_s=0.5, takeover=True)
    other = SerialLink(path)
    assert link.session_token != other.session_token          # random per link
    link.connect()
    assert link.session_state is SessionState.ACTIVE
    link.close()
    assert link.session_state is SessionState.CLOSED
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(isinstance(m, Goodbye) for m in seen):
        time.sleep(0.01)
    hello = next(m for m in seen if isinstance(m, Hello))
    assert hello.session_token == link.session_token and hello.takeover
    assert Goodbye(link.session_token) in seen


def test_second_opener_of_a_port_gets_a_one_line_error(fake_device) -> None:
    path = fake_device()
    first = SerialLink(path, handshake_timeout_s=0.5)
    try:
        first.connect()
        with pytest.raises(HandshakeError, match=f"cannot open {path}: another process has it open") as info:
            SerialLink(path, handshake_timeout_s=0.3).connect()
        assert "\n" not in str(info.value)
        assert first.send_command(np.zeros(2)) is not None     # the first link is unaffected
    finally:
        first.close()
    second = SerialLink(path, handshake_timeout_s=0.5)     # once closed, the port is free
    second.connect()
    second.close()


def test_session_busy_is_a_one_line_error_suggesting_takeover(fake_device) -> None:
    def refuse(frame) -> bytes:
        if isinstance(frame.message, Hello) and not frame.message.takeover:
            return encode_frame(Fault(FaultCode.SESSION_BUSY, "last frame 0.20 s ago"), 1)
        return b""

    path = fake_device(on_frame=refuse, accept=lambda hello: hello.takeover)
    link = SerialLink(path, handshake_timeout_s=0.3, handshake_retries=3)
    t0 = time.monotonic()
    with pytest.raises(HandshakeError) as info:
        link.connect()
    assert time.monotonic() - t0 < 2.0
    assert "in use by another host's session" in str(info.value) and "--takeover" in str(info.value)
    assert "\n" not in str(info.value) and link.stats.sessions_refused == 1
    taker = SerialLink(path, handshake_timeout_s=0.3, takeover=True)
    try:
        assert taker.connect().joint_count == 2
    finally:
        taker.close()


def _reply_with(frames_for):
    """on_frame handler: frames_for(message) -> list of device messages, sent with rising seqs."""
    seq = [100]

    def handle(frame) -> bytes:
        out = b""
        for msg in frames_for(frame.message, frame.seq):
            out += msg if isinstance(msg, bytes) else encode_frame(msg, seq[0])
            seq[0] += 1
        return out
    return handle


def test_take_faults_refusals_and_state_flags_are_counted(fake_device) -> None:
    def device(msg, seq):
        if isinstance(msg, JointCommand):
            code = {1: FaultCode.IMPLAUSIBLE, 2: FaultCode.ESTOP, 3: FaultCode.BAD_COMMAND}.get(int(msg.targets[0]))
            flags = StatusFlags.ESTOP | StatusFlags.FAULT if code == FaultCode.ESTOP else 0
            return ([Fault(code, "refused")] if code else []) + [State(1, msg.targets, [], int(flags), seq)]
        return []

    link = SerialLink(fake_device(on_frame=_reply_with(device)), handshake_timeout_s=0.5)
    link.FAULT_QUEUE = 4  # small, to see the bound
    try:
        link.connect()
        assert link.take_faults() == []
        for first in (1, 2, 3, 0, 1):
            link.wait_state(after_seq=link.send_command([float(first), 0.0]), timeout=5.0)
        faults = link.take_faults()
        assert [f.code for f in faults] == [FaultCode.IMPLAUSIBLE, FaultCode.ESTOP, FaultCode.BAD_COMMAND,
                                            FaultCode.IMPLAUSIBLE]
        assert link.take_faults() == []                       # each Fault is returned once
        stats = link.stats
        assert stats.refused == {"IMPLAUSIBLE": 2, "ESTOP": 1, "BAD_COMMAND": 1} and stats.refused_total == 4
        assert stats.state_flags == {"ESTOP": 1, "FAULT": 1} and stats.faults_dropped == 0
        for _ in range(6):                                    # overflow: the oldest are dropped, and counted
            link.wait_state(after_seq=link.send_command([1.0, 0.0]), timeout=5.0)
        assert len(link.take_faults()) == 4 and link.stats.faults_dropped == 2
        assert link.stats.session_state == "active"
    finally:
        link.close()


@pytest.mark.parametrize("answer, engage, confirmed", [
    ("ack_ok", True, True), ("ack_ok", False, True), ("ack_rejected", True, False),
    ("estop_state", True, True), ("estop_state", False, False), ("nothing", True, False),
    ("clear_state", True, False),
])
def test_estop_is_true_only_when_the_device_confirms(fake_device, answer: str, engage: bool,
                                                     confirmed: bool) -> None:
    def device(msg, seq):
        if not isinstance(msg, EStop):
            return []
        return {"ack_ok": [Ack(MsgType.ESTOP, seq, AckResult.OK)],
                "ack_rejected": [Ack(MsgType.ESTOP, seq, AckResult.REJECTED)],
                "estop_state": [State(1, [0.0, 0.0], [], int(StatusFlags.ESTOP), 0)],
                "clear_state": [State(1, [0.0, 0.0], [], 0, 0)],
                "nothing": []}[answer]

    link = SerialLink(fake_device(on_frame=_reply_with(device)), handshake_timeout_s=0.5)
    try:
        link.connect()
        assert link.estop(engage, timeout=0.2, retries=2) is confirmed
    finally:
        link.close()


def test_estop_on_a_closed_port_is_false_not_an_exception() -> None:
    link = SerialLink("/nonexistent/tty")
    assert link.estop(True, timeout=0.05, retries=2) is False
    assert link.stats.tx_errors == 2
