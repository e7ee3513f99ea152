"""Where the objectives' random draws come from.

Outside training (tests, notebooks) a draw is an ordinary ``torch.randn``/``rand``/``randint`` on
torch's global generator. While training, the loop installs a :class:`BatchNoise` keyed by
(seed, step): every draw is made for the whole *global* batch from a generator seeded by
(seed, step, draw number), and each process keeps its own rows. N processes therefore draw exactly
what one process would for the same global batch (the 1-vs-2-process loss curves agree), and a
resumed run draws what an uninterrupted one would (nothing to restore: the draws depend on the step).
The cost is drawing the global batch's noise on every process: a few hundred kB, negligible next to
the m generator passes.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


class BatchNoise:
    """Draws for rows ``offset .. offset + local_batch`` of a ``global_batch`` at one training step."""

    def __init__(self, seed: int, step: int, offset: int, local_batch: int, global_batch: int,
                 device: torch.device | str):
        if offset < 0 or local_batch <= 0 or offset + local_batch > global_batch:
            raise ValueError(f"rows {offset}..{offset + local_batch} do not fit a global batch of {global_batch}")
        self.seed, self.step, self.offset = seed, step, offset
        self.local_batch, self.global_batch = local_batch, global_batch
        self.device = torch.device(device)
        self._gen = torch.Generator(device=self.device)
        self._draws = 0

    def _generator(self) -> torch.Generator:
        # a fresh, well-mixed 63-bit seed per (seed, step, draw): draws never overlap between steps
        key = np.random.SeedSequence([self.seed, self.step, self._draws]).generate_state(1, np.uint64)[0]
        self._draws += 1
        self._gen.manual_seed(int(key) >> 1)
        return self._gen

    def _rows(self, full: torch.Tensor) -> torch.Tensor:
        return full[self.offset:self.offset + self.local_batch]

    def _check(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if not shape or shape[0] != self.local_batch:
            raise ValueError(f"a training draw must be shaped [batch, ...] with batch {self.local_batch}, "
                             f"got {tuple(shape)}")
        return (self.global_batch, *shape[1:])

    def randn(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        full = torch.randn(self._check(shape), generator=self._generator(), device=self.device)
        return self._rows(full).to(device)

    def rand(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        full = torch.rand(self._check(shape), generator=self._generator(), device=self.device)
        return self._rows(full).to(device)

    def randint(self, high: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        full = torch.randint(0, high, self._check(shape), generator=self._generator(), device=self.device)
        return self._rows(full).to(device)


_current: BatchNoise | None = None


@contextmanager
def batch_noise(noise: BatchNoise | None) -> Iterator[BatchNoise | None]:
    """Route the objectives' draws through ``noise`` inside the block (None: torch's global generator)."""
    global _current
    previous, _current = _current, noise
    try:
        yield noise
    finally:
        _current = previous


def randn(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal [batch, ...]; an explicit ``generator`` wins over the installed batch noise."""
    if _current is None or generator is not None:
        return torch.randn(shape, device=device, generator=generator)
    return _current.randn(tuple(shape), device)


def rand(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    if _current is None:
        return torch.rand(shape, device=device)
    return _current.rand(tuple(shape), device)


def randint(high: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    if _current is None:
        return torch.randint(0, high, shape, device=device)
    return _current.randint(high, tuple(shape), device)
