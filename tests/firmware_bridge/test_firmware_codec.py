"""The C reference firmware (firmware_bridge/firmware): its codec agrees with the Python codec on every
byte of the shared test vectors and on the drop reason of every mutated frame, and its device core
behaves as docs/protocol.md section 5 says, on a fake clock (no pty, no sleeps)."""
from __future__ import annotations

import random
import zlib

import numpy as np
import pytest

from bridge_gen import ARBITRARY, GUARANTEED, mutate_body, mutate_encoded, random_message, raw_body
from bridge_vectors import VECTORS, build
from firmware_bridge.protocol import (MAX_ENCODED, Ack, AckResult, Capabilities, DeviceStatus, EStop, Fault,
                                      FaultCode, Goodbye, Heartbeat, Hello, JointCommand, MsgType, ProtocolError,
                                      Reset, State, StatusFlags, StatusRequest, decode_frame, encode_frame,
                                      encode_raw_frame)

try:
    from firmware_bridge.firmware.build import BuildUnavailable, host_compiler
    host_compiler()
except BuildUnavailable as exc:  # pragma: no cover - machines without a C compiler
    pytest.skip(f"C firmware tests skipped: {exc}", allow_module_level=True)

from firmware_bridge.firmware.harness import Harness  # noqa: E402

TOKEN, OTHER = 0x0123456789ABCDEF, 0xFEDCBA9876543210


@pytest.fixture(scope="module")
def codec():
    h = Harness()
    yield h
    h.close()


@pytest.fixture
def dev():
    h = Harness()
    yield h
    h.close()


# ----------------------------------------------------------------------------- codec
def test_crc32_matches_zlib(codec) -> None:
    assert codec.crc(b"123456789") == 0xCBF43926
    rng = random.Random(5)
    for n in (0, 1, 2, 3, 7, 64, 300, 511):
        data = rng.randbytes(n)
        assert codec.crc(data) == zlib.crc32(data)


@pytest.mark.parametrize("name, expr, seq, wire", VECTORS, ids=[v[0] for v in VECTORS])
def test_vectors_byte_for_byte(codec, name: str, expr: str, seq: int, wire: str) -> None:
    wire_bytes = bytes.fromhex(wire)
    msg = build(expr)
    payload = msg.encode_payload()
    assert codec.encode(int(msg.TYPE), seq, payload) == wire_bytes        # C frames it identically
    assert codec.decode(wire_bytes) == [("ok", int(msg.TYPE), seq, payload)]  # and accepts it, same fields


def test_device_capabilities_equal_the_vector(dev) -> None:
    """The core's own Capabilities (the harness is configured as the vector's device) is the vector."""
    vector = dict((v[0], v) for v in VECTORS)["capabilities"]
    hello = build(dict((v[0], v) for v in VECTORS)["hello"][1])
    dev.clock(1000)
    raw = dev.cmd(f"rx {encode_frame(hello, 0).hex()}")
    assert raw[0] == "tx " + vector[3].replace(" ", "")
    state = decode_frame(bytes.fromhex(raw[1][3:])[:-1])
    assert state.seq == 1 and isinstance(state.message, State)
    assert state.message.ack_seq == 0 and state.message.timestamp_us == 1_000_000
    assert state.message.positions.tolist() == [256.0, 256.0]
    assert state.message.extras.tolist() == [256.0, 300.0, 1.5, 0.25]


def _python_results(wire: bytes) -> list[tuple]:
    """What the Python receiver makes of a byte stream, frame end by frame end."""
    out = []
    for chunk in wire.split(b"\x00")[:-1]:
        if not chunk:
            continue
        if len(chunk) > MAX_ENCODED:
            out.append(("drop", "oversize"))
            continue
        try:
            frame = decode_frame(chunk)
        except ProtocolError as exc:
            out.append(("drop", exc.reason))
        else:
            out.append(("ok", int(frame.message.TYPE), frame.seq, frame.message.encode_payload()))
    return out


