"""Fault campaign: one fault per `imle-run` run against the emulated device, and what came of it.

    nice -n 5 python benchmarks/fault_campaign.py               # every row, 200 ticks each (~8 min)
    python benchmarks/fault_campaign.py --quick --rows baseline,unplug-1s    # CI-size: 40 ticks

Each row is a real run, as deployed: `python -m runtime.cli PACKAGE --robot serial:PTY` (real time,
the package's period) against `imle-emulator` (Push-T plant, 300 ms watchdog, 200 px max_step) over
a pseudo-terminal, with one fault injected once the loop is live (after a quarter of the ticks were
applied): through the emulator's stdin (corruption, drops, reset, unplug, silence, hostile States),
by this script (SIGSTOP/SIGCONT of the imle-run process, a second imle-run on the same port), or by
the package itself (hil_tests/hostile_packages.py: a tampered +-1e9 action range, a generator driven
into the corners). Every row uses the same operator robot config: `[loop] link_give_up_s = 3` (the
default of 30 s would make the "for good" rows wait half a minute; every other setting is the default:
on_device_fault = stop, max_bad_states = 5, host step limit = the device's max_step).

The package is the tiny HIL package (hil_tests/runtime_fixtures.build_tiny_package: a random
down_dims 8/16 Push-T state network, fp32, 4 candidates, actions within ~15 px of the table's middle),
exported once to runs/fault_campaign/packages/ (or --package DIR for another one, e.g. the shipped
package). Per row:

  sent       commands the host sent (rows of its steps.csv with a command)
  applied    commands the device applied (valid targets in the emulator's --command-log)
  foreign    applied targets equal to no command the host sent (must be 0)
  cmd step   largest change between consecutive commands the host sent (px)
  app step   largest change between consecutive applied targets (px; the device refuses > 200)
  surfaced   what the operator was told: device faults by code, refused commands, bad States, link
             losses, corrupt frames, and the stop reason (from summary.json)
  estop      the device's e-stop latch after the run (probed with a fresh session once the fault
             is lifted; "-" where no probe is possible)
  exit       imle-run's exit code; ok = the exit code and behaviour the row demands (EXPECTED below)

--device picks the device program (hil_tests/device_kinds.py): python (default, imle-emulator, the
above), c-host (the C reference firmware's host build, `imle-device`) or avr-sim (the same C core
built for an ATmega2560 and run in simavr, `imle-simavr`), both started by
firmware_bridge.firmware.process with the same fault-injection stdin commands. The C devices serve
two joints agent_x/agent_y in [0, 512] (max_step 200, 300 ms watchdog, 50 Hz States) and no extras,
so the Push-T packages (which observe the block) are refused by the runtime's name mapping: their
rows run a two-joint package instead (build_joint_package below: a hand-made ONNX generator that
observes agent_x, agent_y only; the tampered and corner packages likewise), and the hostile-State
rows are skipped (the C devices have no `hostile-state` injection; the table says so).

    nice -n 5 python benchmarks/fault_campaign.py --device avr-sim --ticks 100

Prints the table; writes benchmarks/results/fault_campaign.json (every number, the exact commands)
and benchmarks/results/fault_campaign.md (the table), or fault_campaign_<device>.{json,md} for the
C devices. Exit status 1 when a row is not ok.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results" / "fault_campaign.json"
PACKAGES = REPO / "runs" / "fault_campaign" / "packages"
DEVICE_MAX_STEP = 200.0   # px: the emulated Push-T device refuses larger steps (IMPLAUSIBLE)
BOX = (0.0, 512.0)        # px: the device's joint limits
ROBOT_CONFIG = "[loop]\nlink_give_up_s = 3.0\n"
DEVICES = ("python", "c-host", "avr-sim")
DEVICE_PROGRAM = {"python": "imle-emulator", "c-host": "imle-device", "avr-sim": "imle-simavr"}
# What a C device cannot do, by the stdin command a row needs (the row is skipped, with this reason).
C_LACKS = {"hostile-state": "skipped: the C devices have no hostile-State injection (no `hostile-state` stdin command)"}


@dataclass
class Row:
    """One fault and what the rules demand of the run that meets it."""
    name: str
    fault: str                         # what is done, one line
    expect_exit: tuple[int, ...]       # exit codes the rules allow
    expect: str                        # the behaviour demanded, one line
    emulator_args: list[str] = field(default_factory=list)
    inject: Optional[str] = None       # an emulator stdin command, sent once the loop is live
    action: Optional[str] = None       # sigstop | second-host | second-host-takeover (done by this script)
    package: str = "tiny"              # tiny | tampered | corner
    lift: Optional[str] = None         # stdin commands (";"-separated) that end the fault before the probe
    probe: bool = True                 # read the device's e-stop latch after the run
    # extra checks on the measured row: a list of failures (empty = the behaviour is as demanded)
    check: Optional[Callable[[dict], list[str]]] = None


def _completed(r: dict) -> list[str]:
    return [] if r["steps"] == r["ticks"] else [f"ran {r['steps']} of {r['ticks']} steps"]


def _stopped(r: dict) -> list[str]:
    out = [] if r["stop_reason"] else ["no stop reason"]
    return out + ([] if r["steps"] < r["ticks"] else ["ran every step"])


def _surfaced(*keys: str) -> Callable[[dict], list[str]]:
    def check(r: dict) -> list[str]:
        s = r["surfaced"]
        return [f"not surfaced: {k}" for k in keys if not s.get(k)]
    return check


def _all(*checks: Callable[[dict], list[str]]) -> Callable[[dict], list[str]]:
    return lambda r: [f for c in checks for f in c(r)]


def _estopped(r: dict) -> list[str]:
    return [] if r["device_estop"] is True else [f"device e-stop latch after the run: {r['device_estop']}"]


def _stop_confirmed_or_reported(r: dict) -> list[str]:
    """Stopped with the e-stop confirmed (4), or the operator told it was not (5): then the device must
    be e-stopped anyway or unreachable (never driving on)."""
    if r["exit_code"] == 4:
        return _estopped(r)
    return []


def _second_host_refused(r: dict) -> list[str]:
    sh = r.get("second_host") or {}
    out = [] if sh.get("exit_code") == 2 else [f"second host exit {sh.get('exit_code')}"]
    return out + ([] if "Traceback" not in sh.get("stderr", "") else ["second host traceback"])


def _held_to_box(r: dict) -> list[str]:
    out = [] if r["surfaced"].get("clipped", 0) + r["surfaced"].get("rate_limited", 0) > 0 else \
        ["no command clipped or step-limited"]
    lo, hi = r["applied_range"] or (BOX[0], BOX[1])
    return out + ([] if BOX[0] <= lo and hi <= BOX[1] else [f"applied targets in [{lo}, {hi}]"])


def _no_burst_after_stall(r: dict) -> list[str]:
    if (r["largest_applied_gap_s"] or 0) < 0.45:
        return [f"largest gap between applied commands {r['largest_applied_gap_s']} s (the stall did not show)"]
    after = r["min_send_gap_after_largest_s"]
    return [] if after is not None and after > 0.05 else \
        [f"commands sent {after} s apart after the stall (a burst)"]


HOSTILE_KINDS = ("short", "long", "noextras", "nan", "huge")
HOSTILE_TEXT = {"short": "1 joint instead of 2", "long": "3 joints instead of 2", "noextras": "0 extras instead of 4",
                "nan": "position NaN", "huge": "position 1e30"}

ROWS: list[Row] = [
    Row("baseline", "no fault", (0,), "every step runs; nothing reported",
        check=_completed),
    Row("corrupt-d2h-1in50", "device->host: 1 in 50 bytes corrupted", (3,),
        "completes; the corrupt frames dropped by the CRC are counted and the link is flagged DEGRADED (exit 3)",
        inject="corrupt 50 0", lift="corrupt 0 0",
        check=_all(_completed, _surfaced("corrupt_frames", "link_degraded"))),
    Row("corrupt-d2h-1in8", "device->host: 1 in 8 bytes corrupted (nearly no State gets through)", (4, 5),
        "the link is declared lost; the run stops and e-stops (or says the e-stop is unconfirmed)",
        inject="corrupt 8 0", lift="corrupt 0 0",
        check=_all(_stopped, _surfaced("link_losses"), _stop_confirmed_or_reported)),
    Row("corrupt-h2d-1in50", "host->device: 1 in 50 bytes corrupted", (3,),
        "completes; the device's BAD_FRAME faults reach the operator (exit 3)",
        inject="corrupt 0 50", lift="corrupt 0 0", check=_all(_completed, _surfaced("device_faults"))),
    Row("corrupt-h2d-1in8", "host->device: 1 in 8 bytes corrupted (most commands lost)", (3, 4, 5),
        "the device holds on its watchdog and reports it; never a foreign command; exit 3 or a stop",
        inject="corrupt 0 8", lift="corrupt 0 0", check=_surfaced("device_faults")),
    Row("drop-30pct", "device->host: 30% of frames dropped", (3,),
        "completes; sequence gaps counted and the link flagged DEGRADED (exit 3)", inject="drop 0.3", lift="drop 0",
        check=_all(_completed, _surfaced("seq_gaps", "link_degraded"))),
    Row("firmware-reset", "the device reboots mid-run (session lost, sequence numbers restart)", (3,),
        "re-handshake, the run completes; the reset reaches the summary (NO_SESSION, a reconnect; exit 3)",
        inject="reset", check=_all(_completed, _surfaced("device_faults", "reconnects"))),
    Row("unplug-1s", "the device vanishes for 1 s (pty closed, comes back on a new one)", (3,),
        "holds while it is gone, reconnects, completes (exit 3)",
        inject="vanish 1", check=_all(_completed, _surfaced("link_losses"))),
    Row("unplug-for-good", "the device vanishes and does not come back", (5,),
        "stops after link_give_up_s; E-STOP NOT CONFIRMED reported (exit 5); outputs written",
        inject="vanish 600", lift="vanish 0", check=_all(_stopped, _surfaced("link_losses"))),
    Row("host-stall-0.5s", "imle-run SIGSTOPped for 0.5 s, then SIGCONT", (3,),
        "the device holds on its watchdog and says so (WATCHDOG); no catch-up burst; completes (exit 3)",
        action="sigstop", check=_all(_completed, _surfaced("device_faults"), _no_burst_after_stall)),
    Row("silent-1s", "the device stops transmitting for 1 s (still receives)", (3,),
        "link loss counted, re-handshake, completes (exit 3)",
        inject="silent 1", check=_all(_completed, _surfaced("link_losses"))),
    Row("silent-for-good", "the device stops transmitting and never resumes", (4, 5),
        "stops after link_give_up_s; the e-stop reaches the device but cannot be confirmed (exit 5)",
        inject="silent 600", lift="silent 0", check=_all(_stopped, _stop_confirmed_or_reported)),
    *[Row(f"hostile-state-{k}", f"100 States with {HOSTILE_TEXT[k]}", (4,),
          "no bad State becomes an observation; held, then stopped after 5 in a row; device e-stopped (exit 4)",
          inject=f"hostile-state {k} 100", check=_all(_stopped, _surfaced("bad_states"), _estopped))
      for k in HOSTILE_KINDS],
    Row("second-host", "a second imle-run opens the port while the run is live", (0,),
        "the second is refused with one line (exit 2); the first run is untouched (exit 0)",
        action="second-host", check=_all(_completed, _second_host_refused)),
    Row("second-host-takeover", "a second imle-run --takeover opens the port while the run is live", (0,),
        "refused: the port is locked by the live run (exit 2); the first run is untouched (exit 0)",
        action="second-host-takeover", check=_all(_completed, _second_host_refused)),
    Row("package-tampered",
        "package whose action range is +-1e9 (self-consistent: hashes match; unsigned), plans of hundreds of px",
        (0,), "the box stays the robot's [0, 512]; every command clipped/step-limited to what the device accepts",
        package="tampered", check=_all(_completed, _held_to_box)),
    Row("package-corner", "package whose generator drives into the corners, candidates jumping across the box",
        (0,), "clipped to the box and step-limited; nothing refused by the device",
        package="corner", check=_all(_completed, _held_to_box)),
]


# ----------------------------------------------------------------------------- packages
def _joint_generator(path: Path, gain: float, follow: float, bias: tuple[float, float]) -> None:
    """actions = gain * z + follow * (the latest observation) + bias, in px (the runtime feeds a generator raw
    observations and reads raw actions): a plan that depends on what the device reports (follow > 0) or only on z."""
    import onnx
    from onnx import TensorProto, helper

    to, tp, a = JOINT_HORIZONS[0], JOINT_HORIZONS[1], 2
    inputs = [helper.make_tensor_value_info("obs_state", TensorProto.FLOAT, [1, to, a]),
              helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", tp, a])]
    out = helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["N", tp, a])
    nodes = [helper.make_node("Slice", ["obs_state", "s0", "s1", "ax"], ["last"]),
             helper.make_node("Mul", ["last", "follow"], ["lastf"]),
             helper.make_node("Mul", ["z", "gain"], ["zs"]),
             helper.make_node("Add", ["zs", "lastf"], ["sum"]),
             helper.make_node("Add", ["sum", "bias"], ["actions"])]
    inits = [helper.make_tensor("s0", TensorProto.INT64, [1], [to - 1]),
             helper.make_tensor("s1", TensorProto.INT64, [1], [to]),
             helper.make_tensor("ax", TensorProto.INT64, [1], [1]),
             helper.make_tensor("gain", TensorProto.FLOAT, [], [gain]),
             helper.make_tensor("follow", TensorProto.FLOAT, [], [follow]),
             helper.make_tensor("bias", TensorProto.FLOAT, [a], list(bias))]
    model = helper.make_model(helper.make_graph(nodes, "gen", inputs, [out], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


JOINT_HORIZONS = (2, 8, 4)   # obs, pred, action
# kind -> (generator gain px, follow, bias px, manifest action range)
JOINT_KINDS = {
    # halfway from where the joints are to the middle (256), plus ~8 px of noise: steps of a few to tens of px
    "tiny": (8.0, 0.5, (128.0, 128.0), (0.0, 512.0)),
    # the manifest's action range is +-1e9 (hashes match; unsigned); plans of hundreds of px, x around 200, y
    # around -200, changing every step
    "tampered": (300.0, 0.0, (200.0, -200.0), (-1e9, 1e9)),
    # candidates disagree wildly and sit far past the box: x beyond 512, y below 0 (into a corner)
    "corner": (500.0, 0.0, (800.0, -300.0), (0.0, 512.0)),
}


def build_joint_package(out: Path, kind: str) -> Path:
    """A two-joint package for the C devices: observes and commands agent_x, agent_y (no extras)."""
    from runtime.package import (ActionSpec, ControlSpec, FileEntry, Horizons, Manifest, MinMaxStats, Normalization,
                                 ObsSpec, sha256_file)

    gain, follow, bias, (lo, hi) = JOINT_KINDS[kind]
    out.mkdir(parents=True, exist_ok=True)
    _joint_generator(out / "generator.onnx", gain, follow, bias)
    names = ["agent_x", "agent_y"]
    to, tp, ta = JOINT_HORIZONS
    m = Manifest(name=f"joints2-{kind}", method="rs_imle", task="two-joints",
                 obs=ObsSpec(state_dim=2, state_names=names),
                 action=ActionSpec(dim=2, names=names, low=[lo, lo], high=[hi, hi]),
                 horizons=Horizons(obs=to, pred=tp, action=ta), control=ControlSpec(period_s=0.1, candidates=4),
                 latent_shape=[tp, 2],
                 normalization=Normalization(state=MinMaxStats([BOX[0]] * 2, [BOX[1]] * 2),
                                             action=MinMaxStats([lo, lo], [hi, hi])),
                 files=[FileEntry("generator.onnx", sha256_file(out / "generator.onnx"), "fp32")])
    (out / "manifest.json").write_text(json.dumps(m.to_dict(), indent=2) + "\n")
    return out


def build_package(kind: str, cache: Path, device: str = "python") -> Path:
    if device != "python":   # the C devices serve two joints and no extras: a two-joint package
        out = cache / f"joints2-{kind}"
        return out if (out / "manifest.json").exists() else build_joint_package(out, kind)
    out = cache / kind
    if (out / "manifest.json").exists():
        return out
    print(f"exporting the {kind} package to {out} ...", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    if str(REPO / "hil_tests") not in sys.path:  # the package builders live with the HIL tests
        sys.path.insert(0, str(REPO / "hil_tests"))
    if kind == "tiny":
        from runtime_fixtures import build_tiny_package
        return Path(build_tiny_package(out))
    from hostile_packages import build_hostile_package
    return Path(build_hostile_package(out, kind))


# ----------------------------------------------------------------------------- measurement
def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line being written when the emulator was stopped
    return out


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


def _largest_step(targets: np.ndarray) -> Optional[float]:
    return float(np.abs(np.diff(targets, axis=0)).max()) if len(targets) > 1 else None


def measure(steps_csv: Path, command_log: Path) -> dict[str, Any]:
    """Commands sent (host) vs applied (device), foreign commands and the largest steps."""
    sent: list[tuple[float, ...]] = []
    sent_at: list[float] = []   # host clock: when each command's tick started
    if steps_csv.exists():
        with open(steps_csv) as fh:
            rows = list(csv.DictReader(fh))
        cols = [c for c in (rows[0].keys() if rows else []) if c.startswith("command_")]
        for r in rows:
            if cols and all(r[c] != "" for c in cols):
                sent.append(tuple(float(r[c]) for c in cols))
                sent_at.append(float(r.get("start_s") or "nan"))
    applied_all = _read_jsonl(command_log)
    applied = [tuple(float(v) for v in c["targets"]) for c in applied_all if c.get("valid", True)]
    # The host's targets are float32 on the wire: compare as float32 (the CSV holds their exact repr).
    sent_keys = {tuple(np.float32(v) for v in t) for t in sent}
    foreign = [t for t in applied if tuple(np.float32(v) for v in t) not in sent_keys]
    times = [c["t"] for c in applied_all if c.get("valid", True)]
    app = np.array(applied) if applied else np.zeros((0, 2))
    return {
        "sent": len(sent), "applied": len(applied), "applied_hold": len(applied_all) - len(applied),
        "foreign": len(foreign), "foreign_examples": [list(t) for t in foreign[:3]],
        "largest_commanded_step": _largest_step(np.array(sent)) if sent else None,
        "largest_applied_step": _largest_step(app),
        "applied_range": [float(app.min()), float(app.max())] if len(app) else None,
        "largest_applied_gap_s": float(np.diff(times).max()) if len(times) > 1 else None,
        # after the largest gap (a stall, an unplug): the closest two commands, as the host sent them and as
        # the device applied them; a catch-up burst of queued commands shows as a gap far below the period on
        # the host's clock (the device's clock also merges frames it read late, when it was not scheduled)
        "min_send_gap_after_largest_s": _min_gap_after_largest(sent_at),
        "min_gap_after_largest_s": _min_gap_after_largest(times),
    }


def _min_gap_after_largest(times: list[float]) -> Optional[float]:
    gaps = np.diff(times)
    if not np.isfinite(gaps).all():
        return None
    if len(gaps) < 2:
        return None
    after = gaps[int(np.argmax(gaps)) + 1:]
    return float(after.min()) if len(after) else None


def surfaced(summary: dict) -> dict[str, Any]:
    """What the operator was told (summary.json: the same numbers as the printed table)."""
    c = summary.get("counters", {})
    link = summary.get("link") or {}
    dev = summary.get("device_reports") or {}
    return {
        "device_faults": dict(dev.get("faults") or {}), "refused_commands": c.get("refused_commands", 0),
        "flag_states": dict(dev.get("flag_states") or {}), "bad_states": c.get("bad_states", 0),
        "link_losses": c.get("link_loss_events", 0), "link_recoveries": c.get("link_recoveries", 0),
        "corrupt_frames": sum((link.get("corrupt") or {}).values()), "seq_gaps": link.get("seq_gaps", 0),
        "reconnects": link.get("reconnects", 0),
        "link_degraded": bool((summary.get("link_errors") or {}).get("degraded")),
        "clipped": c.get("clipped", 0), "rate_limited": c.get("rate_limited", 0),
        "fault_holds": c.get("fault_holds", 0), "skipped_ticks": c.get("skipped_ticks", 0),
        "stop_reason": summary.get("stop_reason") or "", "estop": summary.get("estop") or {},
        "outcome": summary.get("outcome", ""),
    }


def surfaced_text(s: dict) -> str:
    parts = [f"{k} {v}" for k, v in sorted(s["device_faults"].items())]
    for key, label in (("refused_commands", "refused"), ("bad_states", "bad States"), ("link_losses", "link lost"),
                       ("corrupt_frames", "corrupt frames"), ("seq_gaps", "seq gaps"), ("reconnects", "reconnects"),
                       ("clipped", "clipped"),
                       ("rate_limited", "step-limited")):
        if s.get(key):
            parts.append(f"{label} {s[key]}")
    if s.get("link_degraded"):
        parts.append("link DEGRADED")
    if s["stop_reason"]:
        parts.append(f"STOP: {s['stop_reason']}")
    return "; ".join(parts) or "nothing"


# ----------------------------------------------------------------------------- one row
def _wait_live(emu: Any, proc: subprocess.Popen, log: Path, trigger: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if _count_lines(log) >= trigger:
            return True
        time.sleep(0.05)
    return False


def _probe_estop(port: str, timeout: float = 3.0) -> Optional[bool]:
    """The device's e-stop latch, read by a fresh session (takeover: the run is over)."""
    from firmware_bridge.protocol import StatusFlags
    from firmware_bridge.robot import LinkError
    from firmware_bridge.serial_link import SerialLink

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with SerialLink(port, takeover=True) as link:
                return bool(link.wait_state(timeout=1.0).has(StatusFlags.ESTOP))
        except (LinkError, OSError):
            time.sleep(0.2)
    return None


