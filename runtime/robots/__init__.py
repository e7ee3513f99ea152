"""Robot configurations (one dataclass per kind, in one registry) and connecting them.

    --robot serial --robot.port /dev/ttyACM0     a microcontroller speaking docs/protocol.md
    --robot emulator [--robot.mode lockstep]     the emulated device in its own process on a pty
    --robot franka --robot.host 172.16.0.2       a Franka arm (pylibfranka; imported lazily)

The `--robot.FIELD VALUE` options are generated from the dataclasses' fields (runtime.robots.fields),
and the same fields can come from the robot config file's `[robot]` table (`type = "serial"` plus
fields); the command line overrides the file. The shorthands `serial:/dev/x`, `emulator`,
`emulator-lockstep` and `franka:HOST` keep working. Every failure a user can cause (bad spec, unknown
field, bad value, missing port, handshake failure) is a RobotSpecError or a firmware_bridge LinkError
whose str() is one line.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from runtime.robots.emulator import EmulatorConfig
from runtime.robots.fields import (FieldInfo, RobotSpecError, add_field_options, field_infos, fields_by_name,
                                   from_text, from_toml, option_values, unknown_option)
from runtime.robots.franka import FrankaConfig
from runtime.robots.handle import ConnectContext, RobotHandle, RobotSettings
from runtime.robots.serial import SerialConfig

REGISTRY: dict[str, type[RobotSettings]] = {c.TYPE: c for c in (SerialConfig, EmulatorConfig, FrankaConfig)}
SPEC_HELP = ("TYPE (" + ", ".join(REGISTRY) + ") with --robot.FIELD options, or serial:/dev/ttyACM0, emulator, "
             "emulator-lockstep, franka:HOST")
OPTION_PREFIX = "--robot."

__all__ = ["REGISTRY", "SPEC_HELP", "ConnectContext", "EmulatorConfig", "FrankaConfig", "RobotHandle", "RobotSettings",
           "RobotSpec", "RobotSpecError", "SerialConfig", "add_robot_arguments", "build_settings", "check_spec",
           "make_robot", "parse_spec", "robot_fields", "spec_from_table"]


@dataclass
class RobotSpec:
    """A robot named but not yet built: its type and field values (typed), and where each came from."""
    type: str
    values: dict[str, Any] = field(default_factory=dict)
    source: str = "--robot"


def robot_fields(kind: str) -> dict[str, FieldInfo]:
    return {f.name: f for f in field_infos(REGISTRY[kind])}


def all_fields() -> dict[str, list[tuple[str, FieldInfo]]]:
    """Field name -> the robot types that have it (with its info there)."""
    return fields_by_name(REGISTRY)


def parse_spec(spec: str) -> RobotSpec:
    """--robot's value: a type name or a shorthand -> RobotSpec; RobotSpecError otherwise."""
    text = (spec or "").strip()
    if text in REGISTRY:
        return RobotSpec(text)
    if text in ("emulator-realtime", "emulator-lockstep"):
        return RobotSpec("emulator", {"mode": text.split("-", 1)[1]})
    kind, sep, arg = text.partition(":")
    if sep and arg and kind == "serial":
        return RobotSpec("serial", {"port": arg})
    if sep and arg and kind == "franka":
        return RobotSpec("franka", {"host": arg})
    raise RobotSpecError(f"bad --robot spec {spec!r}: use {SPEC_HELP}")


def spec_from_table(table: Mapping[str, Any], where: str) -> RobotSpec:
    """The robot config file's [robot] table (type + fields) -> RobotSpec, every value type-checked."""
    kind = table.get("type")
    if not isinstance(kind, str) or kind not in REGISTRY:
        raise RobotSpecError(f"{where}.type must be one of {', '.join(REGISTRY)}, got {kind!r}")
    fields = robot_fields(kind)
    values = {}
    for key, value in table.items():
        if key == "type":
            continue
        if key not in fields:
            raise RobotSpecError(f"{where}: unknown key {key!r} for a {kind} robot (fields: {', '.join(fields)})")
        values[key] = from_toml(fields[key], value, f"{where}.{key}")
    return RobotSpec(kind, values, where)


