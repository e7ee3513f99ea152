"""Min-max normalisation to [-1, 1] with statistics of the episodes actually used."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class MinMax:
    """Per-dimension affine map raw -> [-1, 1]. Constant dimensions map to 0 (no divide by zero)."""

    min: list[float]
    max: list[float]

    @classmethod
    def fit(cls, values: np.ndarray) -> "MinMax":
        flat = np.asarray(values, dtype=np.float64).reshape(-1, values.shape[-1])
        lo, hi = flat.min(0), flat.max(0)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all() and np.isfinite(hi - lo).all()):
            # a NaN or inf (or a float64 range that overflows) would normalise everything to NaN or 0
            raise ValueError(f"cannot normalise: per-dimension min {lo.tolist()} / max {hi.tolist()} are not finite")
        return cls(min=lo.tolist(), max=hi.tolist())

    def _scale_offset(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.asarray(self.min, np.float64), np.asarray(self.max, np.float64)
        span = hi - lo
        span = np.where(span < 1e-8, 2.0, span)  # constant dim: x - lo = 0 -> -1 + 1 = 0 below
        scale = 2.0 / span
        offset = -1.0 - lo * scale
        offset = np.where(hi - lo < 1e-8, -lo * scale, offset)
        return scale, offset

    @property
    def scale(self) -> np.ndarray:
        return self._scale_offset()[0].astype(np.float32)

    @property
    def offset(self) -> np.ndarray:
        return self._scale_offset()[1].astype(np.float32)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float32) * self.scale + self.offset).astype(np.float32)

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        return ((np.asarray(y, np.float32) - self.offset) / self.scale).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)
