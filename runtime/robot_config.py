"""The operator's robot configuration file (`imle-run --robot-config FILE`, TOML).

The robot's limits belong to the robot: this file is where the operator narrows what the device
declares (Capabilities) and sets the loop's safety settings. A package can only narrow further.

    # robot.toml
    [robot]                    # which robot (optional; imle-run's --robot / --robot.FIELD override it)
    type = "serial"            # serial | emulator | franka (runtime.robots)
    port = "/dev/ttyACM0"      # that type's fields

    [obs_map]                  # policy observation name = robot name (only where they differ)
    block_angle = "block_theta"

    [joint_map]                # task joint name = robot joint name (only where they differ)
    agent_x = "x"

    [loop]
    state_margin = 0.05        # a State may lie this fraction of a joint's range outside its limits
    max_bad_states = 5         # stop the run after this many invalid States in a row
    on_device_fault = "stop"   # or "hold": what a refused command / device FAULT does to the run
    link_give_up_s = 30.0      # stop the run when the link stays lost this long

    [joints.agent_x]           # joints by the device's name; any subset of them
    lower = 10.0               # position box (units of the device)
    upper = 500.0
    max_velocity = 200.0       # units per second (times the period: a per-command step limit)
    max_step = 30.0            # units per command

Every value is checked when the file is read: unknown keys, non-numbers, non-finite numbers,
lower >= upper and non-positive rates are refused with one line naming the file, joint, key and
value. Naming a joint the robot does not have is refused when the robot is known (check_joints);
the name maps are checked against the task and the robot when the loop binds them (runtime.binding).
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from runtime.binding import MAX_MAP_ENTRIES, MappingError, check_name_map_entry
from runtime.robots import RobotSpec, RobotSpecError, spec_from_table

MAX_FILE_BYTES = 1 << 20          # a robot config is a few lines; refuse anything huge before parsing
FAULT_POLICIES = ("stop", "hold")
DEFAULT_STATE_MARGIN = 0.05       # fraction of each joint's device range
DEFAULT_MAX_BAD_STATES = 5
MAX_BAD_STATES_LIMIT = 10_000
JOINT_KEYS = ("lower", "upper", "max_velocity", "max_step")
LOOP_KEYS = ("state_margin", "max_bad_states", "on_device_fault", "link_give_up_s")
LINK_GIVE_UP_RANGE_S = (0.1, 3600.0)


class RobotConfigError(ValueError):
    """The robot configuration cannot be used (one-line message naming the file and the field)."""


@dataclass(frozen=True)
class JointConfig:
    """Operator limits of one joint; None = not set here (the device's value applies)."""
    lower: Optional[float] = None
    upper: Optional[float] = None
    max_velocity: Optional[float] = None  # units/s
    max_step: Optional[float] = None      # units per command


@dataclass(frozen=True)
class RobotConfig:
    source: str = "defaults"                                  # the file it came from
    joints: dict[str, JointConfig] = field(default_factory=dict)
    state_margin: float = DEFAULT_STATE_MARGIN
    max_bad_states: int = DEFAULT_MAX_BAD_STATES
    on_device_fault: Optional[str] = None                     # None: not set here (the CLI's default applies)
    link_give_up_s: Optional[float] = None                    # None: the loop's default
    robot: Optional[RobotSpec] = None                         # [robot]: type and fields (runtime.robots)
    obs_map: dict[str, str] = field(default_factory=dict)     # [obs_map]: policy observation -> robot name
    joint_map: dict[str, str] = field(default_factory=dict)   # [joint_map]: task joint -> robot joint

    def check_joints(self, joint_names: Sequence[str]) -> None:
        """Refuse a configuration that names joints the robot does not have."""
        unknown = [n for n in self.joints if n not in joint_names]
        if unknown:
            raise RobotConfigError(f"{self.source}: joint {unknown[0]!r} is not a joint of this robot "
                                   f"(it has {', '.join(joint_names) or 'no joints'})")

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "state_margin": self.state_margin, "max_bad_states": self.max_bad_states,
                "on_device_fault": self.on_device_fault, "link_give_up_s": self.link_give_up_s,
                "joints": {n: {k: getattr(j, k) for k in JOINT_KEYS if getattr(j, k) is not None}
                           for n, j in self.joints.items()},
                "robot": None if self.robot is None else {"type": self.robot.type, **self.robot.values},
                "obs_map": dict(self.obs_map), "joint_map": dict(self.joint_map)}


def _number(value: Any, where: str) -> float:
    # bool is an int in Python; `lower = true` is a mistake, not 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RobotConfigError(f"{where} must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise RobotConfigError(f"{where} must be finite, got {value!r}")
    return x