def add_robot_arguments(parser: argparse.ArgumentParser) -> None:
    """--robot TYPE|SHORTHAND and one --robot.FIELD option per field of the registered configurations."""
    g = parser.add_argument_group("robot", f"the robot: --robot {SPEC_HELP}; --robot.FIELD VALUE sets a field "
                                  "(overrides the robot config's [robot] table)")
    g.add_argument("--robot", default=None, metavar="SPEC", help=SPEC_HELP)
    add_field_options(g, all_fields(), OPTION_PREFIX, "robot")


def unknown_robot_options(argv: Sequence[str]) -> Optional[str]:
    """A one-line error for a --robot.FIELD that no robot configuration has (before argparse sees it)."""
    return unknown_option(argv, OPTION_PREFIX, all_fields(), "robot")


def cli_values(args: argparse.Namespace) -> dict[str, str]:
    """The --robot.FIELD values given on the command line (as text)."""
    return option_values(args, "robot", all_fields())


def build_settings(cli_spec: Optional[str], cli_options: Mapping[str, str], file_spec: Optional[RobotSpec] = None,
                   ) -> tuple[RobotSettings, list[str]]:
    """The robot configuration from the file's [robot] table, then --robot, then --robot.FIELD (each
    overriding the one before). Returns (settings, notes); RobotSpecError (one line) when it cannot."""
    notes: list[str] = []
    if cli_spec is None and file_spec is None:
        raise RobotSpecError(f"no robot: give --robot {SPEC_HELP}, or a [robot] table in the robot config")
    spec = parse_spec(cli_spec) if cli_spec is not None else None
    values: dict[str, Any] = {}
    if file_spec is not None and (spec is None or spec.type == file_spec.type):
        kind = file_spec.type
        values.update(file_spec.values)
    else:
        assert spec is not None
        kind = spec.type
        if file_spec is not None:
            notes.append(f"{file_spec.source}: a {file_spec.type} robot; --robot {cli_spec} is used instead "
                         f"and the table's fields are ignored")
    if spec is not None:
        values.update(spec.values)
    fields = robot_fields(kind)
    for name, text in cli_options.items():
        if name not in fields:
            raise RobotSpecError(f"{OPTION_PREFIX}{name} does not apply to a {kind} robot "
                                 f"(its fields: {', '.join(fields)})")
        values[name] = from_text(fields[name], text, f"{OPTION_PREFIX}{name}")
    missing = [n for n, f in fields.items() if f.required and n not in values]
    if missing:
        raise RobotSpecError(f"a {kind} robot needs {OPTION_PREFIX}{missing[0]} ({fields[missing[0]].help})")
    try:
        return REGISTRY[kind](**values), notes
    except TypeError as exc:  # cannot happen for checked names; kept one line all the same
        raise RobotSpecError(f"robot {kind}: {exc}") from None


def check_spec(spec: Union[str, RobotSettings]) -> None:
    """Raise RobotSpecError for a malformed spec or a serial port that does not exist (connects nothing)."""
    settings = spec if isinstance(spec, RobotSettings) else build_settings(spec, {})[0]
    settings.check()


def make_robot(spec: Union[str, RobotSettings], *, period_s: Optional[float] = None,
               package: Optional[str] = None) -> RobotHandle:
    """Connect to the robot a configuration (or a --robot shorthand) names, starting an emulator when
    asked (a plant that fits `package`: Push-T for a Push-T package when gym-pusht is installed, else
    the generic joint plant). The caller closes the handle."""
    settings = spec if isinstance(spec, RobotSettings) else build_settings(spec, {})[0]
    return settings.connect(ConnectContext(period_s=period_s, package=package))