def test_mutated_frames_get_the_same_verdict_in_c_and_python(codec) -> None:
    """Random messages of every type, corrupted every way the fuzz tests know, plus hostile payloads
    under a valid CRC: C and Python accept the same frames with the same fields and drop the rest for
    the same reason."""
    rng = random.Random(20)
    verdicts: dict[str, int] = {}
    for i in range(1500):
        msg = random_message(rng)
        try:
            wire = encode_frame(msg, rng.randrange(65536))
        except ProtocolError:
            continue
        kind = rng.choice(GUARANTEED + ARBITRARY + ("hostile", "clean"))
        if kind in GUARANTEED:
            wire = mutate_body(rng, raw_body(wire), kind) + b"\x00"
        elif kind == "hostile":  # valid CRC, payload truncated, extended or with flipped bytes
            payload = bytearray(msg.encode_payload())
            cut = rng.randrange(-3, 4)
            payload = payload[:len(payload) + cut] if cut < 0 else payload + bytes(rng.randrange(256) for _ in
                                                                                  range(cut))
            if payload and rng.random() < 0.5:
                payload[rng.randrange(len(payload))] ^= rng.randrange(1, 256)
            wire = encode_raw_frame(int(msg.TYPE) if rng.random() < 0.9 else rng.randrange(256), i, bytes(payload))
        elif kind != "clean":
            other = encode_frame(Heartbeat(), 1)[:-1]   # a spliced-in foreign frame
            wire = mutate_encoded(rng, wire[:-1], other, kind) + b"\x00"
        expected = _python_results(wire)
        assert codec.decode(wire) == expected, (kind, msg, wire.hex())
        for r in expected:
            verdicts[r[1] if r[0] == "drop" else "ok"] = verdicts.get(r[1] if r[0] == "drop" else "ok", 0) + 1
    assert {"ok", "crc", "cobs", "length", "payload", "type", "short"} <= set(verdicts), verdicts


def test_oversize_garbage_is_dropped_and_the_next_frame_decodes(codec) -> None:
    good = encode_frame(Heartbeat(), 7)
    got = codec.decode(b"\x01" * 600 + b"\x00" + good)
    assert got == [("drop", "oversize"), ("ok", int(MsgType.HEARTBEAT), 7, b"")]
    v1_body = bytes([1, 5, 0, 0])  # a version-1 frame: CRC-16, named as "version"
    import struct
    from firmware_bridge.protocol import cobs_encode, crc16_ccitt_false
    v1 = cobs_encode(v1_body + struct.pack("<H", crc16_ccitt_false(v1_body)) + b"\x00\x00") + b"\x00"
    assert codec.decode(v1) == _python_results(v1)


# ----------------------------------------------------------------------------- device core, fake clock
def hello(dev, token=TOKEN, takeover=False, nonce=1, seq=None) -> list:
    return dev.send(Hello(2, nonce, token, takeover), seq)


def faults(msgs, code=None) -> list[Fault]:
    return [m for m in msgs if isinstance(m, Fault) and (code is None or m.code == code)]


def states(msgs) -> list[State]:
    return [m for m in msgs if isinstance(m, State)]


def test_no_session_commands_refused_then_handshake(dev) -> None:
    dev.clock(10)
    out = dev.send(JointCommand([300.0, 300.0]))
    assert [f.code for f in faults(out)] == [FaultCode.NO_SESSION] and not dev.last_other  # nothing applied
    assert faults(dev.send(JointCommand([300.0, 300.0]))) == []    # repeated at most every 250 ms
    dev.clock(300)
    assert faults(dev.send(Heartbeat()), FaultCode.NO_SESSION)
    out = hello(dev, nonce=77)
    assert isinstance(out[0], Capabilities) and out[0].nonce == 77 and out[0].max_step.tolist() == [200, 200]
    assert states(out)[0].ack_seq == dev.host_seq - 1
    assert dev.status()["commands_rejected"] == 2          # both JointCommands, reported once