def _imle_run(package: Path, port: str, ticks: int, seed: int, out: Path, config: Path,
              extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "runtime.cli", str(package), "--robot", f"serial:{port}", "--max-steps", str(ticks),
            "--seed", str(seed), "--status", "off", "--robot-config", str(config), "--out", str(out), *extra]


def _env() -> dict[str, str]:
    return dict(os.environ, PYGAME_HIDE_SUPPORT_PROMPT="1",
                PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def skip_reason(row: Row, device: str) -> Optional[str]:
    """Why `row` cannot run on `device` (None: it can)."""
    if device == "python":
        return None
    needs = (row.inject or "").split(" ")[0]
    return C_LACKS.get(needs)


def start_device(device: str, seed: int, log: Path, row: Row) -> Any:
    """The device program on a pty, with its command log and the row's extra arguments."""
    if device == "python":
        from firmware_bridge.emulator import start_emulator
        return start_emulator("realtime", seed=seed, fault_seed=seed, command_log=str(log),
                              extra_args=row.emulator_args)
    from firmware_bridge.firmware.process import start_avr_device, start_host_device
    if device == "c-host":
        return start_host_device(fault_seed=seed, command_log=str(log), extra_args=row.emulator_args)
    if row.emulator_args:
        raise ValueError(f"row {row.name}: avr-sim takes no extra device arguments, got {row.emulator_args}")
    return start_avr_device(fault_seed=seed, command_log=str(log))


def skipped_result(row: Row, ticks: int, reason: str) -> dict[str, Any]:
    return {"row": row.name, "fault": row.fault, "expect_exit": list(row.expect_exit), "expect": row.expect,
            "ticks": ticks, "package": row.package, "skipped": reason, "ok": True, "failures": []}


def run_row(row: Row, package: Path, ticks: int, seed: int, extra: list[str], workdir: Path,
            device: str = "python") -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    log, out, config = workdir / "commands.jsonl", workdir / "out", workdir / "robot.toml"
    log.unlink(missing_ok=True)
    config.write_text(ROBOT_CONFIG)
    emu = start_device(device, seed, log, row)
    cmd = _imle_run(package, emu.port, ticks, seed, out, config, extra)
    result: dict[str, Any] = {"row": row.name, "fault": row.fault, "expect_exit": list(row.expect_exit),
                              "expect": row.expect, "ticks": ticks, "package": row.package,
                              "emulator": " ".join([DEVICE_PROGRAM[device], "--command-log", "LOG",
                                                    *row.emulator_args]),
                              "inject": row.inject or row.action or "",
                              "command": shlex.join(["imle-run", *cmd[3:]])}
    t0 = time.monotonic()
    injected_at = None
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=_env())
        period = 0.1
        trigger = max(5, ticks // 4)
        live = _wait_live(emu, proc, log, trigger, timeout=60.0)
        if live:
            injected_at = _count_lines(log)
            if row.inject:
                emu.command(row.inject)
            elif row.action == "sigstop":
                os.kill(proc.pid, signal.SIGSTOP)
                time.sleep(0.5)
                os.kill(proc.pid, signal.SIGCONT)
            elif row.action in ("second-host", "second-host-takeover"):
                cmd2 = _imle_run(package, emu.port, 5, seed, workdir / "out2", config,
                                 extra + (["--takeover"] if row.action.endswith("takeover") else []))
                res2 = subprocess.run(cmd2, capture_output=True, text=True, cwd=REPO, env=_env(), timeout=120)
                result["second_host"] = {"command": shlex.join(["imle-run", *cmd2[3:]]),
                                         "exit_code": res2.returncode, "stderr": res2.stderr.strip()[-400:]}
        try:
            stdout, stderr = proc.communicate(timeout=ticks * period * 4 + 90)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=60)
            result["hung"] = True
        result["wall_s"] = round(time.monotonic() - t0, 1)
        result["exit_code"] = proc.returncode
        result["injected_after_applied"] = injected_at
        result["stderr_tail"] = stderr.strip()[-600:]
        result["traceback"] = "Traceback" in stderr
        for line in (row.lift or "").split(";"):
            if line.strip() and emu.running:
                emu.command(line.strip())
        time.sleep(0.3 if row.lift else 0.0)
        result["device_status"] = emu.status() if emu.running else {}
        result["device_estop"] = _probe_estop(emu.port) if row.probe and emu.running else None
    finally:
        emu.stop()
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    result["summary_written"] = summary_path.exists()
    result["steps"] = sum(e.get("steps", 0) for e in summary.get("episodes", []))
    result["stop_reason"] = summary.get("stop_reason") or ""
    result["surfaced"] = surfaced(summary) if summary else {}
    result.update(measure(out / "steps.csv", log))
    failures = judge(row, result)
    result["ok"] = not failures
    result["failures"] = failures
    return result


