"""Frames: COBS(header | payload | CRC-16) followed by a 0x00 delimiter.

header = version u8, type u8, seq u16 (little-endian); CRC-16/CCITT-FALSE over header and payload,
stored little-endian.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .cobs import cobs_decode, cobs_encode
from .crc import crc16_ccitt_false
from .errors import REASONS, ProtocolError
from .messages import MESSAGE_CLASSES, PROTOCOL_VERSION, Message

HEADER = struct.Struct("<BBH")
HEADER_SIZE = HEADER.size  # 4
CRC_SIZE = 2
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


def encode_frame(message: Message, seq: int, version: int = PROTOCOL_VERSION) -> bytes:
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
    body += struct.pack("<H", crc16_ccitt_false(body))
    return cobs_encode(body) + DELIMITER


def encode_raw_frame(msg_type: int, seq: int, payload: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    """Frame arbitrary payload bytes under any header (fault injection and tests: the CRC is valid,
    the content need not be)."""
    body = HEADER.pack(version & 0xFF, msg_type & 0xFF, seq & 0xFFFF) + bytes(payload)
    return cobs_encode(body + struct.pack("<H", crc16_ccitt_false(body))) + DELIMITER


def decode_frame(encoded: bytes) -> Frame:
    """Decode one frame's COBS bytes (delimiter stripped). Raises ProtocolError, with .reason, only."""
    try:
        if len(encoded) > MAX_ENCODED:
            raise ProtocolError("oversize", f"{len(encoded)} bytes; the limit is {MAX_ENCODED}")
        raw = cobs_decode(encoded)
        if len(raw) < HEADER_SIZE + CRC_SIZE:
            raise ProtocolError("short", f"{len(raw)} bytes; a frame has at least {HEADER_SIZE + CRC_SIZE}")
        if len(raw) > MAX_FRAME:
            raise ProtocolError("oversize", f"{len(raw)} bytes; the limit is {MAX_FRAME}")
        body, (crc,) = raw[:-CRC_SIZE], struct.unpack("<H", raw[-CRC_SIZE:])
        if crc16_ccitt_false(body) != crc:
            raise ProtocolError("crc", f"CRC 0x{crc:04x} != computed 0x{crc16_ccitt_false(body):04x}")
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


class FrameDecoder:
    """Streaming decoder: feed it arbitrary byte chunks, get whole valid frames back.

    Never raises on any input bytes. Rejected frames are counted in `errors[reason]` and dropped.
    Memory is bounded: a run of more than MAX_ENCODED bytes without a delimiter is discarded
    (counted once as "oversize") up to the next 0x00.
    """

    def __init__(self) -> None:
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
            frame = decode_frame(encoded)
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
