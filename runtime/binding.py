"""Binding a task's names to a robot's names: strictly by name, or by the operator's explicit mapping.

The task (the package's TaskSpec) names what the policy observes and which robot joint each action
dimension commands; the robot names its joints and extra sensors in its Capabilities. They are
matched by name only. A name the robot does not report is refused with both lists, unless the
operator maps it (`--obs-map POLICY=ROBOT,...` / `--joint-map TASK=ROBOT,...`, or the `[obs_map]` /
`[joint_map]` tables of the robot config). There is no positional fallback: a robot that happens to
report the right number of values under other names is not a match.

- :class:`TaskNames`: the names the runtime needs from a task (observations, action joints, success).
- :class:`ActionMapper`: action dimension i -> robot joint `joints[i]` (reordered to the robot's order).
- :func:`parse_name_map`: the operator's `A=B,C=D` text.
(:class:`runtime.sensors.StateMapper` maps observations with the same rules.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Collection, Mapping, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    from runtime.package import Manifest
    from runtime.task_spec import TaskSpec

MAX_NAME_CHARS = 256
MAX_MAP_ENTRIES = 1024
OBS_MAP_HINT = "map them with --obs-map POLICY=ROBOT,... or an [obs_map] table in the robot config"
JOINT_MAP_HINT = "map them with --joint-map TASK=ROBOT,... or a [joint_map] table in the robot config"


class MappingError(ValueError):
    """A task's names cannot be bound to the robot's (one line, naming both lists)."""


def check_map(what: str, mapping: Mapping[str, str], keys: Collection[str], keys_are: str,
              values: Collection[str], values_are: str) -> None:
    """An operator's name map may name only known keys (what the policy uses) and known values (what the
    robot has): MappingError naming the first stray entry otherwise. `keys_are` / `values_are` finish
    the sentence "X is not ...", with the list of what is known."""
    stray = [k for k in mapping if k not in keys]
    if stray:
        raise MappingError(f"{what}: {stray[0]!r} is not {keys_are}")
    bad = [v for v in mapping.values() if v not in values]
    if bad:
        raise MappingError(f"{what}: {bad[0]!r} is not {values_are}")


def join_names(values: Sequence[str]) -> str:
    return ", ".join(values) if values else "(none)"


def parse_name_map(text: Optional[str], where: str = "--obs-map") -> dict[str, str]:
    """'a=b,c=d' -> {'a': 'b', 'c': 'd'}; MappingError for an empty part, a missing '=', an empty or
    oversized name, or a name given twice."""
    if text is None:
        return {}
    out: dict[str, str] = {}
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) > MAX_MAP_ENTRIES:
        raise MappingError(f"{where}: {len(parts)} entries; at most {MAX_MAP_ENTRIES}")
    for part in parts:
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise MappingError(f"{where} takes NAME=ROBOT_NAME[,...], got {part!r}")
        check_name_map_entry(key, value, where)
        if key in out:
            raise MappingError(f"{where}: {key!r} is mapped twice ({out[key]!r} and {value!r})")
        out[key] = value
    return out


def check_name_map_entry(key: Any, value: Any, where: str) -> None:
    for v in (key, value):
        if not isinstance(v, str) or not v or len(v) > MAX_NAME_CHARS or not v.isprintable():
            raise MappingError(f"{where}: names must be printable strings of 1..{MAX_NAME_CHARS} characters, "
                               f"got {str(v)[:60]!r}")


@dataclass(frozen=True)
class TaskNames:
    """What the runtime needs to know of a task to bind it to a robot."""
    obs_names: tuple[str, ...]        # the policy's state vector, in order (raw values; angles encoded inside)
    action_names: tuple[str, ...]
    action_joints: tuple[str, ...]    # robot joint commanded by each action dimension, in order
    success_signal: Optional[str] = None     # a robot name (joint or extra) reported each tick
    success_threshold: Optional[float] = None  # success when signal >= threshold
    source: str = "task_spec"         # "task_spec" | "manifest" (a package without a task_spec)
    action_low: Optional[tuple[float, ...]] = None   # the task's action limits (they only narrow the robot's)
    action_high: Optional[tuple[float, ...]] = None

    def __post_init__(self) -> None:
        if len(self.action_joints) != len(self.action_names):
            raise MappingError(f"the task's action has {len(self.action_names)} dimensions "
                               f"({join_names(self.action_names)}) but names {len(self.action_joints)} joints "
                               f"({join_names(self.action_joints)})")
        for what, names in (("observation", self.obs_names), ("action joint", self.action_joints)):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise MappingError(f"the task names {what} {dup[0]!r} twice ({join_names(names)})")
        if (self.success_signal is None) != (self.success_threshold is None):
            raise MappingError("the task's success needs both a signal and a threshold, got "
                               f"{self.success_signal!r} and {self.success_threshold!r}")
        if self.success_threshold is not None and not math.isfinite(self.success_threshold):
            raise MappingError(f"the task's success threshold must be finite, got {self.success_threshold!r}")

    @classmethod
    def from_task_spec(cls, spec: "TaskSpec", source: str = "task_spec") -> "TaskNames":
        """From the package's TaskSpec: observed names (state.use), action names and joints, success."""
        act = spec.action
        joints = tuple(act.joints) if act.joints is not None else tuple(act.names)
        succ = spec.success
        return cls(tuple(spec.obs_names), tuple(act.names), joints, succ.signal if succ is not None else None,
                   float(succ.threshold) if succ is not None else None, source,
                   None if act.low is None else tuple(act.low), None if act.high is None else tuple(act.high))

    @classmethod
    def from_manifest_names(cls, state_names: Sequence[str], action_names: Sequence[str]) -> "TaskNames":
        """A package exported before tasks were files: its names, action joints = action names, and no
        success signal (never guessed: episodes run to their step limit)."""
        return cls(tuple(state_names), tuple(action_names), tuple(action_names), None, None, "manifest")


