"""CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, xorout 0 (check("123456789") = 0x29B1)."""
from __future__ import annotations

import binascii

CRC_INIT = 0xFFFF


def crc16_ccitt_false(data: bytes, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE of `data`. binascii.crc_hqx is exactly this polynomial, non-reflected, in C."""
    return binascii.crc_hqx(data, crc)
