"""`imle-emulator`: an emulated microcontroller on a pseudo-terminal, driving a plant: Push-T (gym-pusht
physics) or a generic N-joint robot (numpy only) whose joints and limits come from a policy package or
a task file (--plant joints --from PACKAGE_OR_TASK) or from --joints/--lower/--upper.

Prints the device path on the first stdout line, then runs until SIGINT/SIGTERM. Lines on stdin
inject faults at run time; each is answered with one stdout line ("ok ..." or "error ..."):
    vanish SECONDS | silent SECONDS | reset | drop FRACTION | corrupt TX_ONE_IN RX_ONE_IN | status
    hostile-state KIND COUNT   (the next COUNT States are hostile; KIND: short long noextras nan huge)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import select
import signal
import sys
import time
from typing import Callable, Optional, TextIO

from .device import HOSTILE_STATES, MALFORMED_CAPS, DeviceConfig, DeviceCore
from .faults import FaultConfig, FaultInjector
from .plants import PLANTS, Plant, build_plant
from .pty_port import PtyPort


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imle-emulator", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("realtime", "lockstep"), default="realtime",
                   help="realtime: 100 Hz physics on the device clock; lockstep: one control step per JointCommand")
    p.add_argument("--watchdog-ms", type=int, default=300, help="hold position after this long without a "
                   "JointCommand/Heartbeat (realtime only; 0 disables)")
    p.add_argument("--seed", type=int, default=0, help="plant reset seed at start")
    p.add_argument("--state-hz", type=float, default=50.0, help="State stream rate")
    p.add_argument("--firmware-version", default=None, help="default: imle-emulator VERSION (PLANT)")
    p.add_argument("--link", help="also expose the device at this stable symlink path (survives vanish)")
    p.add_argument("--command-log", help="append every applied JointCommand as a JSON line to this file")
    p.add_argument("--max-step", type=float, default=None, metavar="PX",
                   help="refuse a JointCommand that moves a target more than PX (Fault IMPLAUSIBLE); default: the "
                        "plant's (Push-T: 200 px, ~1.5x the largest step in the Push-T demos; joints: 2 x max "
                        "velocity x control period); 0 disables the check")
    j = p.add_argument_group("plant")
    j.add_argument("--plant", choices=PLANTS, default="auto",
                   help="auto (default): Push-T when --from names a Push-T robot (or nothing) and gym-pusht is "
                        "installed, else the joints plant")
    j.add_argument("--from", dest="plant_from", metavar="PACKAGE_OR_TASK",
                   help="a policy package directory, its manifest.json, or a task .toml: the joints plant takes "
                        "its joints (task action.joints, else action names) and limits (action low/high)")
    j.add_argument("--joints", type=names_arg, metavar="A,B,...", help="joint names (joints plant)")
    j.add_argument("--lower", type=floats_arg, metavar="X[,X...]",
                   help="lower joint limits (one for all, or per joint)")
    j.add_argument("--upper", type=floats_arg, metavar="X[,X...]", help="upper joint limits")
    j.add_argument("--max-velocity", type=floats_arg, metavar="V[,V...]",
                   help="joint speed limit per second (default: half the joint's range per second)")
    j.add_argument("--max-accel", type=floats_arg, metavar="A[,A...]",
                   help="joint acceleration limit per second^2 (default: full speed in 0.25 s)")
    j.add_argument("--latency-ms", type=float, default=0.0, help="a command takes effect this long after it arrives")
    j.add_argument("--noise", type=floats_arg, metavar="S[,S...]", help="measurement noise std per joint (seeded)")
    j.add_argument("--control-period", type=float, metavar="S",
                   help="simulated time per lock-step command (default: the task's period, else 0.1 s)")
    j.add_argument("--physics-hz", type=float, default=200.0, help="joints plant integration rate")
    f = p.add_argument_group("fault injection")
    f.add_argument("--corrupt-one-in", type=int, default=0, metavar="N", help="corrupt 1 in N bytes sent")
    f.add_argument("--corrupt-rx-one-in", type=int, default=0, metavar="N", help="corrupt 1 in N bytes received")
    f.add_argument("--drop-fraction", type=float, default=0.0, metavar="F", help="drop this fraction of frames sent")
    f.add_argument("--fault-seed", type=int, default=0, help="seed of the fault injector")
    f.add_argument("--malformed-caps", choices=MALFORMED_CAPS, help="answer Hello with broken Capabilities")
    f.add_argument("--silent-after", type=float, metavar="T", help="go silent T s after the first handshake")
    f.add_argument("--silent-for", type=float, default=1.0, metavar="D")
    f.add_argument("--vanish-after", type=float, metavar="T", help="close the pty T s after the first handshake")
    f.add_argument("--vanish-for", type=float, default=1.0, metavar="D")
    f.add_argument("--reset-after", type=float, metavar="T", help="emulate a firmware reset T s after the "
                   "first handshake")
    f.add_argument("--hostile-states", action="append", default=[], type=parse_hostile, metavar="KIND:AFTER_S:COUNT",
                   help="AFTER_S s after the first handshake, send COUNT hostile States of KIND "
                        f"({', '.join(HOSTILE_STATES)}: one joint fewer, one more, no extras, a NaN position, "
                        "a 1e30 position), then normal ones again; repeatable")
    p.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when stdin closes (parent died)")
    return p


def floats_arg(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"want comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"want finite numbers, got {text!r}")
    return values


def names_arg(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"want comma-separated non-empty names, got {text!r}")
    return names


def parse_hostile(text: str) -> tuple[str, float, int]:
    """KIND:AFTER_S:COUNT -> (kind, after_s, count); argparse shows a ValueError as a usage error."""
    parts = text.split(":")
    if len(parts) != 3 or parts[0] not in HOSTILE_STATES:
        raise argparse.ArgumentTypeError(f"--hostile-states wants KIND:AFTER_S:COUNT with KIND one of "
                                         f"{', '.join(HOSTILE_STATES)}, got {text!r}")
    try:
        after, count = float(parts[1]), int(parts[2])
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hostile-states AFTER_S must be a number and COUNT an integer, "
                                         f"got {text!r}") from None
    if not (math.isfinite(after) and after >= 0) or not 1 <= count <= 1_000_000_000:
        raise argparse.ArgumentTypeError(f"--hostile-states wants AFTER_S >= 0 and COUNT in [1, 1e9], got {text!r}")
    return parts[0], after, count


def log(msg: str) -> None:
    print(f"imle-emulator: {msg}", file=sys.stderr, flush=True)


def make_plant(args: argparse.Namespace) -> Plant:
    """The plant the options ask for (LayoutError, a ValueError, or ImportError for Push-T without gym-pusht)."""
    if args.latency_ms is not None and not (math.isfinite(args.latency_ms) and 0 <= args.latency_ms <= 10_000):
        raise ValueError(f"--latency-ms must be in [0, 10000], got {args.latency_ms}")
    if not (math.isfinite(args.physics_hz) and 10 <= args.physics_hz <= 10_000):
        raise ValueError(f"--physics-hz must be in [10, 10000], got {args.physics_hz}")
    plant = build_plant(args.plant, args.plant_from, args.seed, joint_names=args.joints, lower=args.lower,
                        upper=args.upper, max_velocity=args.max_velocity, max_accel=args.max_accel,
                        latency_s=args.latency_ms / 1000.0, noise=args.noise, control_dt=args.control_period,
                        physics_dt=1.0 / args.physics_hz)
    if plant.kind == "joints":
        c = plant.config  # type: ignore[attr-defined]
        log(f"joints plant from {c.source}: {len(c.joint_names)} joints {', '.join(c.joint_names)}; "
            f"lower {list(c.lower)} upper {list(c.upper)} max_velocity {[round(v, 6) for v in c.max_velocity]} "
            f"max_accel {[round(v, 6) for v in c.max_accel]} latency {c.latency_s:g} s noise {list(c.noise)} "
            f"control period {c.control_dt:g} s")
    else:
        log("Push-T plant")
    return plant


class Emulator:
    """The select() loop around DeviceCore, the pty and stdin commands."""

    def __init__(self, args: argparse.Namespace) -> None:
        if not 0.0 <= args.drop_fraction < 1.0:
            raise ValueError(f"--drop-fraction must be in [0, 1), got {args.drop_fraction}")
        self.args = args
        self.plant = make_plant(args)  # before anything is opened: a bad plant is a one-line error
        self.port = PtyPort(args.link)
        self.faults = FaultInjector(FaultConfig(args.corrupt_one_in, args.corrupt_rx_one_in, args.drop_fraction,
                                                args.fault_seed))
        self.command_log: Optional[TextIO] = open(args.command_log, "a") if args.command_log else None
        config = DeviceConfig(args.mode, args.watchdog_ms, args.state_hz, args.firmware_version, args.malformed_caps,
                              args.max_step)
        self.core = DeviceCore(config, self.plant, self.port.queue, time.monotonic(), self.faults, self.command_log)
        self.stop = False
        self.back_at: Optional[float] = None   # when a vanished device comes back
        self.stdin_open = True
        self._stdin_buf = b""
        self.timed: list[tuple[float, Callable[[float], str]]] = []
        if args.silent_after is not None:
            self.timed.append((args.silent_after, lambda now: self.cmd_silent(now, args.silent_for)))
        if args.vanish_after is not None:
            self.timed.append((args.vanish_after, lambda now: self.cmd_vanish(now, args.vanish_for)))
        if args.reset_after is not None:
            self.timed.append((args.reset_after, self.cmd_reset))
        for kind, after, count in args.hostile_states:
            self.timed.append((after, lambda now, k=kind, c=count: self.cmd_hostile(now, k, c)))

    # ------------------------------------------------------------ fault commands
    def cmd_vanish(self, now: float, seconds: float) -> str:
        self.port.close()
        self.back_at = now + seconds
        log(f"vanished for {seconds:g} s")
        return "ok vanish"

    def cmd_silent(self, now: float, seconds: float) -> str:
        self.core.go_silent(now, seconds)
        log(f"silent for {seconds:g} s")
        return "ok silent"

    def cmd_reset(self, now: float) -> str:
        self.core.reboot(now)
        log("firmware reset")
        return "ok reset"

    def cmd_hostile(self, now: float, kind: str, count: int) -> str:
        self.core.send_hostile_states(kind, count)
        log(f"next {count} State(s) hostile: {kind}")
        return "ok hostile-state"

    def command(self, line: str, now: float) -> str:
        parts = line.split()
        try:
            if parts[0] == "vanish":
                return self.cmd_vanish(now, float(parts[1]))
            if parts[0] == "silent":
                return self.cmd_silent(now, float(parts[1]))
            if parts[0] == "reset":
                return self.cmd_reset(now)
            if parts[0] == "drop":
                self.faults.set_drop(float(parts[1]))
                return "ok drop"
            if parts[0] == "corrupt":
                self.faults.set_corruption(int(parts[1]), int(parts[2]))
                return "ok corrupt"
            if parts[0] == "hostile-state" and len(parts) == 3:
                return self.cmd_hostile(now, parts[1], int(parts[2]))
            if parts[0] == "status":
                st = self.core.status(now)
                return "status " + json.dumps(dataclasses.asdict(st))
        except ValueError as exc:
            if parts and parts[0] == "hostile-state":
                return f"error {exc}"
        except IndexError:
            pass
        return f"error bad command: {line.strip()!r}"

    def _read_stdin(self, now: float) -> None:
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            self.stdin_open = False
            if self.args.exit_on_stdin_eof:
                self.stop = True
            return
        self._stdin_buf += chunk
        while b"\n" in self._stdin_buf:
            line, self._stdin_buf = self._stdin_buf.split(b"\n", 1)
            if line.strip():
                print(self.command(line.decode(errors="replace"), now), flush=True)

    # ------------------------------------------------------------ main loop
    def run(self) -> None:
        print(self.port.open(), flush=True)
        while not self.stop:
            now = time.monotonic()
            if self.back_at is not None and now >= self.back_at:
                self.back_at = None
                self.port.open()
                log(f"back on {self.port.pty_path}")
            if self.timed and self.core.first_session_time is not None:
                due = [e for e in self.timed if now >= self.core.first_session_time + e[0]]
                for event in due:
                    self.timed.remove(event)
                    event[1](now)
            deadline = min(self.core.next_deadline(), self.back_at if self.back_at is not None else math.inf)
            timeout = min(max(0.0, deadline - now), 0.05)
            rlist = (([self.port.master] if self.port.is_open else [])
                     + ([sys.stdin.fileno()] if self.stdin_open else []))
            wlist = [self.port.master] if self.port.is_open and self.port.tx_pending else []
            readable, _, _ = select.select(rlist, wlist, [], timeout)
            now = time.monotonic()
            if self.port.is_open and self.port.master in readable:
                data = self.port.read()
                if data:
                    self.core.receive(data, now)
            if self.stdin_open and sys.stdin.fileno() in readable:
                self._read_stdin(now)
            self.core.tick(now)
            self.port.flush()

    def close(self) -> None:
        self.port.close()
        if self.command_log is not None:
            self.command_log.close()


def main(argv: Optional[list[str]] = None) -> int:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame must not print to our stdout
    args = build_parser().parse_args(argv)
    try:
        emulator = Emulator(args)
    except ImportError as exc:
        print(f"imle-emulator: error: the Push-T plant needs gym-pusht ({exc}); "
              f"install it with: pip install -e '.[sim]', or use --plant joints --from PACKAGE_OR_TASK",
              file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"imle-emulator: error: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum: int, frame: object) -> None:
        emulator.stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        emulator.run()
    finally:
        emulator.close()
    st = emulator.core.status(time.monotonic())
    log("stopped; " + json.dumps(dataclasses.asdict(st)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