def test_commands_clamped_duplicates_bad_and_implausible(dev) -> None:
    dev.clock(0)
    hello(dev)
    out = dev.send(JointCommand([300.0, 256.0]))
    assert dev.last_other == [f"applied {dev.host_seq - 1} 1 300 256"] and not faults(out)
    seq = dev.host_seq
    dev.send(JointCommand([310.0, 256.0]), seq=seq)
    assert dev.send(JointCommand([320.0, 256.0]), seq=seq) == [] and dev.last_other == []  # duplicate seq
    dev.send(JointCommand([480.0, 400.0]))
    out = dev.send(JointCommand([480.0, 600.0]))                    # y over the limit: clamped to 512
    (lim,) = faults(out, FaultCode.LIMIT)
    assert "512" in lim.text
    out = dev.send(JointCommand([480.0, 512.0, 1.0]))               # wrong joint count
    assert faults(out, FaultCode.BAD_COMMAND) and "needs 2" in faults(out)[0].text
    out = dev.send(JointCommand([np.nan, 500.0]))
    assert faults(out, FaultCode.BAD_COMMAND)
    dev.send(JointCommand([np.nan, np.inf], valid=False))           # targets ignored when not VALID: applied
    assert dev.last_other and dev.last_other[0].split()[2] == "0"
    out = dev.send(JointCommand([480.0, 311.0]))                    # 201 from the target 512: implausible
    (imp,) = faults(out, FaultCode.IMPLAUSIBLE)
    assert imp.text.startswith("joint 1 (y) target 311 is 201 from the current target 512; max_step 200")
    assert dev.last_other == []                                     # not applied
    assert dev.send(JointCommand([480.0, 312.0])) == [] and dev.last_other  # exactly 200: applied
    above = np.nextafter(np.float32(112.0), np.float32(0))           # 200 + 1 ulp below 112
    assert faults(dev.send(JointCommand([480.0, above])), FaultCode.IMPLAUSIBLE)
    st = dev.status()
    assert st["commands_implausible"] == 2 and st["commands_duplicate"] == 1 and st["limit_clamps"] == 1
    assert st["commands_rejected"] == 4 and st["commands_applied"] == 6
    dev.clock(100)
    (s,) = states(dev.tick())
    assert s.positions.tolist() == [480.0, 312.0] and s.flags & StatusFlags.FAULT


def test_watchdog_holds_until_a_valid_command(dev) -> None:
    dev.clock(1000)
    hello(dev)
    dev.send(JointCommand([300.0, 256.0]))
    dev.cmd("positions 280 256")                 # the plant is on its way
    dev.clock(1300)
    assert faults(dev.tick()) == []              # exactly watchdog_ms: not yet
    dev.clock(1301)
    out = dev.tick()
    (wd,) = faults(out, FaultCode.WATCHDOG)
    assert "301 ms" in wd.text
    held = states(out)[-1]
    assert held.flags & StatusFlags.WATCHDOG_HOLD and held.positions.tolist() == [280.0, 256.0]
    dev.clock(1400)
    assert faults(dev.tick(), FaultCode.WATCHDOG) == []  # one trip per silence
    dev.send(Heartbeat())                        # feeds, does not resume
    dev.clock(1420)
    assert states(dev.tick())[-1].flags & StatusFlags.WATCHDOG_HOLD
    assert faults(dev.send(JointCommand([481.0, 256.0])), FaultCode.IMPLAUSIBLE)  # reference: the held 280
    dev.send(JointCommand([300.0, 256.0]))
    dev.clock(1440)
    assert not states(dev.tick())[-1].flags & StatusFlags.WATCHDOG_HOLD
    assert dev.status()["watchdog_trips"] == 1


