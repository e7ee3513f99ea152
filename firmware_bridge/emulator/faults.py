"""Seeded fault injection between the emulated device and its wire: corrupt bytes, drop frames."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional


@dataclass
class FaultConfig:
    corrupt_one_in: int = 0      # corrupt 1 in N bytes the device sends (0 = off)
    corrupt_rx_one_in: int = 0   # corrupt 1 in N bytes the device receives (0 = off)
    drop_fraction: float = 0.0   # drop this fraction of frames the device sends
    seed: int = 0


class FaultInjector:
    """Line noise with a fixed seed, so a failing run can be replayed."""

    def __init__(self, config: Optional[FaultConfig] = None) -> None:
        self.config = config or FaultConfig()
        self._rng = random.Random(self.config.seed)
        self.tx_dropped = 0          # frames not sent
        self.tx_corrupted = 0        # frames sent with at least one corrupted byte
        self.rx_corrupted_bytes = 0  # bytes corrupted on the way in
        self._tx_left = self._gap(self.config.corrupt_one_in)
        self._rx_left = self._gap(self.config.corrupt_rx_one_in)

    def set_corruption(self, tx_one_in: int, rx_one_in: int) -> None:
        self.config.corrupt_one_in, self.config.corrupt_rx_one_in = tx_one_in, rx_one_in
        self._tx_left = self._gap(tx_one_in)
        self._rx_left = self._gap(rx_one_in)

    def set_drop(self, fraction: float) -> None:
        self.config.drop_fraction = fraction

    def _gap(self, one_in: int) -> float:
        """Bytes until the next corruption: geometric with p = 1/one_in (memoryless, like noise)."""
        if one_in <= 0:
            return math.inf
        if one_in == 1:
            return 0
        u = 1.0 - self._rng.random()
        return math.floor(math.log(u) / math.log(1.0 - 1.0 / one_in))

    def _corrupt(self, data: bytes, left: float, one_in: int) -> tuple[bytes, float, int]:
        if left >= len(data):
            return data, left - len(data), 0
        out = bytearray(data)
        hits = 0
        pos = int(left)
        while pos < len(out):
            out[pos] ^= self._rng.randrange(1, 256)  # always changes the byte (may create a 0x00)
            hits += 1
            pos += 1 + self._gap(one_in)
        return bytes(out), pos - len(out), hits

    def on_tx(self, frame: bytes) -> Optional[bytes]:
        """The bytes to put on the wire for one outgoing frame, or None to drop it."""
        if self.config.drop_fraction > 0 and self._rng.random() < self.config.drop_fraction:
            self.tx_dropped += 1
            return None
        frame, self._tx_left, hits = self._corrupt(frame, self._tx_left, self.config.corrupt_one_in)
        if hits:
            self.tx_corrupted += 1
        return frame

    def on_rx(self, data: bytes) -> bytes:
        data, self._rx_left, hits = self._corrupt(data, self._rx_left, self.config.corrupt_rx_one_in)
        self.rx_corrupted_bytes += hits
        return data
