"""Start the C firmware as a device process: the host build (`imle-device`) or the AVR image in simavr
(`imle-simavr`). Both print their pty path first and answer the emulator's stdin fault commands, so a
test drives them exactly like `firmware_bridge.emulator.start_emulator`."""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Optional, Sequence


class DeviceProcessError(RuntimeError):
    """The device program failed to start or to answer."""


class DeviceProcess:
    """A running device program. `port` is the stable symlink to open with SerialLink."""

    def __init__(self, args: Sequence[str], workdir: str, startup_timeout: float = 30.0) -> None:
        self.workdir = workdir
        self._stderr_path = os.path.join(workdir, "stderr.log")
        self._final_log: Optional[str] = None
        self._lock = threading.Lock()
        with open(self._stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                         text=True, bufsize=1)
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            first = self._lines.get(timeout=startup_timeout)
        except queue.Empty:
            first = None
        if first is None or not os.path.exists(first):
            tail = self.log()[-800:]
            self.stop()
            raise DeviceProcessError(f"{Path(args[0]).name} did not start (first line {first!r}); stderr: {tail}")
        self.port = first

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def command(self, line: str, timeout: float = 10.0) -> str:
        with self._lock:
            if not self.running or self.proc.stdin is None:
                raise DeviceProcessError(f"device is not running (exit code {self.proc.returncode}); "
                                         f"log: {self.log()[-500:]}")
            self.proc.stdin.write(line.strip() + "\n")
            self.proc.stdin.flush()
            try:
                answer = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise DeviceProcessError(f"device did not answer {line.strip()!r} within {timeout} s") from None
            if answer is None or answer.startswith("error"):
                raise DeviceProcessError(f"device answered {line.strip()!r} with {answer!r}")
            return answer

    def vanish(self, seconds: float) -> None:
        self.command(f"vanish {seconds}")

    def go_silent(self, seconds: float) -> None:
        self.command(f"silent {seconds}")

    def device_reset(self) -> None:
        self.command("reset")

    def set_drop(self, fraction: float) -> None:
        self.command(f"drop {fraction}")

    def set_corruption(self, tx_one_in: int, rx_one_in: int = 0) -> None:
        self.command(f"corrupt {int(tx_one_in)} {int(rx_one_in)}")

    def status(self) -> dict:
        return json.loads(self.command("status").split(" ", 1)[1])

    def log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        try:
            return Path(self._stderr_path).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if self._final_log is None:
            self._final_log = self.log()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return self.proc.returncode


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
    return DeviceProcess(args, workdir)


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
    return DeviceProcess(args, workdir)
