"""SerialLink pieces that need no emulator: validation, error messages, the Robot interface.
Real ptys stand in for devices (no pyserial mocks)."""
from __future__ import annotations

import os
import threading
import time
import tty

import numpy as np
import pytest

from firmware_bridge.protocol import Capabilities, FrameDecoder, Hello, encode_frame
from firmware_bridge.robot import HandshakeError, LinkError, LinkStats, Robot
from firmware_bridge.serial_link import SerialLink, _seq_reached, validate_capabilities


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


def _answer_hellos(master: int, stop: threading.Event, version: int | None = None) -> None:
    """A minimal device on the pty master: answers every Hello with two-joint Capabilities."""
    decoder = FrameDecoder()
    extra = {} if version is None else {"version": version}
    while not stop.is_set():
        try:
            data = os.read(master, 256)
        except OSError:
            return
        for frame in decoder.feed(data):
            if isinstance(frame.message, Hello):
                os.write(master, encode_frame(caps(nonce=frame.message.nonce), 0, **extra))


def test_version_mismatch_is_named(pty_pair) -> None:
    master, path = pty_pair
    stop = threading.Event()
    threading.Thread(target=_answer_hellos, args=(master, stop, 2), daemon=True).start()
    try:
        with pytest.raises(HandshakeError, match="device speaks protocol version 2, host 1"):
            SerialLink(path, handshake_timeout_s=0.3, handshake_retries=2).connect()
    finally:
        stop.set()


def test_wrong_target_count_is_a_one_line_error(pty_pair) -> None:
    master, path = pty_pair
    stop = threading.Event()
    threading.Thread(target=_answer_hellos, args=(master, stop), daemon=True).start()
    link = SerialLink(path, handshake_timeout_s=0.5)
    try:
        assert link.connect().joint_count == 2
        with pytest.raises(LinkError, match="command has 3 targets; .* has 2 joints"):
            link.send_command(np.zeros(3))
        assert link.send_command(np.zeros(2)) is not None
    finally:
        stop.set()
        link.close()
