"""Where a demonstration's commands come from: a pluggable source asked once per control tick.

    class DemoSource(Protocol):
        def begin(self, start: EpisodeStart) -> None      # a new episode (its seed, the task, the first state)
        def act(self, obs: Observation) -> action | None  # joint targets in the task's action order; None: done
        def close(self) -> None

Sources by name (`imle-record --source ...`):

- `scripted:MODULE:FUNCTION` (or `scripted:path/to/file.py:FUNCTION`): FUNCTION(task, seed) is called at
  each episode start and returns a callable obs -> action | None (a planner, a replayed trajectory).
- `keyboard`: joint jogging from the terminal (KeyboardJog); any other device (a gamepad, a leader arm
  whose joint positions are the follower's targets) is a class with the same three methods.

A source never talks to the robot: the recorder sends what it returns through the runtime's safety
filter, and records the command actually sent.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import queue
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Protocol, runtime_checkable

import numpy as np

from runtime.task_spec import TaskSpec


class SourceError(ValueError):
    """A demonstration source that cannot be loaded or returned something unusable (one line)."""


@dataclass(frozen=True)
class Observation:
    """What a source sees each tick: every state column of the task, by name, and the camera frame."""
    step: int
    t: float                      # seconds since the episode started (step x period)
    names: tuple[str, ...]        # the task's observation.state.names
    state: np.ndarray             # float32 [len(names)], in that order
    image: Optional[np.ndarray] = None  # [H, W, C] uint8 when a camera is configured

    def __getitem__(self, name: str) -> float:
        try:
            return float(self.state[self.names.index(name)])
        except ValueError:
            raise KeyError(f"{name!r} is not a state column (columns: {', '.join(self.names)})") from None


@dataclass(frozen=True)
class EpisodeStart:
    index: int      # the recording attempt (0, 1, ...)
    seed: int       # the simulated plant was reset with this seed (hardware: where the robot stands)
    task: TaskSpec
    first: Observation


@runtime_checkable
class DemoSource(Protocol):
    def begin(self, start: EpisodeStart) -> None: ...

    def act(self, obs: Observation) -> Optional[Any]: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------- scripted
class ScriptedSource:
    """FUNCTION(task, seed) -> policy(obs) -> action | None, loaded from a module or a .py file."""

    def __init__(self, factory: Callable[[TaskSpec, int], Callable[[Observation], Any]], name: str) -> None:
        self.factory = factory
        self.name = name
        self._policy: Optional[Callable[[Observation], Any]] = None

    @classmethod
    def load(cls, ref: str) -> "ScriptedSource":
        return cls(load_function(ref, "--source scripted", "scripted source"), f"scripted:{ref}")

    def begin(self, start: EpisodeStart) -> None:
        try:
            policy = self.factory(start.task, start.seed)
        except Exception as exc:
            raise SourceError(f"{self.name}: episode {start.index} (seed {start.seed}) failed to start: "
                              f"{type(exc).__name__}: {_one_line(exc)}") from None
        if not callable(policy):
            raise SourceError(f"{self.name}: must return a callable obs -> action, got {type(policy).__name__}")
        self._policy = policy

    def act(self, obs: Observation) -> Optional[Any]:
        assert self._policy is not None, "begin() first"
        try:
            return self._policy(obs)
        except Exception as exc:
            raise SourceError(f"{self.name}: failed at step {obs.step}: {type(exc).__name__}: "
                              f"{_one_line(exc)}") from None

    def close(self) -> None:
        self._policy = None


def load_function(ref: str, option: str, what: str) -> Callable[..., Any]:
    """MODULE:FUNCTION or path/to/file.py:FUNCTION -> the function (SourceError, one line, otherwise).
    `option` and `what` name it in the errors ("--source scripted", "scripted source")."""
    module_name, sep, func = ref.rpartition(":")
    if not sep or not module_name or not func:
        prefix = option.split()[-1] + ":" if " " in option else ""
        raise SourceError(f"{option} takes {prefix}MODULE:FUNCTION, got {prefix}{ref}")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise SourceError(f"{what} file not found: {path}")
            spec = importlib.util.spec_from_file_location(f"imle_record_script_{path.stem}", path)
            if spec is None or spec.loader is None:
                raise SourceError(f"cannot load {path} as a Python module")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except SourceError:
        raise
    except Exception as exc:  # ImportError, SyntaxError, whatever the module raises on import
        raise SourceError(f"cannot import {what} {module_name}: {type(exc).__name__}: {_one_line(exc)}") from None
    function = getattr(module, func, None)
    if not callable(function):
        raise SourceError(f"{what} {module_name} has no function {func!r}")
    return function


# ---------------------------------------------------------------------------- keyboard teleoperation
class KeyboardJog:
    """Jog one joint at a time from the keyboard. Keys: 1-9 pick joint 1-9, + / - move the picked joint
    by the step, ] / [ double / halve the step, Enter or q ends the demonstration. The target starts at
    the robot's position; the recorder's safety filter still limits every command.

    `keys`: an iterable of characters (tests) or None for the terminal (TerminalKeys)."""

    def __init__(self, keys: Optional[Iterable[str]] = None, step_fraction: float = 0.01) -> None:
        self._keys: "queue.Queue[str]" = queue.Queue()
        self._terminal: Optional[TerminalKeys] = None
        if keys is None:
            self._terminal = TerminalKeys(self._keys.put)
        else:
            for k in keys:
                self._keys.put(k)
        self.step_fraction = step_fraction
        self.name = "keyboard"
        self._target: Optional[np.ndarray] = None
        self._joint = 0
        self._step = np.zeros(0)

    def press(self, key: str) -> None:
        """Queue one key press (the terminal thread calls this; so can any other input device)."""
        self._keys.put(key)

    def begin(self, start: EpisodeStart) -> None:
        act = start.task.action
        names = start.first.names
        missing = [j for j in act.joints if j not in names]
        if missing:
            raise SourceError(f"keyboard: joints {', '.join(missing)} are not state columns, so their position is "
                              "unknown; name them in observation.state.names")
        self._target = np.array([start.first[j] for j in act.joints], np.float64)
        span = (np.asarray(act.high) - np.asarray(act.low)) if act.low is not None else np.ones(len(act.joints))
        self._step = span * self.step_fraction
        self._joint = 0

    def act(self, obs: Observation) -> Optional[Any]:
        assert self._target is not None, "begin() first"
        while True:
            try:
                key = self._keys.get_nowait()
            except queue.Empty:
                return self._target.copy()
            if key in ("q", "\n", "\r"):
                return None
            if key.isdigit() and 1 <= int(key) <= len(self._target):
                self._joint = int(key) - 1
            elif key in ("+", "="):
                self._target[self._joint] += self._step[self._joint]
            elif key in ("-", "_"):
                self._target[self._joint] -= self._step[self._joint]
            elif key == "]":
                self._step = self._step * 2.0
            elif key == "[":
                self._step = self._step * 0.5

    def close(self) -> None:
        if self._terminal is not None:
            self._terminal.close()


class TerminalKeys:
    """Reads single key presses from the controlling terminal (cbreak mode) in a thread."""

    def __init__(self, on_key: Callable[[str], None]) -> None:
        import termios
        import tty
        try:
            self._fd = os.open("/dev/tty", os.O_RDONLY)
        except OSError as exc:
            raise SourceError(f"keyboard source needs a terminal (/dev/tty: {exc.strerror})") from None
        self._old = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)
        self._on_key = on_key
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keys", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import select
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.1)
            if ready:
                data = os.read(self._fd, 1)
                if data:
                    self._on_key(data.decode("latin-1"))

    def close(self) -> None:
        import termios
        self._stop.set()
        self._thread.join(timeout=1.0)
        termios.tcsetattr(self._fd, termios.TCSADRAIN, self._old)
        os.close(self._fd)


def make_source(spec: str) -> DemoSource:
    """--source: scripted:MODULE:FUNCTION | scripted:FILE.py:FUNCTION | keyboard."""
    text = (spec or "").strip()
    kind, _, rest = text.partition(":")
    if kind == "scripted":
        return ScriptedSource.load(rest)
    if text == "keyboard":
        if not sys.stdin.isatty():
            raise SourceError("--source keyboard needs a terminal")
        return KeyboardJog()
    raise SourceError(f"unknown --source {spec!r}: use scripted:MODULE:FUNCTION or keyboard")


def as_action(value: Any, dim: int, step: int) -> np.ndarray:
    """A source's return value as a float64 [dim] vector (SourceError, one line, when it is not one)."""
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise SourceError(f"the source returned {_one_line(repr(value))[:60]} at step {step}; expected {dim} "
                          "numbers") from None
    if arr.size != dim:
        raise SourceError(f"the source returned {arr.size} values at step {step}; the task's action has {dim}")
    return arr


def _one_line(exc: Any, limit: int = 160) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:limit]
