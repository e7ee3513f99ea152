"""Joint-space limits of the Franka arm models (datasheets, libfranka rate_limiting.h)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ArmLimits:
    """Joint-space limits of one Franka arm model (datasheet / libfranka rate_limiting.h)."""
    name: str
    joint_names: tuple[str, ...]
    lower: tuple[float, ...]          # rad
    upper: tuple[float, ...]          # rad
    max_velocity: tuple[float, ...]   # rad/s
    max_acceleration: tuple[float, ...]  # rad/s^2
    max_jerk: tuple[float, ...]       # rad/s^3
    # FR3 only: position-dependent velocity envelope (libfranka joint_velocity_limits.cpp):
    #   upper(q) = min(vmax, max(0, -offset + sqrt(2 * decel * (q_upper - q)))), mirrored below.
    velocity_offset: Optional[tuple[float, ...]] = None
    deceleration: Optional[tuple[float, ...]] = None
    urdf_lower: Optional[tuple[float, ...]] = None  # the envelope's reference stops (the URDF's)
    urdf_upper: Optional[tuple[float, ...]] = None


# Franka Research 3 datasheet ("Robot and interface specifications"), FCI joint limits.
FR3 = ArmLimits(
    name="fr3",
    joint_names=tuple(f"fr3_joint{i}" for i in range(1, 8)),
    lower=(-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159),
    upper=(2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159),
    max_velocity=(2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26),
    max_acceleration=(10.0,) * 7,
    max_jerk=(5000.0,) * 7,
    velocity_offset=(0.30, 0.20, 0.20, 0.30, 0.35, 0.35, 0.35),
    deceleration=(6.0, 2.585, 3.5, 4.0, 17.0, 5.5, 17.0),
    urdf_lower=(-2.7501, -1.7918, -2.9065, -3.0481, -2.8101, 0.54092, -3.0196),
    urdf_upper=(2.7501, 1.7918, 2.9065, -0.1458, 2.8101, 4.5205, 3.0196),
)

# Franka Emika Panda (FER) datasheet.
FER = ArmLimits(
    name="fer",
    joint_names=tuple(f"panda_joint{i}" for i in range(1, 8)),
    lower=(-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973),
    upper=(2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973),
    max_velocity=(2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100),
    max_acceleration=(15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0),
    max_jerk=(7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0),
)

ARMS = {"fr3": FR3, "fer": FER, "panda": FER}