class ActionMapper:
    """Action dimension i commands robot joint `action_joints[i]` (after the operator's joint map).

    Every robot joint must be commanded by exactly one action dimension: a missing joint, a joint
    commanded twice and a robot joint the task does not command are refused (the last is ambiguous:
    nothing says what it should do).
    """

    def __init__(self, action_joints: Sequence[str], robot_joints: Sequence[str],
                 joint_map: Optional[Mapping[str, str]] = None, source: str = "") -> None:
        joint_map = dict(joint_map or {})
        task, robot = list(action_joints), list(robot_joints)
        src = f" ({source})" if source else ""
        check_map(f"joint map{src}", joint_map, task, f"a joint the task commands (task joints: {join_names(task)})",
                  robot, f"a joint of this robot (robot joints: {join_names(robot)})")
        targets = [joint_map.get(j, j) for j in task]
        missing = [j for j, t in zip(task, targets) if t not in robot]
        if missing:
            raise MappingError(f"the task commands joints {join_names(missing)} that the robot does not have "
                               f"(task joints: {join_names(task)}; robot joints: {join_names(robot)}); "
                               f"{JOINT_MAP_HINT}")
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise MappingError(f"robot joint {twice[0]!r} is commanded by more than one action dimension "
                               f"(task joints: {join_names(task)} -> {join_names(targets)})")
        idle = [r for r in robot if r not in targets]
        if idle:
            raise MappingError(f"the robot has joints {join_names(idle)} that the task does not command (ambiguous: "
                               f"task joints: {join_names(task)}; robot joints: {join_names(robot)}); {JOINT_MAP_HINT}")
        self.task_joints = tuple(task)
        self.robot_joints = tuple(robot)
        self.targets = tuple(targets)
        self.index = np.array([robot.index(t) for t in targets], dtype=np.intp)  # action dim -> robot joint
        self.identity = bool(np.array_equal(self.index, np.arange(len(robot))))

    def to_robot(self, action: np.ndarray) -> np.ndarray:
        """An action (task order) -> joint targets in the robot's order."""
        a = np.asarray(action, np.float32).reshape(-1)
        if a.size != self.index.size:
            raise ValueError(f"action has {a.size} values, the task commands {self.index.size} joints")
        if self.identity:
            return a
        out = np.empty_like(a)
        out[self.index] = a
        return out

    def to_task(self, command: np.ndarray) -> np.ndarray:
        """Joint targets in the robot's order -> task (action) order."""
        return np.asarray(command).reshape(-1)[self.index]

    def limits_to_robot(self, values: Optional[Sequence[float]]) -> Optional[list[float]]:
        """Per-action-dimension limits (the package's action range) in the robot's joint order."""
        if values is None:
            return None
        v = list(values)
        if len(v) != self.index.size:
            return v  # wrong length: left for runtime.safety to refuse with its own message
        out = [0.0] * len(v)
        for i, j in enumerate(self.index):
            out[int(j)] = v[i]
        return out


def task_names_of(manifest: "Manifest") -> TaskNames:
    """The names a package's manifest gives the runtime: its task (Manifest.get_task_spec). A package
    exported before manifests carried a task gets one derived from its obs/action names, with action
    joints named as its action dimensions and no success signal (never guessed)."""
    return TaskNames.from_task_spec(manifest.get_task_spec(),
                                    "task_spec" if manifest.task_spec is not None else "manifest")