def judge(row: Row, r: dict) -> list[str]:
    """The rules every row must meet, then the row's own."""
    f = []
    if r["exit_code"] not in row.expect_exit:
        f.append(f"exit {r['exit_code']}, expected {'/'.join(map(str, row.expect_exit))}")
    if r.get("hung"):
        f.append("imle-run did not end")
    if r["traceback"]:
        f.append("traceback on stderr")
    if not r["summary_written"]:
        f.append("no summary.json")
    if r["foreign"]:
        f.append(f"{r['foreign']} foreign commands applied")
    if r["largest_applied_step"] is not None and r["largest_applied_step"] > DEVICE_MAX_STEP + 1e-3:
        f.append(f"applied step {r['largest_applied_step']:.1f} px > {DEVICE_MAX_STEP:g}")
    if r["injected_after_applied"] is None and row.name != "baseline" and row.package == "tiny":
        f.append("the fault was never injected (the loop did not get live)")
    if row.check is not None and r["summary_written"]:
        f.extend(row.check(r))
    return f


def _device_unavailable(device: str) -> Optional[str]:
    """None when the C device can be built and run here, else why not (one line)."""
    from firmware_bridge.firmware.build import BuildUnavailable, avr_toolchain_missing, host_compiler
    if device == "avr-sim":
        return avr_toolchain_missing()
    try:
        host_compiler()
    except BuildUnavailable as exc:
        return str(exc)
    return None


