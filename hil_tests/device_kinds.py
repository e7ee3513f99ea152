"""The device implementations the serial HIL tests run against, with what each can do.

python  : imle-emulator (firmware_bridge.emulator), the Push-T plant.
c-host  : the C reference firmware's host build on a pty (firmware_bridge/firmware), a slewing 2-joint plant.
avr-sim : the same C core cross-compiled for an ATmega2560 and run in simavr, its UART bridged to a pty.
serial  : a real board: IMLE_HIL_DEVICE=serial:/dev/ttyACM0 (or pytest --device serial:/dev/ttyACM0).

Tests ask for features; a device that lacks one is skipped with a message saying why.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import pytest

# What a test may need beyond the protocol itself.
NOISE = "noise injection (corrupt/drop frames on the device's wire)"
FAULTS = "outage injection (vanish, silence, firmware reset)"
STATUS = "device counters read beside the link"
COMMAND_LOG = "a log of the commands the device applied"
PLANT = "a simulated plant the test can reset and watch move"
PUSHT = "the Push-T plant"
# The MCU sends its command log over a second UART from a 256-byte ring that a burst of back-to-back
# commands outruns (simavr's UART is slower than the MCU's command handling): the counters stay exact.
LOSSLESS_LOG = "command log that keeps every record through a burst"


@dataclass(frozen=True)
class DeviceKind:
    name: str
    features: frozenset
    firmware_prefix: str = ""
    joint_names: Optional[tuple] = None
    extra_names: Optional[tuple] = None
    max_velocity: Optional[float] = None
    max_step: Optional[float] = 200.0
    start: Callable[..., object] = field(default=lambda **_: None, compare=False)
    unavailable: Optional[str] = None   # why this kind cannot run here

    def need(self, *features: str) -> None:
        missing = [f for f in features if f not in self.features]
        if missing:
            pytest.skip(f"{self.name} device has no {', '.join(missing)}")

    def reset_state(self, x: float, y: float) -> np.ndarray:
        """A Reset initial state that puts the pusher/joints at (x, y) and anything else out of the way."""
        if PUSHT in self.features:
            return np.float32([x, y, 400, 400, 0.0])
        return np.float32([x, y])


def _python(**opts):
    from firmware_bridge.emulator import start_emulator
    return start_emulator(**opts)


def _c_host(**opts):
    from firmware_bridge.firmware.process import start_host_device
    return start_host_device(**opts)


def _avr(**opts):
    from firmware_bridge.firmware.process import start_avr_device
    return start_avr_device(**opts)


class _Serial:
    """A real board: nothing to start or stop; the tests open its port."""

    def __init__(self, port: str) -> None:
        self.port = port

    def stop(self) -> int:
        return 0


def _python_unavailable() -> Optional[str]:
    try:
        import gym_pusht  # noqa: F401
    except ImportError:
        return "gym-pusht is not installed (the emulator's plant)"
    return None


def _c_unavailable() -> Optional[str]:
    try:
        from firmware_bridge.firmware.build import BuildUnavailable, host_compiler
        host_compiler()
    except BuildUnavailable as exc:
        return str(exc)
    return None


def _avr_unavailable() -> Optional[str]:
    if os.environ.get("IMLE_FIRMWARE_AVR") != "1":
        return "the AVR-in-simavr runs are the slow `make firmware-check` step (set IMLE_FIRMWARE_AVR=1)"
    try:
        from firmware_bridge.firmware.build import avr_toolchain_missing
    except ImportError:
        return "the AVR build is not available"
    return avr_toolchain_missing()


def real_device() -> Optional[str]:
    """The real board's port from IMLE_HIL_DEVICE=serial:PORT (set by pytest --device too)."""
    spec = os.environ.get("IMLE_HIL_DEVICE", "")
    if not spec:
        return None
    if not spec.startswith("serial:") or len(spec) <= len("serial:"):
        raise pytest.UsageError(f"IMLE_HIL_DEVICE / --device must look like serial:/dev/ttyACM0, got {spec!r}")
    return spec[len("serial:"):]


SIM = frozenset({NOISE, FAULTS, STATUS, COMMAND_LOG, PLANT})


def kinds() -> list[DeviceKind]:
    out = [
        DeviceKind("python", SIM | {PUSHT, LOSSLESS_LOG}, "imle-emulator", ("agent_x", "agent_y"),
                   ("block_x", "block_y", "block_angle", "coverage"), 2000.0, 200.0, _python, _python_unavailable()),
        DeviceKind("c-host", SIM | {LOSSLESS_LOG}, "imle-firmware", ("agent_x", "agent_y"), (), 400.0, 200.0, _c_host,
                   _c_unavailable()),
        DeviceKind("avr-sim", SIM, "imle-firmware", ("agent_x", "agent_y"), (), 400.0, 200.0, _avr,
                   _avr_unavailable()),
    ]
    port = real_device()
    if port is not None:
        out.append(DeviceKind("serial", frozenset(), max_step=None, start=lambda **_: _Serial(port)))
    return out
