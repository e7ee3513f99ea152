"""The one exception type the codec raises."""
from __future__ import annotations

# Why a frame was rejected. The streaming decoder counts drops under these keys.
REASONS = (
    "cobs",      # COBS structure broken (a code byte points past the end of the frame)
    "crc",       # CRC-32 mismatch
    "short",     # fewer bytes than header + CRC
    "version",   # header protocol version differs from ours
    "type",      # unknown message type
    "length",    # payload length does not match the message layout
    "payload",   # layout fine but a field is invalid (reserved bits, bad UTF-8, bad enum)
    "oversize",  # more than MAX_ENCODED bytes without a delimiter
    "internal",  # a codec bug; counted so a robot link never dies on it (tests assert it stays 0)
)


class ProtocolError(Exception):
    """A frame or message that cannot be encoded or decoded.

    `reason` is one of REASONS (or "encode" for a message that cannot be encoded).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
