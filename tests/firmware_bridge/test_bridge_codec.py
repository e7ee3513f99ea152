"""Frame codec: CRC, COBS, message round trips, test vectors, corrupt frames counted by reason."""
from __future__ import annotations

import random
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from bridge_vectors import VECTORS, build
from firmware_bridge.protocol import (CRC16_V1, MAX_ENCODED, MAX_PAYLOAD, PROTOCOL_VERSION, REASONS, Capabilities,
                                      EStop, Fault, FaultCode, FrameDecoder, Hello, JointCommand, MsgType,
                                      ProtocolError, Reset, State, cobs_decode, cobs_encode, crc16_ccitt_false, crc32,
                                      decode_frame, encode_frame, encode_raw_frame)

SPEC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def crc16_reference(data: bytes) -> int:
    """Bit-by-bit CRC-16/CCITT-FALSE, straight from its definition."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def crc32_reference(data: bytes) -> int:
    """Bit-by-bit CRC-32/ISO-HDLC (reflected 0xEDB88320, init and xorout 0xFFFFFFFF), from its definition."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def test_crc_check_values_and_references() -> None:
    assert PROTOCOL_VERSION == 2
    assert crc32(b"123456789") == 0xCBF43926          # the catalogue check value
    assert crc32(b"") == 0
    assert crc16_ccitt_false(b"123456789") == 0x29B1  # protocol v1's, kept for comparison
    rng = random.Random(1)
    for n in range(0, 300, 7):
        data = rng.randbytes(n)
        assert crc32(data) == crc32_reference(data)
        assert crc16_ccitt_false(data) == crc16_reference(data)


@pytest.mark.parametrize("raw, enc", [
    ("00", "0101"), ("0000", "010101"), ("00 11 00", "01 02 11 01"), ("11 22 00 33", "03 11 22 02 33"),
    ("11 22 33 44", "05 11 22 33 44"), ("11 00 00 00", "02 11 01 01 01"),
    (bytes(range(1, 255)).hex(), "ff" + bytes(range(1, 255)).hex()),
    ("00" + bytes(range(1, 255)).hex(), "01 ff" + bytes(range(1, 255)).hex()),
    (bytes(range(1, 256)).hex(), "ff" + bytes(range(1, 255)).hex() + "02 ff"),
    (bytes(range(2, 256)).hex() + "00", "ff" + bytes(range(2, 256)).hex() + "01 01"),
    (bytes(range(3, 256)).hex() + "00 01", "fe" + bytes(range(3, 256)).hex() + "02 01"),
])
def test_cobs_reference_vectors(raw: str, enc: str) -> None:
    raw_b, enc_b = bytes.fromhex(raw), bytes.fromhex(enc)
    assert cobs_encode(raw_b) == enc_b
    assert cobs_decode(enc_b) == raw_b


def test_cobs_round_trip_and_errors() -> None:
    rng = random.Random(2)
    for n in list(range(0, 600, 13)) + [253, 254, 255, 508, 509]:
        data = bytes(rng.choice([0, 0, 1, 2, 255]) if rng.random() < 0.3 else rng.randrange(256) for _ in range(n))
        enc = cobs_encode(data)
        assert 0 not in enc and len(enc) <= len(data) + 1 + len(data) // 254
        assert cobs_decode(enc) == data
    with pytest.raises(ProtocolError, match="cobs"):
        cobs_decode(b"\x05\x01\x02")      # code points past the end
    with pytest.raises(ProtocolError, match="cobs"):
        cobs_decode(b"\x03\x01\x00\x02")  # a zero inside a frame


@pytest.mark.parametrize("name, expr, seq, wire", VECTORS, ids=[v[0] for v in VECTORS])
def test_vector(name: str, expr: str, seq: int, wire: str) -> None:
    msg = build(expr)
    expected = bytes.fromhex(wire)
    assert encode_frame(msg, seq) == expected
    frame = decode_frame(expected[:-1])
    assert frame.seq == seq and frame.message == msg
    decoder = FrameDecoder()
    assert [f.message for f in decoder.feed(expected)] == [msg]
    # The CRC-32 is over header + payload, little-endian, as the spec says.
    body = cobs_decode(expected[:-1])
    assert struct.unpack("<I", body[-4:])[0] == crc32_reference(body[:-4])
    assert body[0] == 2 and body[1] == int(type(msg).TYPE) and struct.unpack("<H", body[2:4])[0] == seq


