"""Frame checksums.

Protocol v2 frames carry CRC-32 (IEEE 802.3, the zlib/PNG/Ethernet CRC: reflected poly 0xEDB88320,
init and xorout 0xFFFFFFFF; check("123456789") = 0xCBF43926). CRC-16/CCITT-FALSE (v1) is kept for
the integrity benchmark's comparison and for naming what an old device speaks.
"""
from __future__ import annotations

import binascii
import zlib

CRC_INIT = 0xFFFF


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC of `data` (zlib.crc32: table-driven, in C)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def crc16_ccitt_false(data: bytes, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE of `data` (protocol v1). binascii.crc_hqx is exactly this polynomial, non-reflected."""
    return binascii.crc_hqx(data, crc)
