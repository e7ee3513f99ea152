"""Min-max normalisation to [-1, 1]: the one implementation the trainer (fit, torch buffers) and the
robot's runtime (numpy) share, so statistics mean the same thing on both sides."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CONSTANT_SPAN = 1e-8  # a dimension whose range is below this is constant: it maps to 0


def minmax_scale_offset(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``scale``, ``offset`` with raw -> ``raw * scale + offset`` in [-1, 1]; constant dimensions
    map to 0 (no divide by zero). Computed in float64, rounded once."""
    lo64, hi64 = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    const = hi64 - lo64 < CONSTANT_SPAN
    scale = 2.0 / np.where(const, 2.0, hi64 - lo64)
    offset = np.where(const, -lo64 * scale, -1.0 - lo64 * scale)
    return scale.astype(np.float32), offset.astype(np.float32)


@dataclass
class MinMax:
    """Per-dimension affine map raw -> [-1, 1] with the statistics of the data actually used."""

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

    @property
    def scale(self) -> np.ndarray:
        return minmax_scale_offset(self.min, self.max)[0]

    @property
    def offset(self) -> np.ndarray:
        return minmax_scale_offset(self.min, self.max)[1]

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float32) * self.scale + self.offset).astype(np.float32)

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        return ((np.asarray(y, np.float32) - self.offset) / self.scale).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)
