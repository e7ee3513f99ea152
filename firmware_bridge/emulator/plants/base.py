"""What the emulated device drives: a Plant. DeviceCore knows only this protocol."""
from __future__ import annotations

from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Plant(Protocol):
    """A simulated robot behind the emulated firmware.

    Joints are commanded by position target; extras are read-only measurements (a block's pose, a
    success signal). Arrays are float32 with one entry per joint. Real-time mode calls `substep` every
    `physics_dt` seconds of device time; lock-step calls `control_step` once per applied command.
    """

    kind: str                       # "push-t", "joints": shown in the firmware version
    joint_names: tuple[str, ...]
    extra_names: tuple[str, ...]

    @property
    def lower(self) -> np.ndarray: ...          # joint position limits
    @property
    def upper(self) -> np.ndarray: ...
    @property
    def max_step(self) -> np.ndarray: ...       # largest target change one command may make (0: no limit)
    @property
    def max_velocity(self) -> np.ndarray: ...
    @property
    def control_dt(self) -> float: ...          # simulated time of one lock-step control step
    @property
    def physics_dt(self) -> float: ...          # one real-time substep

    def reset(self, seed: Optional[int], state: Optional[Sequence[float]] = None) -> None:
        """Seeded reset, or to a given initial state; ValueError (the device refuses the Reset) for a bad one."""

    def positions(self) -> np.ndarray:
        """Measured joint positions (float32[n])."""

    def extras(self) -> np.ndarray:
        """Extra measurements (float32[k], k = len(extra_names))."""

    def control_step(self, target: np.ndarray) -> None:
        """Advance one control period towards `target` (lock-step)."""

    def substep(self, target: np.ndarray) -> None:
        """Advance one physics_dt towards `target` (real-time)."""

    def brake(self) -> np.ndarray:
        """Stop where it is (watchdog hold, e-stop); returns the hold target (float64[n])."""
