"""FrankaStats: LinkStats plus what the 1 kHz control loop counts."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ..robot import LinkStats


@dataclass
class FrankaStats(LinkStats):
    """LinkStats plus what the 1 kHz control loop counts."""
    mode: str = "starting"
    control_cycles: int = 0          # commands written to the arm
    lost_cycles: int = 0             # robot cycles that passed without a command from us
    control_errors: int = 0          # libfranka exceptions (reflexes, network, ...)
    watchdog_trips: int = 0
    limit_clamps: int = 0            # targets clamped into the joint range
    stale_states: int = 0            # states whose q_d predated our last command (not followed)
    rejected_commands: int = 0       # refused: e-stopped, faulted, closed or non-finite
    command_success_rate: float = math.nan   # the arm's own count of commands received in time
    max_command_velocity: tuple = ()         # per joint, of the commanded signal, since connect
    max_command_acceleration: tuple = ()
    max_command_jerk: tuple = ()
    last_error: Optional[str] = None
