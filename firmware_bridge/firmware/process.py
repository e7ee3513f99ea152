"""Start the C firmware as a device process: the host build (`imle-device`) or the AVR image in simavr
(`imle-simavr`). Both print their pty path first and answer the emulator's stdin fault commands, so a
test drives them exactly like `firmware_bridge.emulator.start_emulator`."""
from __future__ import annotations

import os
import tempfile
from typing import Optional, Sequence

from firmware_bridge.emulator.process import EmulatorError, EmulatorProcess


class DeviceProcessError(EmulatorError):
    """The device program failed to start or to answer."""


class DeviceProcess(EmulatorProcess):
    """A running device program (same stdin fault commands as the emulator). `port` is the stable
    symlink to open with SerialLink."""

    Error = DeviceProcessError
    NAME = "device"


def _common_args(watchdog_ms: int, state_hz: float, fault_seed: int, corrupt_one_in: int, corrupt_rx_one_in: int,
                 drop_fraction: float, command_log: Optional[str], link: str) -> list[str]:
    args = ["--watchdog-ms", str(watchdog_ms), "--state-hz", str(state_hz), "--fault-seed", str(fault_seed),
            "--corrupt-one-in", str(corrupt_one_in), "--corrupt-rx-one-in", str(corrupt_rx_one_in),
            "--drop-fraction", str(drop_fraction), "--link", link, "--exit-on-stdin-eof"]
    if command_log:
        args += ["--command-log", command_log]
    return args


def start_host_device(*, watchdog_ms: int = 300, state_hz: float = 50.0, fault_seed: int = 0,
                      corrupt_one_in: int = 0, corrupt_rx_one_in: int = 0, drop_fraction: float = 0.0,
                      command_log: Optional[str] = None, max_step: Optional[float] = None,
                      extra_args: Sequence[str] = ()) -> DeviceProcess:
    """The host build of the C firmware (2 joints agent_x/agent_y in [0, 512], max_step 200, 400 px/s)."""
    from .build import build_host
    exe = build_host("imle-device")
    workdir = tempfile.mkdtemp(prefix="imle-fw-")
    args = [str(exe), *_common_args(watchdog_ms, state_hz, fault_seed, corrupt_one_in, corrupt_rx_one_in,
                                    drop_fraction, command_log, os.path.join(workdir, "tty")), *extra_args]
    if max_step is not None:
        args += ["--max-step", str(float(max_step))]
    return DeviceProcess.launch(args, workdir)


def start_avr_device(*, watchdog_ms: int = 300, state_hz: float = 50.0, fault_seed: int = 0,
                     corrupt_one_in: int = 0, corrupt_rx_one_in: int = 0, drop_fraction: float = 0.0,
                     command_log: Optional[str] = None, max_step: Optional[float] = None) -> DeviceProcess:
    """The firmware image for an ATmega2560 run in simavr (real time), its UART0 on a pty."""
    from .build import build_avr, build_simavr_runner
    image = build_avr()
    runner = build_simavr_runner()
    workdir = tempfile.mkdtemp(prefix="imle-avr-")
    args = [str(runner), str(image.elf), "--dev-addr", hex(image.dev_addr),
            *_common_args(watchdog_ms, state_hz, fault_seed, corrupt_one_in, corrupt_rx_one_in, drop_fraction,
                          command_log, os.path.join(workdir, "tty"))]
    if max_step is not None:
        args += ["--max-step", str(float(max_step))]
    return DeviceProcess.launch(args, workdir)