def test_session_busy_takeover_and_goodbye(dev) -> None:
    dev.clock(0)
    hello(dev)
    dev.send(JointCommand([300.0, 256.0]))
    dev.clock(850)
    dev.send(Heartbeat())                                          # the owner is alive and fed
    dev.clock(900)
    out = hello(dev, token=OTHER, nonce=5, seq=1000)
    assert [type(m) for m in out] == [Fault] and out[0].code == FaultCode.SESSION_BUSY
    dev.clock(950)
    assert not states(dev.tick())[-1].flags & StatusFlags.FAULT   # not latched; session untouched
    out = hello(dev, token=OTHER, nonce=6, takeover=True)          # explicit takeover: accepted
    assert isinstance(out[0], Capabilities) and out[0].nonce == 6
    assert dev.status()["sessions_refused"] == 1
    # a dead session (no frame for max(1 s, 2 x 300 ms)) is taken by any host
    dev.clock(1951)
    out = hello(dev, token=TOKEN, nonce=7)
    assert isinstance(out[0], Capabilities)
    dev.send(Goodbye(OTHER))                                       # foreign Goodbye: ignored
    dev.clock(2000)
    assert states(dev.tick())
    dev.send(Goodbye(TOKEN))
    dev.clock(2100)
    assert dev.tick() == []                                        # no session: silent
    out = hello(dev, token=OTHER, nonce=8)
    assert isinstance(out[0], Capabilities)                        # free at once after Goodbye


def test_estop_latch_survives_sessions_and_firmware_reset(dev) -> None:
    dev.clock(0)
    assert faults(dev.send(EStop(True)), FaultCode.NO_SESSION) == []  # honoured without a session
    ack = [m for m in dev.send(EStop(True), seq=40) if isinstance(m, Ack)]
    assert ack and ack[0].acked_seq == 40 and ack[0].result == AckResult.OK
    assert states(hello(dev))[0].flags & StatusFlags.ESTOP
    out = dev.send(JointCommand([260.0, 256.0]))
    assert faults(out, FaultCode.ESTOP) and dev.last_other == []
    dev.reboot()                                                   # firmware reset: latch kept
    out = hello(dev, token=OTHER)
    assert states(out)[0].flags & StatusFlags.ESTOP
    st = dev.status()
    assert st["boots"] == 2
    dev.send(EStop(False))
    dev.send(JointCommand([260.0, 256.0]))
    assert dev.last_other
    dev.clock(30)
    assert not states(dev.tick())[-1].flags & StatusFlags.ESTOP


def test_corrupt_frames_counted_and_reported_once_a_second(dev) -> None:
    dev.clock(0)
    hello(dev)
    bad = bytearray(encode_frame(JointCommand([300.0, 256.0]), 5))
    bad[6] ^= 0x40
    out = dev.send(None, raw=bytes(bad) * 3)
    (f,) = faults(out, FaultCode.BAD_FRAME)
    assert f.text == "dropped 3 corrupt frame(s)" and dev.last_other == []
    dev.clock(500)
    assert faults(dev.send(None, raw=bytes(bad)), FaultCode.BAD_FRAME) == []
    dev.clock(1000)
    (f,) = faults(dev.send(None, raw=bytes(bad)), FaultCode.BAD_FRAME)
    assert f.text == "dropped 2 corrupt frame(s)"
    st = dev.status()
    assert st["rx_bad_crc"] + st["rx_bad_cobs"] + st["rx_bad_other"] == 5


def test_version_status_and_reset(dev) -> None:
    dev.clock(0)
    out = dev.send(Hello(1, 9, TOKEN))                             # host speaks another version
    assert [f.code for f in faults(out)] == [FaultCode.VERSION] and "host protocol 1, device 2" in out[0].text
    hello(dev)
    dev.send(Heartbeat(), seq=10)                                  # host seq 2..9 lost: 8 gaps
    (st,) = dev.send(StatusRequest())
    assert isinstance(st, DeviceStatus) and st.rx_seq_gaps == 8 and st.heartbeats == 1
    out = dev.send(Reset(3, np.float32([100.0, 120.0])))
    assert isinstance(out[0], Ack) and out[0].result == AckResult.OK
    assert states(out)[0].positions.tolist() == [100.0, 120.0]
    out = dev.send(Reset(3, np.float32([100.0, 120.0, 5.0])))     # wrong k: refused
    assert out[0].result == AckResult.REJECTED and faults(out, FaultCode.BAD_COMMAND)
    assert dev.status()["plant_resets"] == 1
