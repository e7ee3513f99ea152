"""Consistent Overhead Byte Stuffing: removes every 0x00 so 0x00 can delimit frames."""
from __future__ import annotations

from .errors import ProtocolError


def cobs_encode(data: bytes) -> bytes:
    """Encode `data` (may contain zeros) into bytes with no zero. Overhead: 1 + len(data) // 254."""
    out = bytearray()
    blocks = bytes(data).split(b"\x00")
    last = len(blocks) - 1
    for i, block in enumerate(blocks):
        while len(block) >= 254:
            out.append(0xFF)
            out += block[:254]
            block = block[254:]
            if not block and i == last:
                return bytes(out)  # a full final group needs no trailing 0x01
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(encoded: bytes) -> bytes:
    """Inverse of cobs_encode. Raises ProtocolError("cobs") on malformed input."""
    out = bytearray()
    n = len(encoded)
    i = 0
    while i < n:
        code = encoded[i]
        if code == 0:
            raise ProtocolError("cobs", f"zero byte inside frame at offset {i}")
        end = i + code
        if end > n:
            raise ProtocolError("cobs", f"code {code} at offset {i} runs past the frame end ({n} bytes)")
        chunk = encoded[i + 1:end]
        if 0 in chunk:
            raise ProtocolError("cobs", "zero byte inside frame")
        out += chunk
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)
