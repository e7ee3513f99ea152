"""Robot configuration dataclasses -> command-line options and TOML tables, from their fields.

A robot configuration is a dataclass whose fields each carry `metadata={"help": ...}` (and optionally
"choices"); the field's annotation gives its type. The same fields are the CLI's `--robot.FIELD VALUE`
options and the keys of the robot config file's `[robot]` table. Values are converted here (one-line
errors naming the field, the type and the value); the dataclass's __post_init__ checks ranges.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

MAX_TEXT = 1024


class RobotSpecError(ValueError):
    """A robot configuration that cannot name a robot (one-line message)."""


def option(help: str, choices: Optional[tuple[str, ...]] = None) -> dict[str, Any]:
    """Field metadata: `field(default=..., metadata=option("what it is"))`."""
    return {"help": help, "choices": choices}


@dataclass(frozen=True)
class FieldInfo:
    name: str
    type: type            # str | int | float | bool (Optional[...] unwrapped)
    optional: bool        # None is allowed (the default means "decide later")
    required: bool        # no default: must be given
    help: str
    choices: Optional[tuple[str, ...]]


def field_infos(cls: type) -> list[FieldInfo]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        tp, optional = hints[f.name], False
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            optional, tp = True, args[0]
        if tp not in (str, int, float, bool):
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported field type {tp!r}")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append(FieldInfo(f.name, tp, optional, required, f.metadata.get("help", ""), f.metadata.get("choices")))
    return out


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def from_text(info: FieldInfo, text: str, where: str) -> Any:
    """A command-line string -> the field's type."""
    t = str(text).strip()
    if len(t) > MAX_TEXT:
        raise RobotSpecError(f"{where}: value of {len(t)} characters is too long")
    try:
        if info.type is bool:
            if t.lower() in _TRUE:
                return True
            if t.lower() in _FALSE:
                return False
            raise ValueError
        if info.type is int:
            return int(t)
        if info.type is float:
            return float(t)
    except ValueError:
        raise RobotSpecError(f"{where} takes {_type_name(info)}, got {t!r}") from None
    return t


def from_toml(info: FieldInfo, value: Any, where: str) -> Any:
    """A TOML value -> the field's type (ints are accepted as floats; bools are never numbers)."""
    ok = (isinstance(value, bool) if info.type is bool else
          isinstance(value, int) and not isinstance(value, bool) if info.type is int else
          isinstance(value, (int, float)) and not isinstance(value, bool) if info.type is float else
          isinstance(value, str))
    if not ok:
        raise RobotSpecError(f"{where} takes {_type_name(info)}, got {repr(value)[:60]}")
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise RobotSpecError(f"{where}: value of {len(value)} characters is too long")
    return float(value) if info.type is float else value


def _type_name(info: FieldInfo) -> str:
    if info.choices:
        return "one of " + ", ".join(info.choices)
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[info.type]


def check_choice(value: Any, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise RobotSpecError(f"{where} must be one of {', '.join(choices)}, got {value!r}")


def check_positive(value: float, where: str, upper: float = math.inf) -> None:
    if not (math.isfinite(value) and 0 < value <= upper):
        bound = f" and at most {upper:g}" if math.isfinite(upper) else ""
        raise RobotSpecError(f"{where} must be a finite number > 0{bound}, got {value!r}")


# ---------------------------------------------------------------------------- --PREFIX.FIELD options
# Robot and camera registries both turn their config dataclasses' fields into command-line options.
def fields_by_name(registry: Mapping[str, type]) -> dict[str, list[tuple[str, FieldInfo]]]:
    """Field name -> [(registered kind, its FieldInfo), ...] over every class of a registry."""
    out: dict[str, list[tuple[str, FieldInfo]]] = {}
    for kind, cls in registry.items():
        for info in field_infos(cls):
            out.setdefault(info.name, []).append((kind, info))
    return out


def add_field_options(group: Any, owners_by_name: Mapping[str, list[tuple[str, FieldInfo]]], prefix: str,
                      dest: str) -> None:
    """One ``PREFIX.FIELD`` option per field (dest ``DEST__FIELD``, text values parsed later by from_text)."""
    for name, owners in owners_by_name.items():
        info = owners[0][1]
        kinds = ", ".join(k for k, _ in owners)
        choices = f" [{'|'.join(info.choices)}]" if info.choices else ""
        metavar = {str: "TEXT", int: "N", float: "X", bool: "BOOL"}[info.type]
        kw: dict[str, Any] = {"nargs": "?", "const": "true"} if info.type is bool else {}
        group.add_argument(prefix + name, dest=f"{dest}__{name}", default=None, metavar=metavar,
                           help=f"({kinds}) {info.help}{choices}", **kw)


def unknown_option(argv: Sequence[str], prefix: str, known: Mapping[str, Any], what: str) -> Optional[str]:
    """A one-line error for a ``PREFIX.FIELD`` that no registered class has (before argparse sees it)."""
    for arg in argv:
        if arg.startswith(prefix):
            name = arg[len(prefix):].split("=", 1)[0]
            if name not in known:
                return f"unknown {what} option {prefix}{name} ({what} fields: {', '.join(known)})"
    return None


def option_values(args: Any, dest: str, known: Mapping[str, Any]) -> dict[str, str]:
    """The ``PREFIX.FIELD`` values given on the command line (as text)."""
    return {name: getattr(args, f"{dest}__{name}") for name in known
            if getattr(args, f"{dest}__{name}", None) is not None}
