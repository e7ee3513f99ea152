"""Every robot State is checked against the device's Capabilities before it becomes an observation.

A State with the wrong number of joints or extras, a non-finite value, or a position further outside
the device's limits than a margin is "bad": the loop never pushes it into the observation history
(it holds instead), counts it, and stops the run after `max_bad` bad States in a row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from runtime.robot_config import DEFAULT_MAX_BAD_STATES, DEFAULT_STATE_MARGIN


@dataclass
class StateCheck:
    """Checks States of one device; counts bad ones (total, in a row, by reason)."""
    joint_names: tuple[str, ...]
    extra_names: tuple[str, ...]
    lower: np.ndarray                 # the device's position limits (Capabilities)
    upper: np.ndarray
    margin_fraction: float = DEFAULT_STATE_MARGIN
    max_bad: int = DEFAULT_MAX_BAD_STATES
    bad_total: int = 0
    bad_in_row: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    last_error: str = ""

    @classmethod
    def for_device(cls, caps: Any, margin_fraction: float = DEFAULT_STATE_MARGIN,
                   max_bad: int = DEFAULT_MAX_BAD_STATES) -> "StateCheck":
        lo = np.asarray(caps.lower, np.float64).reshape(-1)
        hi = np.asarray(caps.upper, np.float64).reshape(-1)
        return cls(tuple(caps.joint_names), tuple(caps.extra_names), lo, hi, float(margin_fraction), int(max_bad))

    @property
    def margin(self) -> np.ndarray:
        return self.margin_fraction * (self.upper - self.lower)

    def problem(self, state: Any) -> Optional[tuple[str, str]]:
        """(reason key, one-line description) of what is wrong with `state`, or None when it is fine."""
        if state is None:
            return "missing", "no State"
        try:
            pos = np.asarray(state.positions, np.float64).reshape(-1)
            ext = np.asarray(state.extras, np.float64).reshape(-1)
        except (TypeError, ValueError, AttributeError) as exc:
            return "malformed", f"State is malformed ({exc})"
        nj, ne = len(self.joint_names), len(self.extra_names)
        if pos.size != nj:
            return "joint count", f"State has {pos.size} joint positions, the device declared {nj}"
        if ext.size != ne:
            return "extra count", f"State has {ext.size} extras, the device declared {ne}"
        for values, names, what in ((pos, self.joint_names, "position"), (ext, self.extra_names, "extra")):
            bad = ~np.isfinite(values)
            if bad.any():
                i = int(np.argmax(bad))
                return "non-finite", f"State {what} {names[i]} is {values[i]!r}"
        m = self.margin
        out = (pos < self.lower - m) | (pos > self.upper + m)
        if out.any():
            i = int(np.argmax(out))
            return "out of limits", (f"State position {self.joint_names[i]} = {pos[i]:g} is outside the device "
                                     f"limits [{self.lower[i]:g}, {self.upper[i]:g}] by more than {m[i]:g}")
        return None

    def check(self, state: Any) -> bool:
        """True for a good State (resets the in-a-row count); False for a bad one (counted)."""
        p = self.problem(state)
        if p is None:
            self.bad_in_row = 0
            return True
        key, text = p
        self.bad_total += 1
        self.bad_in_row += 1
        self.by_reason[key] = self.by_reason.get(key, 0) + 1
        self.last_error = text
        return False

    @property
    def exhausted(self) -> bool:
        """Too many bad States in a row: the run must stop."""
        return self.bad_in_row >= self.max_bad

    def stop_reason(self) -> str:
        return f"{self.bad_in_row} bad States in a row (last: {self.last_error})"

    def as_dict(self) -> dict[str, Any]:
        return {"bad_states": self.bad_total, "by_reason": dict(self.by_reason), "last_error": self.last_error,
                "margin_fraction": self.margin_fraction, "max_bad_in_row": self.max_bad}

