"""The Franka Control Interface's timing facts, and importing pylibfranka (an optional extra)."""
from __future__ import annotations

import importlib
from typing import Any

from ..robot import LinkError

DT = 0.001          # the FCI cycle: one joint command per millisecond
MAX_LOST_CYCLES = 20  # the FCI stops a motion after this many consecutive cycles without a command
REFERENCE_TOLERANCE = 3e-7  # rad: q_d's float32 rounding on the wire, plus a little
VELOCITY_TOLERANCE = 1e-5   # rad/s: dq_d's float32 rounding, plus a little
N_JOINTS = 7


class FrankaImportError(LinkError, ImportError):
    """pylibfranka is not installed."""


def import_pylibfranka() -> Any:
    try:
        return importlib.import_module("pylibfranka")
    except ImportError as exc:
        raise FrankaImportError(
            f"pylibfranka is not installed ({exc}); install the franka extra: pip install 'imle-policy[franka]'"
        ) from None