# ----------------------------------------------------------------------------- output
def _f(x: Optional[float]) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def _estop_text(v: Optional[bool]) -> str:
    return "-" if v is None else ("yes" if v else "no")


def table(results: list[dict]) -> str:
    head = (f"{'row':<26} {'sent':>5} {'appl':>5} {'forgn':>5} {'cmd step':>8} {'app step':>8} {'exit':>4} "
            f"{'estop':>5} {'ok':>3}  surfaced to the operator")
    lines = [head, "-" * len(head)]
    for r in results:
        if r.get("skipped"):
            lines.append(f"{r['row']:<26} {r['skipped']}")
            continue
        lines.append(f"{r['row']:<26} {r['sent']:>5} {r['applied']:>5} {r['foreign']:>5} "
                     f"{_f(r['largest_commanded_step']):>8} {_f(r['largest_applied_step']):>8} {r['exit_code']:>4} "
                     f"{_estop_text(r['device_estop']):>5} {'yes' if r['ok'] else 'NO':>3}  "
                     f"{surfaced_text(r['surfaced']) if r['surfaced'] else '(no summary)'}")
        for failure in r["failures"]:
            lines.append(f"{'':26} !! {failure}")
    return "\n".join(lines)


def markdown(results: list[dict], meta: dict) -> str:
    dev = "" if meta["device"].get("kind", "python") == "python" else \
        f"device {meta['device']['kind']} ({meta['device']['program']}); "
    lines = [f"Fault campaign: `{meta['command']}` ({dev}{meta['ticks']} ticks per row at the package's period, "
             f"{meta['package_note']}; {meta['machine']['cpus']} CPUs, "
             f"load {' '.join(meta['machine']['loadavg_at_end'])}"
             f" at the end; {meta['wall_s']:.0f} s in all).", "",
             "| row | fault | sent | applied | foreign | largest cmd step (px) | largest applied step (px) | exit "
             "(expected) | device e-stop after | surfaced to the operator | ok |",
             "|---|---|---:|---:|---:|---:|---:|---|---|---|---|"]
    for r in results:
        if r.get("skipped"):
            lines.append(f"| {r['row']} | {r['fault']} | - | - | - | - | - | - "
                         f"({'/'.join(map(str, r['expect_exit']))}) | - | {r['skipped']} | - |")
            continue
        surf = surfaced_text(r["surfaced"]) if r["surfaced"] else "(no summary)"
        if r.get("second_host"):
            surf += f"; second host exit {r['second_host']['exit_code']}"
        ok = "yes" if r["ok"] else "NO: " + "; ".join(r["failures"])
        lines.append(f"| {r['row']} | {r['fault']} | {r['sent']} | {r['applied']} | {r['foreign']} | "
                     f"{_f(r['largest_commanded_step'])} | {_f(r['largest_applied_step'])} | {r['exit_code']} "
                     f"({'/'.join(map(str, r['expect_exit']))}) | {_estop_text(r['device_estop'])} | "
                     f"{surf.replace('|', '/')} | {ok} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="all",
                   help=f"comma-separated rows (default all): {', '.join(r.name for r in ROWS)}")
    p.add_argument("--ticks", type=int, default=None, help="commands per run (default 200; 40 with --quick)")
    p.add_argument("--quick", action="store_true", help="CI-size: 40 ticks per row")
    p.add_argument("--seed", type=int, default=2, help="plant, policy and fault-injector seed")
    p.add_argument("--package", type=Path, default=None,
                   help="run the tiny-package rows with this package instead (e.g. the shipped one)")
    p.add_argument("--package-cache", type=Path, default=PACKAGES, help="where the built packages are kept")
    p.add_argument("--imle-run-args", default="", help="extra imle-run arguments for every run (one string)")
    p.add_argument("--device", default="python",
                   help="the device program: python (imle-emulator, default), c-host (the C firmware's host build) or "
                        "avr-sim (the C firmware on an ATmega2560 in simavr)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON results (the table goes next to it as .md; default "
                        "benchmarks/results/fault_campaign.json, or fault_campaign_<device>.json)")
    args = p.parse_args(argv)
    if args.device not in DEVICES:
        print(f"fault_campaign: error: --device must be one of {', '.join(DEVICES)}, got {args.device!r}",
              file=sys.stderr)
        return 2
    if args.out is None:
        args.out = RESULTS if args.device == "python" else RESULTS.with_name(f"fault_campaign_{args.device}.json")
    by_name = {r.name: r for r in ROWS}
    names = list(by_name) if args.rows == "all" else [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        print(f"fault_campaign: error: unknown row {unknown[0]!r}; rows: {', '.join(by_name)}", file=sys.stderr)
        return 2
    ticks = args.ticks or (40 if args.quick else 200)
    if ticks < 20:
        print(f"fault_campaign: error: --ticks must be >= 20 (faults start after a quarter), got {ticks}",
              file=sys.stderr)
        return 2
    if args.rows != "all":   # asked for by name: a row the device cannot run is an error, not a skip
        for n in names:
            why = skip_reason(by_name[n], args.device)
            if why:
                print(f"fault_campaign: error: row {n!r} cannot run on --device {args.device}: "
                      f"{why.removeprefix('skipped: ')}", file=sys.stderr)
                return 2
    if args.device != "python":
        why = _device_unavailable(args.device)
        if why:
            print(f"fault_campaign: error: --device {args.device} is not available here: {why}", file=sys.stderr)
            return 2
    extra = shlex.split(args.imle_run_args)
    rows = [by_name[n] for n in names]
    packages: dict[str, Path] = {}
    for kind in sorted({r.package for r in rows if not skip_reason(r, args.device)}):
        packages[kind] = args.package if (kind == "tiny" and args.package) else \
            build_package(kind, args.package_cache, args.device)
    t0 = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="fault-campaign-") as tmp:
        for i, row in enumerate(rows):
            why = skip_reason(row, args.device)
            if why:
                print(f"[{i + 1}/{len(rows)}] {row.name}: {why}", flush=True)
                results.append(skipped_result(row, ticks, why))
                continue
            print(f"[{i + 1}/{len(rows)}] {row.name}: {row.fault} ...", flush=True)
            r = run_row(row, packages[row.package], ticks, args.seed, extra, Path(tmp) / row.name, args.device)
            print(f"    exit {r['exit_code']} ({r['wall_s']} s), sent {r['sent']}, applied {r['applied']}, foreign "
                  f"{r['foreign']}: {'ok' if r['ok'] else 'NOT OK: ' + '; '.join(r['failures'])}", flush=True)
            results.append(r)
    print(table(results))
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    argv_text = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    meta = {"benchmark": "fault_campaign", "command": f"python benchmarks/fault_campaign.py {argv_text}".strip(),
            "ticks": ticks, "seed": args.seed, "robot_config": ROBOT_CONFIG, "imle_run_args": extra,
            "packages": {k: str(v) for k, v in packages.items()},
            "package_note": (f"package {args.package}" if args.package else
                             "tiny HIL package (hil_tests/runtime_fixtures.build_tiny_package)"
                             if args.device == "python"
                             else "two-joint agent_x/agent_y package (fault_campaign.build_joint_package)") +
            (", hostile packages from hil_tests/hostile_packages.py" if args.device == "python" else
             ", two-joint tampered/corner packages"),
            "device": {"kind": args.device, "program": DEVICE_PROGRAM[args.device], "max_step_px": DEVICE_MAX_STEP,
                       "box_px": list(BOX), "watchdog_ms": 300, "state_hz": 50},
            "wall_s": round(time.monotonic() - t0, 1),
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                        "python": platform.python_version(), "loadavg_at_end": load},
            "rows_ok": sum(r["ok"] for r in results if not r.get("skipped")),
            "rows": sum(not r.get("skipped") for r in results),
            "rows_skipped": [r["row"] for r in results if r.get("skipped")],
            "foreign_total": sum(r.get("foreign", 0) for r in results)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**meta, "results": results}, indent=2, default=str) + "\n")
    md = args.out.with_suffix(".md")
    md.write_text(markdown(results, meta))
    skipped = f" ({len(meta['rows_skipped'])} skipped: not supported by the device)" if meta["rows_skipped"] else ""
    print(f"{meta['rows_ok']}/{meta['rows']} rows as the rules demand{skipped}; {meta['foreign_total']} foreign "
          f"commands applied; wrote {args.out} and {md}")
    return 0 if meta["rows_ok"] == meta["rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
