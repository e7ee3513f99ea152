"""The emulated device's plants: Push-T (gym-pusht physics) and a generic N-joint robot (numpy only).

    plant = build_plant("auto", source="PACKAGE_DIR_OR_TASK.toml", seed=0)

"auto": Push-T when the source's robot is Push-T's (joints agent_x, agent_y; every observation and
the success signal reported by the Push-T plant) and gym-pusht is importable, or when there is no
source at all; otherwise the joints plant.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Optional

from .base import Plant
from .joints import JointPlant, JointPlantConfig
from .layout import JointLayout, LayoutError, read_layout

PLANTS = ("auto", "pusht", "joints")
PUSHT_JOINTS = ("agent_x", "agent_y")
PUSHT_NAMES = PUSHT_JOINTS + ("block_x", "block_y", "block_angle", "coverage")

__all__ = ["PLANTS", "JointLayout", "JointPlant", "JointPlantConfig", "LayoutError", "Plant", "build_plant",
           "choose_plant", "read_layout"]


def gym_pusht_available() -> bool:
    try:
        return importlib.util.find_spec("gym_pusht") is not None
    except (ImportError, ValueError):
        return False


def is_pusht(layout: JointLayout) -> bool:
    """A robot Push-T's plant serves, by name: its joints, observations and success signal."""
    return (layout.joint_names == PUSHT_JOINTS and all(n in PUSHT_NAMES for n in layout.observed)
            and layout.success_signal in (None, *PUSHT_NAMES))


def choose_plant(kind: str, layout: Optional[JointLayout]) -> str:
    """'pusht' or 'joints' for a --plant choice (one-line LayoutError when it cannot be served)."""
    if kind not in PLANTS:
        raise LayoutError(f"--plant must be one of {', '.join(PLANTS)}, got {kind!r}")
    if kind == "auto":
        if layout is None:
            return "pusht"
        return "pusht" if is_pusht(layout) and gym_pusht_available() else "joints"
    if kind == "joints" and layout is None:
        return "joints"  # joints and limits from explicit options
    if kind == "pusht" and layout is not None and not is_pusht(layout):
        raise LayoutError(f"{layout.source}: joints {', '.join(layout.joint_names)} are not Push-T's "
                          f"({', '.join(PUSHT_JOINTS)}); use --plant joints")
    return kind


def build_plant(kind: str = "auto", source: Optional[str] = None, seed: int = 0,
                **joint_options: Any) -> Plant:
    """The plant for `kind` and an optional package/task `source`. joint_options: JointPlantConfig fields
    (joint_names, lower, upper, max_velocity, max_accel, max_step, latency_s, noise, control_dt, physics_dt);
    the joints plant takes them over what the source says. Raises LayoutError (one line), or ImportError
    for the Push-T plant without gym-pusht."""
    layout = read_layout(source) if source else None
    names = joint_options.pop("joint_names", None)
    if names:
        layout = JointLayout(tuple(names), source=source or "--joints") if layout is None else \
            _rename(layout, tuple(names))
    chosen = choose_plant(kind, layout)
    if chosen == "pusht":
        from .pusht import PushTPlant  # imports gym-pusht
        return PushTPlant(seed)
    if layout is None:
        raise LayoutError("the joints plant needs --from PACKAGE_OR_TASK or --joints with --lower/--upper")
    try:
        return JointPlant(JointPlantConfig.from_layout(layout, seed=seed, **joint_options))
    except LayoutError as exc:
        if kind == "auto" and is_pusht(layout):  # say why Push-T's own plant was not taken
            raise LayoutError(f"{exc}; the Push-T plant needs gym-pusht: pip install -e '.[sim]'") from None
        raise


def _rename(layout: JointLayout, names: tuple[str, ...]) -> JointLayout:
    if len(names) != len(layout.joint_names):
        raise LayoutError(f"--joints gives {len(names)} names, {layout.source} has {len(layout.joint_names)} joints")
    from dataclasses import replace
    return replace(layout, joint_names=names)
