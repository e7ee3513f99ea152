"""The Franka link's settings (arm, realtime, late_commands), and the ONE place where the environment
variables IMLE_FRANKA_ARM, IMLE_FRANKA_REALTIME and IMLE_FRANKA_LATE_COMMANDS are read: a documented
fallback for a setting the caller leaves as None. Given settings never look at the environment."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Optional, Union

from .arms import ARMS

ENV_ARM = "IMLE_FRANKA_ARM"
ENV_REALTIME = "IMLE_FRANKA_REALTIME"
ENV_LATE_COMMANDS = "IMLE_FRANKA_LATE_COMMANDS"
LATE_COMMANDS = ("dropped", "applied")
_TRUE = ("enforce", "1", "on", "true", "yes")
_FALSE = ("ignore", "0", "off", "false", "no")


@dataclass(frozen=True)
class FrankaSettings:
    """What FrankaRobot runs with, every field resolved."""
    arm: str              # a key of ARMS: "fr3", "fer" (Panda)
    realtime: bool        # libfranka RealtimeConfig.kEnforce (True) or kIgnore (False)
    late_commands: str    # "dropped" (the FCI) or "applied" (franka-sim)


def _env(name: str) -> Optional[str]:
    value = os.environ.get(name)
    return value if value is not None and value.strip() else None


def arm_for(value: Optional[str]) -> str:
    """fr3 | fer | panda; None: $IMLE_FRANKA_ARM, else fr3."""
    arm = (value if value is not None else _env(ENV_ARM) or "fr3").strip().lower()
    if arm not in ARMS:
        source = "arm" if value is not None else f"${ENV_ARM}"
        raise ValueError(f"unknown Franka arm {arm!r} (from {source}); known: {', '.join(sorted(ARMS))}")
    return arm


def realtime_for(value: Union[bool, str, None]) -> bool:
    """True/False, or "enforce"/"ignore"; None: $IMLE_FRANKA_REALTIME, else enforce."""
    if isinstance(value, bool):
        return value
    source = "realtime" if value is not None else f"${ENV_REALTIME}"
    text = (value if value is not None else _env(ENV_REALTIME) or "enforce").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{source}={text!r}: use enforce or ignore")


def late_commands_for(value: Optional[str], host: str) -> str:
    """What the peer does with a command that misses its cycle: "dropped" (the FCI) or "applied"
    (franka-sim). None: $IMLE_FRANKA_LATE_COMMANDS, else "auto" = "applied" on a loopback host (where
    only franka-sim can be) and "dropped" anywhere else."""
    text = (value or _env(ENV_LATE_COMMANDS) or "auto").strip().lower()
    if text == "auto":
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        return "applied" if loopback else "dropped"
    if text not in LATE_COMMANDS:
        raise ValueError(f"late_commands={text!r}: use dropped (the FCI), applied (franka-sim) or auto")
    return text


def resolve_settings(host: str, arm: Optional[str] = None, realtime: Union[bool, str, None] = None,
                     late_commands: Optional[str] = None) -> FrankaSettings:
    """Each setting given wins; one left as None falls back to its environment variable, then its default."""
    return FrankaSettings(arm_for(arm), realtime_for(realtime), late_commands_for(late_commands, host))
