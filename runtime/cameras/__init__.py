"""Camera sources behind one interface (one module and one config dataclass per source, one registry).

    --camera picamera2 [--camera.fps 30]            a Raspberry Pi camera (picamera2; imported when opened)
    --camera v4l2 --camera.device /dev/video0       a USB / V4L2 camera through PyAV
    --camera simulated                              draws the emulated Push-T plant from the robot's States
    --camera recorded --camera.path frames.npz      frames + timestamps from a file (tests, replays)
    --camera synthetic                              a moving gradient: only by explicit choice

The `--camera.FIELD VALUE` options are generated from the dataclasses' fields (as runtime.robots does
for --robot.FIELD). Every source delivers runtime.cameras.frame.Frame (RGB uint8 [H, W, 3], capture
time on time.monotonic()'s clock, sequence number); a FrameStream reads it off the tick thread and a
FrameMonitor decides every tick whether the frame may be used. Every mistake a user can make is a
one-line CameraSpecError.
"""
from __future__ import annotations

import argparse
from typing import Mapping, Optional, Sequence

from runtime.cameras.base import Camera, CameraContext, CameraSettings, CameraSpecError
from runtime.cameras.frame import Frame, FrameError, frame_problem, resize_nearest
from runtime.cameras.monitor import FrameMonitor, default_max_age
from runtime.cameras.picamera2_source import Picamera2Config
from runtime.cameras.recorded import RecordedConfig
from runtime.cameras.simulated import SimulatedConfig
from runtime.cameras.stream import CameraTimeout, FrameStream
from runtime.cameras.synthetic import SyntheticConfig
from runtime.cameras.v4l2 import V4L2Config
from runtime.robots.fields import (FieldInfo, RobotSpecError, add_field_options, field_infos, fields_by_name,
                                   from_text, option_values, unknown_option)

REGISTRY: dict[str, type[CameraSettings]] = {c.TYPE: c for c in (Picamera2Config, V4L2Config, SimulatedConfig,
                                                                  RecordedConfig, SyntheticConfig)}
ALIASES = {"picamera": "picamera2", "standin": "synthetic", "stand-in": "synthetic"}  # the old --camera values
OPTION_PREFIX = "--camera."
NAMES_HELP = ", ".join(REGISTRY)

__all__ = ["ALIASES", "REGISTRY", "Camera", "CameraContext", "CameraSettings", "CameraSpecError", "CameraTimeout",
           "Frame", "FrameError", "FrameMonitor", "FrameStream", "add_camera_arguments", "build_camera_settings",
           "camera_cli_values", "camera_fields", "default_max_age", "frame_problem", "open_stream",
           "resize_nearest", "unknown_camera_options"]


def camera_fields(kind: str) -> dict[str, FieldInfo]:
    return {f.name: f for f in field_infos(REGISTRY[kind])}


def all_fields() -> dict[str, list[tuple[str, FieldInfo]]]:
    return fields_by_name(REGISTRY)


def add_camera_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--camera NAME and one --camera.FIELD option per field of the registered sources."""
    g = parser.add_argument_group("camera", f"the camera of an image policy: --camera NAME ({NAMES_HELP}) with "
                                  "--camera.FIELD VALUE options; an image package needs one")
    g.add_argument("--camera", default=None, metavar="NAME",
                   help=f"{NAMES_HELP} (synthetic: fake gradient frames, only for tests and timing)")
    add_field_options(g, all_fields(), OPTION_PREFIX, "camera")
    return g


def unknown_camera_options(argv: Sequence[str]) -> Optional[str]:
    """A one-line error for a --camera.FIELD that no camera source has (before argparse sees it)."""
    return unknown_option(argv, OPTION_PREFIX, all_fields(), "camera")


def camera_cli_values(args: argparse.Namespace) -> dict[str, str]:
    return option_values(args, "camera", all_fields())


def build_camera_settings(name: str, options: Mapping[str, str]) -> CameraSettings:
    """--camera NAME and its --camera.FIELD values -> the source's configuration (CameraSpecError, one line)."""
    kind = ALIASES.get(str(name).strip(), str(name).strip())
    if kind not in REGISTRY:
        raise CameraSpecError(f"unknown camera {name!r}: use one of {NAMES_HELP}")
    fields = camera_fields(kind)
    values = {}
    try:
        for key, text in options.items():
            if key not in fields:
                raise CameraSpecError(f"{OPTION_PREFIX}{key} does not apply to a {kind} camera "
                                      f"(its fields: {', '.join(fields) or 'none'})")
            values[key] = from_text(fields[key], text, f"{OPTION_PREFIX}{key}")
        return REGISTRY[kind](**values)
    except RobotSpecError as exc:  # the shared field converters' error: the same one line, as a camera error
        raise CameraSpecError(str(exc).replace("robot.", "camera.")) from None


def open_stream(settings: CameraSettings, context: CameraContext, first_frame_timeout_s: float = 2.0) -> FrameStream:
    """Open the camera and start reading it; CameraSpecError (one line) when it cannot."""
    camera = settings.open(context)
    try:
        return FrameStream(camera, context.shape, first_frame_timeout_s)
    except CameraSpecError:
        raise
    except Exception as exc:
        try:
            camera.close()
        finally:
            raise CameraSpecError(f"camera {settings.label()}: {' '.join(str(exc).split())[:200]}") from None


def camera_from_args(args: argparse.Namespace, owner: str, needs: Optional[str], without: str,
                     hint: str = "") -> Optional[CameraSettings]:
    """The camera named on a command line (--camera, --camera.FIELD, --camera-max-*), checked against what
    ``owner`` needs: ``needs`` describes its images ("sees a camera (3x96x96 frames)"), None when it has
    none (``without`` says so). Never a silent stand-in: CameraSpecError (one line) for a missing,
    unwanted, unknown or misconfigured camera. Shared by imle-run and imle-record."""
    import math

    options = camera_cli_values(args)
    if needs is None:
        if args.camera is not None or options:
            given = f"--camera {args.camera}" if args.camera is not None else f"--camera.{next(iter(options))}"
            raise CameraSpecError(f"{given}: {owner} {without}; drop the camera options")
        return None
    if args.camera is None:
        raise CameraSpecError(f"{owner} {needs}: give --camera NAME ({NAMES_HELP}){hint}")
    age = args.camera_max_age
    if age is not None and not (math.isfinite(age) and 0 < age <= 60):
        raise CameraSpecError(f"--camera-max-age must be a number of seconds in (0, 60], got {age!r}")
    limits = [("--camera-max-repeat", args.camera_max_repeat)]
    if hasattr(args, "camera_max_stale"):
        limits.append(("--camera-max-stale", args.camera_max_stale))
    for flag, value in limits:
        if not 1 <= value <= 1_000_000:
            raise CameraSpecError(f"{flag} must be an integer in 1..1000000, got {value}")
    return build_camera_settings(args.camera, options)