def test_spec_shows_the_same_vectors() -> None:
    spec = SPEC.read_text()
    for name, _, seq, wire in VECTORS:
        pattern = rf"^{re.escape(name)}  seq={seq}  [^\n]*\n(?:[^\n]*\n){{0,2}}  wire: {re.escape(wire)}$"
        assert re.search(pattern, spec, re.M), f"vector {name} missing from {SPEC} or its bytes differ"


def test_state_equality_is_bitwise_and_ignores_host_metadata() -> None:
    nan = np.array([np.nan, 1.0], np.float32)
    a = State(5, nan, [], 0, 3, seq=1, rx_time=10.0)
    b = State(5, nan.copy(), [], 0, 3, seq=2, rx_time=11.0)
    assert a == b
    assert a != State(5, [np.float32(-0.0), 1.0], [], 0, 3)
    assert State(5, [0.0, 1.0]) != State(5, [-0.0, 1.0])  # bit patterns differ
    assert a.positions.flags.writeable is False


def test_every_message_type_round_trips() -> None:
    from firmware_bridge.protocol import MESSAGE_CLASSES
    seen = {type(build(expr)) for _, expr, _, _ in VECTORS}
    assert seen == set(MESSAGE_CLASSES.values())


def _raw(msg_type: int, payload: bytes, seq: int = 1, version: int = PROTOCOL_VERSION) -> bytes:
    return encode_raw_frame(msg_type, seq, payload, version)


BAD_FRAMES = {
    "cobs": b"\x09\x01\x02\x00",
    "crc": bytes([b ^ (0x10 if i == 6 else 0) for i, b in enumerate(encode_frame(Hello(nonce=9), 3))]),
    "short": cobs_encode(b"\x02\x05\x00\x00\x01\x02\x03") + b"\x00",   # 7 bytes: header + CRC-32 is 8
    "version": encode_frame(Hello(), 1, version=3),
    "type": _raw(0x7F, b""),
    "length": _raw(MsgType.STATE, State(1, [1.0, 2.0]).encode_payload()[:-1]),
    "payload": _raw(MsgType.JOINT_COMMAND, b"\x03\x00"),  # reserved flag bit set
}


@pytest.mark.parametrize("reason", sorted(BAD_FRAMES))
def test_corrupt_frames_dropped_and_counted(reason: str) -> None:
    decoder = FrameDecoder()
    good = encode_frame(JointCommand([1.0, 2.0]), 5)
    frames = decoder.feed(good + BAD_FRAMES[reason] + good)
    assert [f.seq for f in frames] == [5, 5]  # the bad frame vanished, its neighbours survived
    assert decoder.errors[reason] == 1 and decoder.errors_total == 1
    with pytest.raises(ProtocolError) as info:
        decode_frame(BAD_FRAMES[reason][:-1])
    assert info.value.reason == reason


@pytest.mark.parametrize("payload, what", [
    (b"\x02", "EStop engage byte"), (b"\x01\x01\x00", "trailing"),
])
def test_bad_estop_payloads(payload: bytes, what: str) -> None:
    with pytest.raises(ProtocolError, match=what):
        decode_frame(_raw(MsgType.ESTOP, payload)[:-1])


def test_a_v1_frame_is_dropped_and_named_version_1() -> None:
    v1 = encode_frame(Hello(), 1, version=1, check=CRC16_V1)
    decoder = FrameDecoder()
    assert decoder.feed(v1) == [] and decoder.errors["version"] == 1 and decoder.last_bad_version == 1
    # A v2 header under a CRC-16 is just a CRC failure.
    assert FrameDecoder().feed(encode_frame(Hello(), 1, check=CRC16_V1)) == []


