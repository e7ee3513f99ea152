"""Frames: COBS(header | payload | CRC-32) followed by a 0x00 delimiter.

header = version u8, type u8, seq u16 (little-endian); CRC-32 (zlib.crc32) over header and payload,
stored little-endian (protocol version 2; version 1 used CRC-16/CCITT-FALSE).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

from .cobs import cobs_decode, cobs_encode
from .crc import crc16_ccitt_false, crc32
from .errors import REASONS, ProtocolError
from .messages import MESSAGE_CLASSES, PROTOCOL_VERSION, Message


@dataclass(frozen=True)
class FrameCheck:
    """The checksum at the end of a frame body: CRC32 in protocol v2. CRC16_V1 exists only so the
    integrity benchmark can measure what v1 let through on the same noisy bytes."""
    name: str
    size: int
    fmt: str
    fn: Callable[[bytes], int]


CRC32 = FrameCheck("CRC-32", 4, "<I", crc32)
CRC16_V1 = FrameCheck("CRC-16/CCITT-FALSE", 2, "<H", crc16_ccitt_false)

HEADER = struct.Struct("<BBH")
HEADER_SIZE = HEADER.size  # 4
CRC_SIZE = 4
MAX_FRAME = 512                            # header + payload + CRC, before COBS
MAX_PAYLOAD = MAX_FRAME - HEADER_SIZE - CRC_SIZE
MAX_ENCODED = MAX_FRAME + 1 + MAX_FRAME // 254   # worst-case COBS size, delimiter excluded
DELIMITER = b"\x00"


@dataclass(frozen=True)
class Frame:
    """A decoded frame: the sender's sequence number and the message."""
    seq: int
    message: Message
    version: int = PROTOCOL_VERSION


def encode_frame(message: Message, seq: int, version: int = PROTOCOL_VERSION, check: FrameCheck = CRC32) -> bytes:
    """Encode one message into a complete frame, delimiter included. Raises ProtocolError("encode")."""
    if type(message) not in MESSAGE_CLASSES.values():
        raise ProtocolError("encode", f"not a protocol message: {type(message).__name__}")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= 0xFFFF:
        raise ProtocolError("encode", f"seq must be an integer in [0, 65535], got {seq!r}")
    if not 0 <= version <= 0xFF:
        raise ProtocolError("encode", f"version must be in [0, 255], got {version!r}")
    try:
        payload = message.encode_payload()
    except (TypeError, ValueError, OverflowError, struct.error) as exc:
        raise ProtocolError("encode", f"{type(message).__name__}: {exc}") from None
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError("encode", f"{type(message).__name__} payload is {len(payload)} bytes; "
                                      f"the limit is {MAX_PAYLOAD}")
    body = HEADER.pack(version, int(message.TYPE), seq) + payload
    body += struct.pack(check.fmt, check.fn(body))
    return cobs_encode(body) + DELIMITER


