"""Push-T metrics with 95% confidence intervals.

Per episode: the maximum of gym-pusht's reward, ``clip(coverage / 0.95, 0, 1)``, over the episode,
and success = coverage above 0.95 at some step (gym-pusht's ``is_success``). Over episodes:
"score" is the mean of the per-episode maximum (Diffusion Policy's and LeRobot's "average max
overlap"), with a percentile-bootstrap CI; the success rate has a Wilson score interval (it stays
inside [0, 1] and is sensible at 0% and 100%, unlike the normal approximation).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass
class Interval:
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap_mean_ci(x: np.ndarray, resamples: int = 10000, seed: int = 0, level: float = 0.95) -> Interval:
    """Mean with a percentile-bootstrap interval (fixed seed: the same data always give the same interval)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    a = (1 - level) / 2
    return Interval(float(x.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a)))


def two_level_bootstrap_ci(groups: list[np.ndarray], resamples: int = 10000, seed: int = 0,
                           level: float = 0.95) -> Interval:
    """Mean of all values with a CI that resamples the groups (e.g. training runs) and then the values
    within each drawn group (episodes): it carries the run-to-run spread that an episode bootstrap of
    the pooled values leaves out."""
    groups = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    if not groups:
        return Interval(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    k = len(groups)
    pick = rng.integers(0, k, size=(resamples, k))  # level 1: which groups each replicate draws
    total = np.zeros(resamples)
    for i, g in enumerate(groups):  # level 2: an independent episode resample for every draw of group i
        r, _ = np.nonzero(pick == i)
        total += np.bincount(r, weights=g[rng.integers(0, len(g), size=(len(r), len(g)))].sum(axis=1),
                             minlength=resamples)
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    means = total / sizes[pick].sum(axis=1)
    a = (1 - level) / 2
    pooled = np.concatenate(groups)
    return Interval(float(pooled.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a)))


def wilson_ci(successes: int, n: int, z: float = Z95) -> Interval:
    """Rate with the Wilson score interval."""
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the edges (no 1e-18 round-off)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(p, low, high)


@dataclass
class EpisodeResult:
    episode: int
    seed: int
    max_reward: float  # max over steps of clip(coverage / 0.95, 0, 1)
    max_coverage: float
    success: bool  # coverage > 0.95 reached
    steps: int
    plans: int
    plan_latency_ms: float  # mean time of policy.act (inference + selection)
    wall_s: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Summary:
    episodes: int
    score: Interval  # average max reward ("average max overlap")
    success: Interval  # success rate
    mean_steps: float
    plan_latency_ms: float

    def to_dict(self) -> dict:
        d = asdict(self)
        return d


def summarize(results: list[EpisodeResult]) -> Summary:
    scores = np.array([r.max_reward for r in results])
    wins = int(sum(r.success for r in results))
    lat = [r.plan_latency_ms for r in results if r.plans]
    return Summary(episodes=len(results), score=bootstrap_mean_ci(scores), success=wilson_ci(wins, len(results)),
                   mean_steps=float(np.mean([r.steps for r in results])) if results else float("nan"),
                   plan_latency_ms=float(np.mean(lat)) if lat else float("nan"))
