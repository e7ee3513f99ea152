"""Which windows each training step uses, on one process or many.

Like ``torch.utils.data.DistributedSampler``: every epoch is a seeded permutation of all windows;
the global batch of step k is the next ``batch_size`` entries of the endless sequence
perm(epoch 0), perm(epoch 1), ..., and process r keeps its contiguous share of that batch. Within
an epoch every window is used once, and the processes' shares are disjoint. The batch is a pure
function of (seed, step), so a resumed run (on any number of processes) sees the batches an
uninterrupted one would, with no sampler state in the checkpoint.
"""
from __future__ import annotations

import numpy as np


class WindowSampler:
    def __init__(self, n_windows: int, global_batch: int, seed: int, rank: int = 0, world: int = 1):
        if n_windows <= 0:
            raise ValueError(f"the dataset has no training windows (n_windows {n_windows})")
        if world <= 0 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world} processes")
        if global_batch % world:
            raise ValueError(f"--batch-size {global_batch} does not split evenly across {world} processes; "
                             f"use a multiple of {world}")
        self.n, self.global_batch, self.seed = n_windows, global_batch, seed
        self.rank, self.world = rank, world
        self.local_batch = global_batch // world
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 4:  # a batch spans at most a few epochs; keep the cache small
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def global_indices(self, step: int) -> np.ndarray:
        """Window indices of the global batch of (0-based) ``step``."""
        start, end = step * self.global_batch, (step + 1) * self.global_batch
        first, last = start // self.n, (end - 1) // self.n
        seq = np.concatenate([self._perm(e) for e in range(first, last + 1)])
        return seq[start - first * self.n:end - first * self.n]

    def local_indices(self, step: int) -> np.ndarray:
        """This process's share of the global batch of ``step``."""
        lo = self.rank * self.local_batch
        return self.global_indices(step)[lo:lo + self.local_batch]

    @property
    def offset(self) -> int:
        """Row of the global batch where this process's share starts."""
        return self.rank * self.local_batch
