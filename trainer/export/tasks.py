"""Per-task facts a package needs and a checkpoint does not hold: names of state columns and
action dimensions, the control period, the image channel order."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskInfo:
    state_names: tuple[str, ...]  # names of the replay buffer's data/state columns (all of them)
    action_names: tuple[str, ...]
    period_s: float
    channel_order: str = "RGB"


_PUSHT = TaskInfo(state_names=("agent_x", "agent_y", "block_x", "block_y", "block_angle"),
                  action_names=("target_x", "target_y"), period_s=0.1)  # Push-T runs at 10 Hz

TASKS: dict[str, TaskInfo] = {"pusht-state": _PUSHT, "pusht-image": _PUSHT}
DEFAULT_PERIOD_S = 0.1


def state_names(task: str, state_dims: tuple[int, ...] | list[int]) -> list[str]:
    """Names of the observed columns; generic ``state_<i>`` when the task or a column is unknown."""
    info = TASKS.get(task)
    return [info.state_names[i] if info and i < len(info.state_names) else f"state_{i}" for i in state_dims]


def action_names(task: str, dim: int) -> list[str]:
    info = TASKS.get(task)
    if info and len(info.action_names) == dim:
        return list(info.action_names)
    return [f"action_{i}" for i in range(dim)]


def period_s(task: str) -> float:
    info = TASKS.get(task)
    return info.period_s if info else DEFAULT_PERIOD_S


def channel_order(task: str) -> str:
    info = TASKS.get(task)
    return info.channel_order if info else "RGB"
