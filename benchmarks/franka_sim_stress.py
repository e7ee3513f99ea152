"""How often does franka-sim abort a FrankaRobot motion when the machine is busy?

Starts franka-sim (motion limits enforced, as in hil_tests/), optionally K busy-loop processes to
load the cores, then drives N far-target joint motions (joint 7 by 0.6 rad and joint 1 by 0.2 rad,
targets fed at 50 Hz) through FrankaRobot, each on a fresh connection. Counts the motions the
simulator aborted (an FCI limit the commanded stream broke), the cycles the control loop lost and
the stale states it did not follow. `--stall-ms` also freezes the control process itself now and
then (SIGSTOP / SIGCONT, the way a preempted process looks to the arm) for 1 to that many ms, so lost
cycles and late commands happen on any machine. Prints a table, writes
benchmarks/results/franka_sim_stress.json.

    python benchmarks/franka_sim_stress.py --motions 100 --busy 2
    python benchmarks/franka_sim_stress.py --motions 50 --busy 0 --stall-ms 8
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "hil_tests"))
J7 = 6


def _busy() -> None:
    while True:
        pass


class Staller:
    """Freezes a process for 1..max_ms ms every 20-80 ms until stopped; counts the stalls."""

    def __init__(self, pid: int, max_ms: float, seed: int = 0):
        self.pid, self.max_ms, self.rng = pid, max_ms, random.Random(seed)
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.rng.uniform(0.02, 0.08)):
                try:
                    os.kill(self.pid, signal.SIGSTOP)
                    time.sleep(self.rng.uniform(0.001, self.max_ms / 1000.0))
                finally:
                    os.kill(self.pid, signal.SIGCONT)
                self.count += 1
        except ProcessLookupError:  # the control process ended (a fault closes it): nothing left to stall
            pass

    def __enter__(self) -> "Staller":
        if self.max_ms > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def drive_one(host: str, stall_ms: float = 0.0, seed: int = 0, late_commands: str | None = None) -> dict:
    from firmware_bridge.franka import FrankaRobot, SafetyConfig

    robot = FrankaRobot(host, realtime=False, safety=SafetyConfig(watchdog_s=0.5), late_commands=late_commands)
    robot.connect()
    try:
        with Staller(robot.control_pid, stall_ms, seed) as staller:
            return _drive(robot) | {"stalls": staller.count}
    finally:
        robot.close()


def _drive(robot) -> dict:
    """One far-target motion at 50 Hz targets; reached within 2 mrad in 4 s?"""
    q0 = robot.wait_state(timeout=2.0).positions.astype(np.float64)
    goal = q0.copy()
    goal[J7] += -0.6 if q0[J7] > 0 else 0.6
    goal[0] += 0.2 if q0[0] < 0.5 else -0.2
    t0 = time.monotonic()
    reached = False
    while time.monotonic() - t0 < 4.0 and not reached:
        robot.send_command(goal)
        time.sleep(0.02)
        st = robot.latest_state()
        reached = st is not None and float(np.max(np.abs(st.positions - goal))) < 2e-3
    stats = robot.stats
    return {"reached": reached, "lost_cycles": stats.lost_cycles, "stale_states": stats.stale_states,
            "control_errors": stats.control_errors}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--motions", type=int, default=100, help="far-target motions to drive (default 100)")
    p.add_argument("--busy", type=int, default=2, help="busy-loop processes loading the cores (default 2)")
    p.add_argument("--stall-ms", type=float, default=0.0,
                   help="also freeze the control process for 1..this many ms every 20-80 ms (default 0: off; "
                        "the FCI aborts past 20 lost cycles)")
    p.add_argument("--late-commands", choices=["auto", "applied", "dropped"], default="auto",
                   help="FrankaRobot's late_commands (default auto: applied, franka-sim being on loopback); "
                        "dropped is what a real arm needs, to see what franka-sim makes of it")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "franka_sim_stress.json")
    args = p.parse_args(argv)
    if not 0 <= args.stall_ms < 20:
        p.error("--stall-ms must be in [0, 20): a longer stall is a communication loss the FCI aborts on")
    try:
        from franka_fixtures import FrankaSim, FrankaSimUnavailable
        sim = FrankaSim(enforce_motion_limits=True).start()
    except ImportError as exc:
        print(f"franka_sim_stress: error: {exc} (pip install 'imle-policy[franka,franka-sim]')", file=sys.stderr)
        return 2
    except FrankaSimUnavailable as exc:
        print(f"franka_sim_stress: error: franka-sim cannot run here: {exc}", file=sys.stderr)
        return 2
    from firmware_bridge.franka import late_commands_for
    late = late_commands_for(args.late_commands, sim.host)
    hogs = [mp.get_context("spawn").Process(target=_busy, daemon=True) for _ in range(args.busy)]
    for h in hogs:
        h.start()
    from firmware_bridge.robot import LinkError

    results = []
    try:
        for i in range(args.motions):
            before = len(sim.aborts())
            try:
                r = drive_one(sim.host, args.stall_ms, seed=i, late_commands=late)
            except LinkError as exc:  # the link itself failed (not an FCI abort): nothing to count
                print(f"franka_sim_stress: error: motion {i}: {exc}", file=sys.stderr)
                return 2
            r["aborted"] = len(sim.aborts()) > before
            results.append(r)
            if r["aborted"]:
                print(f"motion {i}: {sim.aborts()[-1].split('ERROR', 1)[-1].strip()}", flush=True)
    finally:
        for h in hogs:
            h.terminate()
        sim.cleanup()
    n = len(results)
    summary = {
        "motions": n, "busy_loops": args.busy, "stall_ms": args.stall_ms,
        "stalls": sum(r["stalls"] for r in results), "late_commands": late,
        "aborted": sum(r["aborted"] for r in results), "reached": sum(r["reached"] for r in results),
        "lost_cycles": sum(r["lost_cycles"] for r in results),
        "stale_states": sum(r["stale_states"] for r in results),
        "motions_with_lost_cycles": sum(r["lost_cycles"] > 0 for r in results),
        "command": "python benchmarks/franka_sim_stress.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
    }
    print("| motions | busy loops | stalls (max ms) | aborted by franka-sim | target reached "
          "| lost cycles (motions) | stale states |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {n} | {args.busy} | {summary['stalls']} ({args.stall_ms:g}) | {summary['aborted']} "
          f"| {summary['reached']} "
          f"| {summary['lost_cycles']} ({summary['motions_with_lost_cycles']}) | {summary['stale_states']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "motions": results}, indent=1))
    return 0 if summary["aborted"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