@pytest.mark.parametrize("payload, reason", [
    (bytes(13), "length"), (bytes(15), "length"),            # Hello is 14 bytes in v2
    (bytes(13) + b"\x02", "payload"),                        # reserved Hello flag bit
])
def test_bad_hello_payloads(payload: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_frame(_raw(MsgType.HELLO, payload)[:-1])
    assert info.value.reason == reason


def test_bad_utf8_and_unknown_fault_code() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_frame(_raw(MsgType.FAULT, b"\x01\x02\xff\xfe")[:-1])
    assert info.value.reason == "payload"
    fault = decode_frame(encode_frame(Fault(200, "future"), 1)[:-1]).message
    assert fault.code == 200 and not isinstance(fault.code, FaultCode)


def test_oversize_garbage_is_bounded_and_resyncs() -> None:
    decoder = FrameDecoder()
    good = encode_frame(EStop(True), 9)
    frames = decoder.feed(b"\x01" * (MAX_ENCODED * 3) + b"\x00" + good)
    assert [f.message for f in frames] == [EStop(True)]
    assert decoder.errors["oversize"] == 1
    # Chunked delivery, byte by byte, gives the same result.
    decoder = FrameDecoder()
    out = []
    for b in b"\x07" * (MAX_ENCODED + 10) + b"\x00" + good + good:
        out += decoder.feed(bytes([b]))
        assert len(decoder._buf) <= MAX_ENCODED
    assert len(out) == 2 and decoder.errors["oversize"] == 1


def test_largest_frame_fits_and_one_more_byte_does_not() -> None:
    fits = Fault(FaultCode.INTERNAL, "x" * 255)
    assert len(fits.encode_payload()) < MAX_PAYLOAD
    assert MAX_PAYLOAD == 504                                                  # 512 - 4 header - 4 CRC-32
    state = State(1, np.zeros(100, np.float32), np.zeros(22, np.float32))  # 14 + 4 * 122 = 502 bytes
    assert decode_frame(encode_frame(state, 1)[:-1]).message == state
    edge = JointCommand(np.zeros(125, np.float32))                          # 2 + 4 * 125 = 502 bytes
    fault = Fault(FaultCode.INTERNAL, "x" * 255)
    assert decode_frame(encode_frame(edge, 1)[:-1]).message == edge
    assert decode_frame(encode_frame(fault, 1)[:-1]).message == fault
    # Exactly 504 payload bytes: 14 fixed + (1 + 149) firmware string + 20 joints x 17 bytes.
    biggest = Capabilities("f" * 149, ("",) * 20, np.zeros(20), np.ones(20), np.zeros(20))
    assert len(biggest.encode_payload()) == MAX_PAYLOAD
    assert decode_frame(encode_frame(biggest, 1)[:-1]).message == biggest
    with pytest.raises(ProtocolError, match="encode"):
        encode_frame(Capabilities("f" * 150, ("",) * 20, np.zeros(20), np.ones(20), np.zeros(20)), 1)
    with pytest.raises(ProtocolError, match="encode"):
        encode_frame(State(1, np.zeros(100, np.float32), np.zeros(23, np.float32)), 1)  # 506 bytes


@pytest.mark.parametrize("build_bad, match", [
    (lambda: encode_frame(Hello(), 70000), "seq"),
    (lambda: encode_frame(Hello(), -1), "seq"),
    (lambda: encode_frame("hello", 1), "not a protocol message"),
    (lambda: encode_frame(Fault(FaultCode.LIMIT, "é" * 200), 1), "255"),
    (lambda: encode_frame(JointCommand(np.zeros(300)), 1), "joint count"),
    (lambda: encode_frame(Capabilities("fw", ("a",), [0.0], [1.0, 2.0], [0.0]), 1), "per joint"),
    (lambda: encode_frame(Reset(seed=-1), 1), "seed"),
    (lambda: JointCommand([[1.0, "x"]]), "targets"),
])
def test_encode_errors_are_protocol_errors_with_one_line(build_bad, match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as info:
        build_bad()
    assert "\n" not in str(info.value)


def test_reasons_are_stable() -> None:
    assert set(REASONS) >= {"cobs", "crc", "short", "version", "type", "length", "payload", "oversize"}
    assert FrameDecoder().errors == {r: 0 for r in REASONS}
