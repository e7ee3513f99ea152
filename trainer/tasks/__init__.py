"""Built-in task files (package data) and ``--task NAME|PATH`` resolution.

A task is a file (runtime.task_spec): Push-T state and image ship here as ``<name>.toml``; a user's own
robot gets a file of its own (``imle-task init DATA.zarr``) and passes its path.
"""
from __future__ import annotations

from pathlib import Path

from runtime.task_spec import TaskSpec, TaskSpecError

BUILTIN_DIR = Path(__file__).resolve().parent


def builtin_names() -> tuple[str, ...]:
    """Names of the task files shipped with the package, sorted."""
    return tuple(sorted(p.stem for p in BUILTIN_DIR.glob("*.toml")))


def builtin_path(name: str) -> Path:
    return BUILTIN_DIR / f"{name}.toml"


def is_path(arg: str) -> bool:
    """A ``--task`` value naming a file (has a directory part or ends in .toml) rather than a built-in."""
    return arg.endswith(".toml") or "/" in arg or "\\" in arg


def resolve_task(arg: str | Path) -> TaskSpec:
    """A built-in task by name, or a task file by path. TaskSpecError (one line) otherwise."""
    if isinstance(arg, Path) or is_path(str(arg)):
        return TaskSpec.from_toml(arg)
    if str(arg) in builtin_names():
        return TaskSpec.from_toml(builtin_path(str(arg)))
    raise TaskSpecError(f"unknown task {str(arg)[:80]!r}: not a built-in task ({', '.join(builtin_names())}) "
                        "and not a path to a .toml task file (imle-task init DATA.zarr writes one)")


__all__ = ["BUILTIN_DIR", "builtin_names", "builtin_path", "resolve_task", "is_path"]
