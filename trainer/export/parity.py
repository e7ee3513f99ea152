"""Action-error statistics between two implementations of a policy, in raw units and as a fraction of range."""
from __future__ import annotations

import numpy as np

from runtime.package import ErrorStats


def action_range(low: list[float], high: list[float]) -> np.ndarray:
    span = np.asarray(high, np.float64) - np.asarray(low, np.float64)
    return np.where(span < 1e-8, 1.0, span)  # a constant dimension: errors reported in raw units


def error_stats(a: np.ndarray, b: np.ndarray, low: list[float], high: list[float]) -> ErrorStats:
    """Errors of ``a`` against ``b`` ([..., A] raw actions); non-finite values count as infinite error."""
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    diff = np.where(np.isfinite(diff), diff, np.inf)
    frac = diff / action_range(low, high)
    return ErrorStats(max_abs=float(diff.max()), mean_abs=float(diff.mean()),
                      max_frac_of_range=float(frac.max()), mean_frac_of_range=float(frac.mean()),
                      p99_frac_of_range=float(np.percentile(frac, 99)))
