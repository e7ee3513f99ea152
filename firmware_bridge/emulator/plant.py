"""Compatibility name: the Push-T plant lives in plants/pusht.py, the Plant protocol in plants/base.py."""
from .plants.base import Plant
from .plants.pusht import (CONTROL_HZ, EXTRA_NAMES, JOINT_NAMES, LIMIT_HIGH, LIMIT_LOW, MAX_STEP_PX,
                           MAX_VELOCITY_PX_S, STATE_DIM, PushTPlant, make_pusht_env, reset_pusht)

__all__ = ["CONTROL_HZ", "EXTRA_NAMES", "JOINT_NAMES", "LIMIT_HIGH", "LIMIT_LOW", "MAX_STEP_PX", "MAX_VELOCITY_PX_S",
           "STATE_DIM", "Plant", "PushTPlant", "make_pusht_env", "reset_pusht"]
