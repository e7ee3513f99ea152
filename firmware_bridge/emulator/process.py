"""Start the emulator as a subprocess and talk to its fault-injection stdin."""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional, Sequence

_REPO_ROOT = Path(__file__).resolve().parents[2]


class EmulatorError(RuntimeError):
    """The emulator process failed to start or to answer."""


class EmulatorProcess:
    """A running `imle-emulator` (or any device program that prints its pty path first and answers the
    same stdin fault commands, such as the C firmware's builds). `port` is the path to open with
    SerialLink (a stable symlink)."""

    Error: type[EmulatorError] = EmulatorError
    NAME = "emulator"

    def __init__(self, proc: subprocess.Popen, port: str, workdir: str, stderr_path: str,
                 lines: "queue.Queue[Optional[str]]") -> None:
        self.proc = proc
        self.port = port
        self.workdir = workdir
        self._stderr_path = stderr_path
        self._lines = lines
        self._cmd_lock = threading.Lock()
        self._final_log: Optional[str] = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def command(self, line: str, timeout: float = 10.0) -> str:
        """Send one stdin command and return the emulator's one-line answer."""
        with self._cmd_lock:
            if not self.running or self.proc.stdin is None:
                raise self.Error(f"{self.NAME} is not running (exit code {self.proc.returncode}); "
                                 f"log: {self.log()[-500:]}")
            self.proc.stdin.write(line.strip() + "\n")
            self.proc.stdin.flush()
            try:
                answer = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise self.Error(f"{self.NAME} did not answer {line.strip()!r} within {timeout} s") from None
            if answer is None:
                raise self.Error(f"{self.NAME} exited while answering {line.strip()!r}")
            if answer.startswith("error"):
                raise self.Error(answer)
            return answer

    def vanish(self, seconds: float) -> None:
        """Close the pty (the host sees the port die); a new one appears at `port` after `seconds`."""
        self.command(f"vanish {seconds}")

    def go_silent(self, seconds: float) -> None:
        """Stop transmitting for `seconds` (the device keeps receiving and simulating)."""
        self.command(f"silent {seconds}")

    def device_reset(self) -> None:
        """Emulate a firmware reset: session lost, sequence numbers restart, a new Hello is needed."""
        self.command("reset")

    def set_drop(self, fraction: float) -> None:
        self.command(f"drop {fraction}")

    def set_corruption(self, tx_one_in: int, rx_one_in: int = 0) -> None:
        self.command(f"corrupt {int(tx_one_in)} {int(rx_one_in)}")

    def hostile_states(self, kind: str, count: int) -> None:
        """The next `count` States the device sends are hostile: kind short | long | noextras | nan | huge."""
        self.command(f"hostile-state {kind} {int(count)}")

    def status(self) -> dict:
        """The device counters (DeviceStatus fields), read over stdin rather than the serial link."""
        return json.loads(self.command("status").split(" ", 1)[1])

    def log(self) -> str:
        """The emulator's stderr so far (kept after stop())."""
        if self._final_log is not None:
            return self._final_log
        try:
            return Path(self._stderr_path).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait, SIGKILL if needed; removes the temporary directory. Returns the exit code."""
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

    def __enter__(self) -> "EmulatorProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @classmethod
    def launch(cls, args: Sequence[str], workdir: str, env: Optional[dict] = None,
               startup_timeout: float = 30.0) -> "EmulatorProcess":
        """Start a device program in `workdir` and wait for the pty path on its first stdout line."""
        stderr_path = os.path.join(workdir, "stderr.log")
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen(list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                    text=True, bufsize=1, env=env)
        lines: "queue.Queue[Optional[str]]" = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, name=f"{cls.NAME}-stdout-{proc.pid}", daemon=True).start()
        dev = cls(proc, os.path.join(workdir, "tty"), workdir, stderr_path, lines)
        try:
            first = lines.get(timeout=startup_timeout)
        except queue.Empty:
            first = None
        if first is None or not os.path.exists(first):
            tail = dev.log()[-800:]
            dev.stop()
            raise cls.Error(f"{Path(args[0]).name if cls.NAME != 'emulator' else 'emulator'} did not start "
                            f"(first line {first!r}); stderr: {tail}")
        dev.port = first
        return dev


def start_emulator(mode: str = "realtime", *, watchdog_ms: int = 300, seed: int = 0, state_hz: float = 50.0,
                   corrupt_one_in: int = 0, corrupt_rx_one_in: int = 0, drop_fraction: float = 0.0,
                   fault_seed: int = 0, malformed_caps: Optional[str] = None, command_log: Optional[str] = None,
                   max_step: Optional[float] = None, hostile_states: Sequence[str] = (),
                   plant: str = "auto", plant_from: Optional[str] = None, latency_ms: float = 0.0,
                   noise: Optional[float] = None,
                   extra_args: Sequence[str] = (), startup_timeout: float = 30.0,
                   python: str = sys.executable) -> EmulatorProcess:
    """Start `imle-emulator` in its own process and wait for its device path.

    plant: "auto" | "pusht" | "joints"; plant_from: a package directory, manifest or task .toml whose
    joints (and limits) the joints plant takes ("auto" picks Push-T for a Push-T robot when gym-pusht is
    installed, else the joints plant). latency_ms, noise: the joints plant's command latency and
    measurement noise (std, all joints). hostile_states: "KIND:AFTER_S:COUNT" strings (`imle-emulator --help`)."""
    workdir = tempfile.mkdtemp(prefix="imle-emu-")
    link = os.path.join(workdir, "tty")
    args = [python, "-m", "firmware_bridge.emulator.cli", "--mode", mode, "--watchdog-ms", str(watchdog_ms),
            "--seed", str(seed), "--state-hz", str(state_hz), "--corrupt-one-in", str(corrupt_one_in),
            "--corrupt-rx-one-in", str(corrupt_rx_one_in), "--drop-fraction", str(drop_fraction),
            "--fault-seed", str(fault_seed), "--link", link, "--exit-on-stdin-eof", *extra_args]
    if malformed_caps:
        args += ["--malformed-caps", malformed_caps]
    if command_log:
        args += ["--command-log", command_log]
    if max_step is not None:
        args += ["--max-step", str(float(max_step))]
    args += ["--plant", plant]
    if plant_from is not None:
        args += ["--from", os.path.abspath(plant_from)]
    if latency_ms:
        args += ["--latency-ms", str(float(latency_ms))]
    if noise is not None:
        args += ["--noise", str(float(noise))]
    for spec in hostile_states:
        args += ["--hostile-states", spec]
    env = dict(os.environ, PYGAME_HIDE_SUPPORT_PROMPT="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")])))
    return EmulatorProcess.launch(args, workdir, env, startup_timeout)
