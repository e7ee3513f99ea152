"""Random valid messages and frame mutations for the codec tests (plain `random`, for speed)."""
from __future__ import annotations

import random


import numpy as np

from firmware_bridge.protocol import (Ack, Capabilities, DEVICE_STATUS_FIELDS, DeviceStatus, EStop, Fault, Goodbye,
                                      Heartbeat, Hello, JointCommand, Reset, State, StatusRequest, cobs_encode)


def _floats(rng: random.Random, n: int) -> np.ndarray:
    # Any bit pattern, NaNs and infinities included: the codec must carry floats bit-exactly.
    return np.frombuffer(rng.randbytes(4 * n), dtype="<f4").copy() if rng.random() < 0.3 else \
        np.array([rng.uniform(-1e3, 1e3) for _ in range(n)], np.float32)


def _text(rng: random.Random, max_len: int = 12) -> str:
    return "".join(rng.choice("abcxyz_0129 éλ") for _ in range(rng.randrange(max_len + 1)))


def random_message(rng: random.Random):
    kind = rng.randrange(12)
    if kind == 0:
        return Hello(rng.randrange(256), rng.getrandbits(32), rng.getrandbits(64), rng.random() < 0.5)
    if kind == 1:
        n, k = rng.randrange(0, 8), rng.randrange(0, 6)
        return Capabilities(_text(rng, 20), tuple(_text(rng, 6) for _ in range(n)), _floats(rng, n),
                            _floats(rng, n), _floats(rng, n), tuple(_text(rng, 6) for _ in range(k)),
                            rng.randrange(65536), rng.getrandbits(32), rng.randrange(256), rng.getrandbits(32),
                            rng.randrange(256), _floats(rng, n))
    if kind == 11:
        return Goodbye(rng.getrandbits(64))
    if kind in (2, 3, 4):  # states dominate real traffic
        return State(rng.getrandbits(64), _floats(rng, rng.randrange(0, 10)), _floats(rng, rng.randrange(0, 8)),
                     rng.randrange(65536), rng.randrange(65536))
    if kind == 5:
        return JointCommand(_floats(rng, rng.randrange(0, 10)), rng.random() < 0.8)
    if kind == 6:
        return rng.choice([Heartbeat(), StatusRequest(), EStop(rng.random() < 0.5)])
    if kind == 7:
        return Fault(rng.randrange(256), _text(rng, 40))
    if kind == 8:
        return Reset(rng.getrandbits(64), _floats(rng, rng.randrange(0, 8)))
    if kind == 9:
        return Ack(rng.randrange(256), rng.randrange(65536), rng.randrange(256))
    return DeviceStatus(*(rng.getrandbits(32) for _ in DEVICE_STATUS_FIELDS))


# Corruptions CRC-32 detects with certainty, applied to the frame body before COBS (header + payload
# + CRC): any 1-4 flipped bits (Hamming distance 5 up to 2974 bits; these bodies are < 300 bytes) and
# any burst within 32 bits.
GUARANTEED = ("flip1", "flip2", "flip3", "flip4", "burst32")
# Corruptions of the encoded bytes: structure changes, random multi-byte noise, many flipped bits.
# Detected by CRC, COBS structure, version, type and length checks; CRC-32 alone leaves ~2^-32.
ARBITRARY = ("subst", "insert", "delete", "truncate", "dup_chunk", "splice", "garbage", "zero_insert", "flip_many")


def mutate_body(rng: random.Random, body: bytes, kind: str) -> bytes:
    """Mutate the decoded frame body (guaranteed-detection classes); returns new COBS bytes."""
    out = bytearray(body)
    nbits = len(out) * 8
    if kind in ("flip1", "flip2", "flip3", "flip4"):
        count = min(int(kind[-1]), nbits)
        for bit in rng.sample(range(nbits), count):
            out[bit // 8] ^= 1 << (bit % 8)
    elif kind == "burst32":
        length = rng.randrange(2, 33)             # burst of `length` bits, first and last flipped
        start = rng.randrange(0, nbits - length + 1)
        pattern = (1 | (1 << (length - 1))) | (rng.getrandbits(length) & ((1 << length) - 1))
        for i in range(length):
            if pattern >> i & 1:
                bit = start + i
                out[bit // 8] ^= 0x80 >> (bit % 8)
    return cobs_encode(bytes(out))


def mutate_encoded(rng: random.Random, enc: bytes, other: bytes, kind: str) -> bytes:
    """Mutate COBS bytes (delimiter excluded) like line noise would; the result always differs."""
    out = bytearray(enc)
    if kind == "subst":
        for pos in rng.sample(range(len(out)), min(len(out), rng.randrange(1, 5))):
            out[pos] ^= rng.randrange(1, 256)
    elif kind == "insert":
        pos = rng.randrange(len(out) + 1)
        out[pos:pos] = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 5)))
    elif kind == "delete":
        pos = rng.randrange(len(out))
        del out[pos:pos + rng.randrange(1, 5)]
    elif kind == "truncate":
        del out[rng.randrange(len(out)):]
    elif kind == "dup_chunk":
        a = rng.randrange(len(out))
        b = rng.randrange(a + 1, len(out) + 1)
        out[b:b] = out[a:b]
    elif kind == "splice":
        cut = rng.randrange(1, len(out))
        out = out[:cut] + bytearray(other[rng.randrange(len(other)):])
        if bytes(out) == enc:
            out.append(rng.randrange(1, 256))
    elif kind == "garbage":
        out = bytearray(rng.randbytes(rng.randrange(1, 80)))
    elif kind == "flip_many":
        body = bytearray(cobs_decode_safe(enc))
        for bit in rng.sample(range(len(body) * 8), min(len(body) * 8, rng.randrange(5, 40))):
            body[bit // 8] ^= 1 << (bit % 8)
        out = bytearray(cobs_encode(bytes(body)))
    elif kind == "zero_insert":
        pos = rng.randrange(1, len(out))
        out[pos:pos] = b"\x00"
    return bytes(out)


def cobs_decode_safe(enc: bytes) -> bytes:
    from firmware_bridge.protocol import cobs_decode
    return cobs_decode(enc)


def split_chunks(rng: random.Random, data: bytes) -> list[bytes]:
    """Cut data at random points, as a serial driver would deliver it."""
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(0, 4)))) if len(data) > 1 else []
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def raw_body(frame: bytes) -> bytes:
    """Frame body (header + payload + CRC) of an encoded frame with delimiter."""
    from firmware_bridge.protocol import cobs_decode
    return cobs_decode(frame[:-1])