def _table(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise RobotConfigError(f"{where} must be a table, got {value!r}")
    return value


def _unknown(table: dict, allowed: Sequence[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise RobotConfigError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")


def _joint(name: str, spec: Any, src: str) -> JointConfig:
    where = f"{src}: joints.{name}"
    table = _table(spec, where)
    _unknown(table, JOINT_KEYS, where)
    vals = {k: _number(table[k], f"{where}.{k}") for k in JOINT_KEYS if k in table}
    lo, hi = vals.get("lower"), vals.get("upper")
    if lo is not None and hi is not None and not lo < hi:
        raise RobotConfigError(f"{where}: lower {lo:g} must be below upper {hi:g}")
    for k in ("max_velocity", "max_step"):
        if k in vals and not vals[k] > 0:
            raise RobotConfigError(f"{where}.{k} must be > 0, got {vals[k]:g}")
    return JointConfig(**vals)


def parse_robot_config(data: dict, source: str = "robot config") -> RobotConfig:
    """A parsed TOML document -> RobotConfig; RobotConfigError for anything out of place."""
    _unknown(data, ("robot", "obs_map", "joint_map", "loop", "joints"), source)
    loop = _table(data.get("loop", {}), f"{source}: [loop]")
    _unknown(loop, LOOP_KEYS, f"{source}: [loop]")
    margin = DEFAULT_STATE_MARGIN
    if "state_margin" in loop:
        margin = _number(loop["state_margin"], f"{source}: loop.state_margin")
        if not 0.0 <= margin <= 1.0:
            raise RobotConfigError(f"{source}: loop.state_margin is a fraction of the joint range in [0, 1], "
                                   f"got {margin:g}")
    bad = DEFAULT_MAX_BAD_STATES
    if "max_bad_states" in loop:
        v = loop["max_bad_states"]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_BAD_STATES_LIMIT:
            raise RobotConfigError(f"{source}: loop.max_bad_states must be an integer in "
                                   f"[1, {MAX_BAD_STATES_LIMIT}], got {v!r}")
        bad = v
    policy = loop.get("on_device_fault")
    if policy is not None and policy not in FAULT_POLICIES:
        raise RobotConfigError(f"{source}: loop.on_device_fault must be one of {', '.join(FAULT_POLICIES)}, "
                               f"got {policy!r}")
    give_up = None
    if "link_give_up_s" in loop:
        give_up = _number(loop["link_give_up_s"], f"{source}: loop.link_give_up_s")
        lo, hi = LINK_GIVE_UP_RANGE_S
        if not lo <= give_up <= hi:
            raise RobotConfigError(f"{source}: loop.link_give_up_s must be in [{lo:g}, {hi:g}] s, got {give_up:g}")
    joints_spec = _table(data.get("joints", {}), f"{source}: [joints]")
    joints = {str(n): _joint(str(n), spec, source) for n, spec in joints_spec.items()}
    robot = None
    if "robot" in data:
        try:
            robot = spec_from_table(_table(data["robot"], f"{source}: [robot]"), f"{source}: robot")
        except RobotSpecError as exc:
            raise RobotConfigError(str(exc)) from None
    maps = {name: _name_map(data.get(name, {}), f"{source}: [{name}]") for name in ("obs_map", "joint_map")}
    return RobotConfig(source, joints, margin, bad, policy, give_up, robot, maps["obs_map"], maps["joint_map"])


def _name_map(value: Any, where: str) -> dict[str, str]:
    table = _table(value, where)
    if len(table) > MAX_MAP_ENTRIES:
        raise RobotConfigError(f"{where}: {len(table)} entries; at most {MAX_MAP_ENTRIES}")
    out = {}
    for key, target in table.items():
        try:
            check_name_map_entry(key, target, where)
        except MappingError as exc:
            raise RobotConfigError(str(exc)) from None
        out[key] = target
    return out


def load_robot_config(path: Any) -> RobotConfig:
    """Read and check a robot configuration file; RobotConfigError (one line) when it cannot be used."""
    p = Path(path)
    src = str(p)
    try:
        if not p.is_file():
            raise RobotConfigError(f"robot config {src} does not exist or is not a regular file")
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RobotConfigError(f"robot config {src} is {size} bytes; the limit is {MAX_FILE_BYTES}")
        raw = p.read_bytes()
    except OSError as exc:
        raise RobotConfigError(f"cannot read robot config {src}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RobotConfigError(f"robot config {src} is not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RobotConfigError(f"robot config {src} is not valid TOML: {str(exc).splitlines()[0]}") from None
    except RecursionError:  # deeply nested inline tables/arrays
        raise RobotConfigError(f"robot config {src} is nested too deeply") from None
    return parse_robot_config(data, src)