def encode_raw_frame(msg_type: int, seq: int, payload: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    """Frame arbitrary payload bytes under any header (fault injection and tests: the CRC is valid,
    the content need not be)."""
    body = HEADER.pack(version & 0xFF, msg_type & 0xFF, seq & 0xFFFF) + bytes(payload)
    return cobs_encode(body + struct.pack("<I", crc32(body))) + DELIMITER


def decode_frame(encoded: bytes, check: FrameCheck = CRC32) -> Frame:
    """Decode one frame's COBS bytes (delimiter stripped). Raises ProtocolError, with .reason, only."""
    try:
        if len(encoded) > MAX_ENCODED:
            raise ProtocolError("oversize", f"{len(encoded)} bytes; the limit is {MAX_ENCODED}")
        raw = cobs_decode(encoded)
        if len(raw) < HEADER_SIZE + check.size:
            raise ProtocolError("short", f"{len(raw)} bytes; a frame has at least {HEADER_SIZE + check.size}")
        if len(raw) > MAX_FRAME:
            raise ProtocolError("oversize", f"{len(raw)} bytes; the limit is {MAX_FRAME}")
        body, (crc,) = raw[:-check.size], struct.unpack(check.fmt, raw[-check.size:])
        if check.fn(body) != crc:
            if check is CRC32 and raw[0] == 1 and _is_v1_frame(raw):
                # Still rejected; named so a handshake error can say the device speaks version 1.
                raise ProtocolError("version", f"protocol version 1 frame (CRC-16), expected {PROTOCOL_VERSION}")
            raise ProtocolError("crc", f"{check.name} 0x{crc:08x} != computed 0x{check.fn(body):08x}")
        version, mtype, seq = HEADER.unpack_from(body)
        if version != PROTOCOL_VERSION:
            raise ProtocolError("version", f"protocol version {version}, expected {PROTOCOL_VERSION}")
        cls = MESSAGE_CLASSES.get(mtype)
        if cls is None:
            raise ProtocolError("type", f"unknown message type 0x{mtype:02x}")
        return Frame(seq, cls.decode_payload(bytes(body[HEADER_SIZE:])), version)
    except ProtocolError:
        raise
    except Exception as exc:  # a codec bug must still surface as the codec's error type
        raise ProtocolError("internal", f"{type(exc).__name__}: {exc}") from exc


def _is_v1_frame(raw: bytes) -> bool:
    """A body that carries a valid protocol-v1 CRC-16 (an old device talking)."""
    body, (crc,) = raw[:-CRC16_V1.size], struct.unpack(CRC16_V1.fmt, raw[-CRC16_V1.size:])
    return CRC16_V1.fn(body) == crc


class FrameDecoder:
    """Streaming decoder: feed it arbitrary byte chunks, get whole valid frames back.

    Never raises on any input bytes. Rejected frames are counted in `errors[reason]` and dropped.
    Memory is bounded: a run of more than MAX_ENCODED bytes without a delimiter is discarded
    (counted once as "oversize") up to the next 0x00.
    """

    def __init__(self, check: FrameCheck = CRC32) -> None:
        self.check = check
        self._buf = bytearray()
        self._discarding = False
        self.frames_ok = 0
        self.errors: dict[str, int] = {reason: 0 for reason in REASONS}
        self.last_error: ProtocolError | None = None
        self.last_bad_version: int | None = None  # so a handshake error can say what the device speaks

    @property
    def errors_total(self) -> int:
        return sum(self.errors.values())

    def reset(self) -> None:
        """Forget any partial frame (e.g. after reopening the port)."""
        self._buf.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        data = bytes(data)
        start = 0
        while True:
            idx = data.find(0, start)
            chunk = data[start:] if idx < 0 else data[start:idx]
            if not self._discarding:
                if len(self._buf) + len(chunk) > MAX_ENCODED:
                    self._count(ProtocolError("oversize", f"no delimiter within {MAX_ENCODED} bytes"))
                    self._buf.clear()
                    self._discarding = True
                else:
                    self._buf += chunk
            if idx < 0:
                return frames
            if self._discarding:
                self._discarding = False  # the delimiter ends the garbage
            elif self._buf:  # empty frames (repeated delimiters) are idle fill, not errors
                self._decode(bytes(self._buf), frames)
            self._buf.clear()
            start = idx + 1

    def _decode(self, encoded: bytes, out: list[Frame]) -> None:
        try:
            frame = decode_frame(encoded, self.check)
        except ProtocolError as exc:
            self._count(exc)
            if exc.reason == "version":
                try:
                    self.last_bad_version = cobs_decode(encoded)[0]
                except ProtocolError:
                    pass
            return
        self.frames_ok += 1
        out.append(frame)

    def _count(self, exc: ProtocolError) -> None:
        self.errors[exc.reason if exc.reason in self.errors else "internal"] += 1
        self.last_error = exc
