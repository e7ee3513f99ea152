"""`imle-run`: run a policy package on a robot with the fixed-period control loop.

    imle-run PACKAGE --robot serial:/dev/ttyACM0 | emulator | emulator-lockstep | franka:HOST
             [--robot TYPE --robot.FIELD VALUE ...] [--obs-map POLICY=ROBOT,...] [--joint-map TASK=ROBOT,...]
             [--episodes N] [--seed S] [--precision int8|fp32] [--candidates N] [--threads T]
             [--max-steps 300] [--out DIR] [--save-media] [--robot-config FILE]
             [--on-device-fault stop|hold] [--release-estop] [--takeover]
             [--camera NAME --camera.FIELD VALUE ...] [--camera-max-age S] [--camera-max-stale N]

Ctrl-C / SIGTERM engage the robot's e-stop (retried until the device confirms it), then print the
summary and exit. Mistakes are reported on one line. The exit status says how the run went (EPILOG).
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

PROG = "imle-run"

EPILOG = """exit status:
  0    clean: every episode ran and the device reported nothing
  2    a mistake: command line, package, robot config, connection (one line on stderr)
  3    the run completed, but the device reported faults or refused commands, States were
       bad, the link dropped or lost more of the device's frames than --link-error-budget, or
       camera frames were stale (counts in the summary table and summary.json)
  4    the run stopped early: device e-stop, device fault (--on-device-fault stop), too many
       bad States or stale camera frames in a row, link lost, an error inside the run; the
       device was e-stopped
  5    an e-stop was needed and the device did NOT confirm it: make the robot safe by hand
  130  interrupted (Ctrl-C / SIGTERM), e-stop confirmed by the device

Ctrl-C engages the e-stop and ends the run with the summary. A device whose e-stop is engaged
is not driven unless --release-estop is given (the release must be confirmed by the device).
Limits: the position box is the intersection of the device's limits, --robot-config and the
package's action range (a package can narrow it, never widen it); a per-command step limit
always applies (robot config, device max_velocity * period or max_step; else 10% of the joint
range). The limits used are printed and written to summary.json.
Cameras: an image package needs --camera (picamera2, v4l2, simulated, recorded; synthetic only
for fake frames, flagged in the summary). Every tick the frame nearest to the State's time is
checked: older than --camera-max-age, the same frame too many ticks, or none at all holds the
robot (counted); --camera-max-stale such ticks in a row stop the run (exit 4)."""


class UserError(Exception):
    """Reported as one line, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Run an exported IMLE policy package on a robot.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package", help="model package directory (manifest.json + ONNX files)")
    from runtime.robots import add_robot_arguments
    add_robot_arguments(p)
    p.add_argument("--obs-map", default=None, metavar="POLICY=ROBOT,...",
                   help="read the policy's observation POLICY from the robot's joint or extra ROBOT (names must "
                        "otherwise match exactly; overrides the robot config's [obs_map])")
    p.add_argument("--joint-map", default=None, metavar="TASK=ROBOT,...",
                   help="the task's joint TASK is the robot's joint ROBOT (overrides the robot config's [joint_map])")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="episode i resets a simulated plant with seed S+i and "
                   "plans with policy seed S+i (as imle-eval)")
    p.add_argument("--precision", choices=("int8", "fp32"), default=None,
                   help="graph precision (default: int8 when the package has it)")
    p.add_argument("--candidates", type=int, default=None, help="candidates per plan (default: the package's)")
    p.add_argument("--no-temporal-consistency", action="store_true",
                   help="execute candidate 0 of every plan instead of the one closest to the previous plan")
    p.add_argument("--tc-reset-after", type=int, default=None, metavar="N",
                   help="re-draw the temporal-consistency reference every N plans (0: never; default: the package's)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads (1 leaves a core to the tick loop)")
    p.add_argument("--device", choices=("cpu", "cuda", "tensorrt"), default="cpu",
                   help="where the network runs: cpu, or a GPU (Jetson) through onnxruntime-gpu's CUDA or "
                        "TensorRT provider; use --precision fp32 there (int8 QDQ graphs are tuned for CPUs)")
    p.add_argument("--max-steps", type=int, default=300, help="commands per episode")
    p.add_argument("--out", metavar="DIR", help="write summary.json, steps.csv, timing.png here")
    p.add_argument("--save-media", action="store_true", help="with --out: a rollout GIF per episode "
                   "(simulated Push-T plant)")
    t = p.add_argument_group("timing")
    t.add_argument("--period", type=float, default=None, metavar="S", help="control period (default: the package's)")
    t.add_argument("--rt-priority", type=int, default=10, metavar="N",
                   help="SCHED_FIFO priority of the tick thread when permitted; the link reader gets N-1, "
                        "the planner N-2 (0: normal scheduling)")
    t.add_argument("--spin-ms", type=float, default=0.5, help="busy-wait this long before each deadline")
    t.add_argument("--lead", type=int, default=None, help="request plans this many ticks before their "
                   "handover (default: from measured latency)")
    s = p.add_argument_group("safety")
    s.add_argument("--robot-config", metavar="FILE", default=None,
                   help="the operator's robot configuration (TOML): [robot] type and fields, [obs_map], [joint_map], "
                        "per-joint lower/upper/max_velocity/max_step by joint name, and [loop] state_margin, "
                        "max_bad_states, on_device_fault")
    s.add_argument("--on-device-fault", choices=("stop", "hold"), default=None,
                   help="when the device refuses a command or reports a fault: stop the run (e-stop) or hold "
                        "and go on (default: the robot config's, else stop)")
    s.add_argument("--release-estop", action="store_true",
                   help="the device's e-stop is engaged from before: release it (confirmed) and run")
    s.add_argument("--takeover", action="store_true",
                   help="take the device over from another host's session that is still alive (= --robot.takeover)")
    from runtime.cameras import add_camera_arguments
    from runtime.cameras.monitor import DEFAULT_MAX_REPEAT, DEFAULT_MAX_STALE
    from runtime.stats import LINK_ERROR_BUDGET
    cam = add_camera_arguments(p)
    cam.add_argument("--camera-max-age", type=float, default=None, metavar="S",
                     help="a frame older than this when a tick uses it holds the robot (default: 2 control periods, "
                          "at least 0.1 s: older shows the scene as it was more than two commands ago; the floor "
                          "leaves room for a USB camera's latency at fast rates)")
    cam.add_argument("--camera-max-repeat", type=int, default=DEFAULT_MAX_REPEAT, metavar="N",
                     help="the same frame (sequence number) used for more ticks in a row than this holds the robot")
    cam.add_argument("--camera-max-stale", type=int, default=DEFAULT_MAX_STALE, metavar="N",
                     help="this many camera holds in a row stop the run (exit 4)")
    p.add_argument("--link-error-budget", type=float, default=LINK_ERROR_BUDGET, metavar="F",
                   help="a completed run that lost more than this fraction of the device's frames (sequence gaps "
                        f"and corrupt frames) exits 3, flagged DEGRADED in the summary (default {LINK_ERROR_BUDGET})")
    p.add_argument("--status", choices=("auto", "on", "off"), default="auto",
                   help="live status line on stderr (auto: when stderr is a terminal)")
    # Host-side fault injection for the hardware-in-the-loop tests (hidden from --help).
    p.add_argument("--inject-stall", default=None, help=argparse.SUPPRESS)   # STEP:SECONDS (episode 0)
    p.add_argument("--inject-nan-plan", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--inject-jump", default=None, help=argparse.SUPPRESS)    # STEP:PX[:COUNT] (episode 0)
    return p


def _fail(msg: str) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 2


def camera_status(monitor: Any) -> str:
    """The status line's camera part: holds so far and, while holding, how many in a row of the limit
    ('' without a camera). Read from the loop's FrameMonitor (ints, written by the loop thread)."""
    if monitor is None:
        return ""
    text = f" camera holds {monitor.holds}"
    if monitor.in_row:
        text += f" (HOLDING: {monitor.in_row} in a row, stop at {monitor.max_stale})"
    return text


class StatusLine:
    """A one-line live status on stderr, redrawn with \\r at most `hz` times a second from its own thread."""

    def __init__(self, loop: Any, episodes: int, max_steps: int, hz: float = 4.0) -> None:
        self.loop, self.episodes, self.max_steps, self.period = loop, episodes, max_steps, 1.0 / hz
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)
        self._width = 0

    def start(self) -> None:
        self._thread.start()

    def _line(self) -> str:
        s = self.loop.status
        prog = "-" if math.isnan(s.progress) else f"{s.progress:.2f}"
        jit = "-" if math.isnan(s.jitter_ms) else f"{s.jitter_ms:.2f}"
        plan = "-" if math.isnan(s.plan_ms) else f"{s.plan_ms:.1f}"
        link = "ok" if s.link_ok else "LOST"
        line = (f"episode {s.episode + 1}/{self.episodes} step {s.step}/{self.max_steps} progress {prog} "
                f"jitter {jit} ms plan {plan} ms held {s.held} dropped {s.dropped} link {link}")
        return line + camera_status(getattr(self.loop, "frame_monitor", None))

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            line = self._line()
            pad = max(0, self._width - len(line))
            self._width = len(line)
            sys.stderr.write("\r" + line + " " * pad)
            sys.stderr.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()


def _parse_stall(text: Optional[str]) -> tuple[Optional[int], float]:
    if not text:
        return None, 0.0
    try:
        step, seconds = text.split(":")
        return int(step), float(seconds)
    except ValueError:
        raise UserError(f"--inject-stall takes STEP:SECONDS, got {text!r}") from None


def _parse_jump(text: Optional[str]) -> tuple[Optional[int], float, int]:
    if not text:
        return None, 0.0, 1
    try:
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ValueError
        step, px, count = int(parts[0]), float(parts[1]), int(parts[2]) if len(parts) == 3 else 1
        if step < 0 or count < 1 or not math.isfinite(px):
            raise ValueError
        return step, px, count
    except ValueError:
        raise UserError(f"--inject-jump takes STEP:PX[:COUNT], got {text!r}") from None


def _load_policy(args: argparse.Namespace) -> Any:
    pkg = Path(args.package)
    if not pkg.exists():
        raise UserError(f"package not found: {pkg}")
    if not (pkg / "manifest.json").exists():
        raise UserError(f"{pkg} is not a model package (no manifest.json)")
    from runtime.policy import Policy
    try:
        return Policy(pkg, precision=args.precision, candidates=args.candidates, threads=args.threads, seed=args.seed,
                      temporal_consistency=False if args.no_temporal_consistency else None,
                      tc_reset_after=args.tc_reset_after, device=args.device)
    except Exception as exc:  # PackageError, ValueError, onnxruntime, MemoryError...: one line, never a traceback
        raise UserError(f"cannot load {pkg}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:300]


def _check_period_arg(value: Optional[float]) -> None:
    if value is None:
        return
    from runtime.safety import SafetyConfigError, check_period
    try:
        check_period(value, "--period")
    except SafetyConfigError as exc:
        raise UserError(str(exc)) from None


def _check_out_dir(out: Optional[str]) -> None:
    """--out must be writable before a robot is driven: the outputs are the run's record."""
    if not out:
        return
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".imle-run-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None


def _load_robot_config(path: Optional[str]) -> Any:
    if path is None:
        return None
    from runtime.robot_config import RobotConfigError, load_robot_config
    try:
        return load_robot_config(path)
    except RobotConfigError as exc:
        raise UserError(str(exc)) from None


def _estop_now(robot: Any, confirm_s: float = 2.0) -> bool:
    """Outside the loop (Ctrl-C before it took over): engage the e-stop, retried until confirmed."""
    deadline = time.monotonic() + confirm_s
    while True:
        try:
            if robot.estop(True):
                return True
        except Exception:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _write_outputs(out: Path, stats: Any, summary: dict, loop: Any, save_media: bool) -> list[str]:
    from runtime.stats import plot_timing, write_summary_json
    out.mkdir(parents=True, exist_ok=True)
    written = []
    write_summary_json(summary, out / "summary.json")
    written.append("summary.json")
    caps = loop.caps
    loop.log.write_csv(out / "steps.csv", loop.shape.action_names, caps.joint_names, caps.extra_names,
                       loop.actions.index)
    written.append("steps.csv")
    if plot_timing(stats, out / "timing.png"):
        written.append("timing.png")
    else:
        print(f"{PROG}: matplotlib is not installed: no timing.png", file=sys.stderr)
    if save_media:
        if caps.extra_count < 3:
            print(f"{PROG}: --save-media draws the Push-T plant; this robot has no block pose", file=sys.stderr)
        else:
            try:
                from runtime.pusht_render import write_rollout_gif
                every = max(1, int(round(0.1 / loop.period)))  # about 10 frames per second of robot time
                for ep in stats.episodes:
                    name = f"rollout_ep{ep.index}.gif"
                    if write_rollout_gif(out / name, loop.log.episode_rows(ep.index), fps=10, every=every):
                        written.append(name)
            except ImportError as exc:
                print(f"{PROG}: cannot write the GIF ({exc}); install Pillow", file=sys.stderr)
    return written


def _camera_settings(args: argparse.Namespace, policy: Any) -> Any:
    """The camera an image package needs, named explicitly (never a silent stand-in); None for a state
    package. UserError (one line) for a missing, unknown or misconfigured camera."""
    from runtime.cameras import CameraSpecError, camera_from_args
    image = policy.manifest.obs.image_shape
    needs = None if image is None else f"sees a camera ({'x'.join(map(str, image))} frames)"
    try:
        return camera_from_args(args, f"package {Path(args.package).name}", needs,
                                "sees no camera (a state policy)", "; --camera synthetic runs it on fake frames")
    except CameraSpecError as exc:
        raise UserError(str(exc)) from None


def _open_camera(settings: Any, policy: Any, handle: Any, period: float) -> Any:
    from runtime.cameras import CameraContext, CameraSpecError, open_stream
    c, h, w = policy.manifest.obs.image_shape
    try:
        stream = open_stream(settings, CameraContext((h, w, c), period, handle.lockstep, handle.robot,
                                                     handle.capabilities))
    except CameraSpecError as exc:
        raise UserError(str(exc)) from None
    if stream.synthetic:
        print(f"{PROG}: WARNING: camera {stream.label}: the policy sees SYNTHETIC frames, not the scene",
              file=sys.stderr)
    else:
        print(f"{PROG}: camera: {stream.label}", file=sys.stderr)
    return stream


def _robot_settings(args: argparse.Namespace, robot_config: Any) -> Any:
    """The robot configuration: the robot config's [robot] table < --robot < --robot.FIELD (and --takeover)."""
    from dataclasses import replace

    from runtime.robots import EmulatorConfig, RobotSpecError, SerialConfig, build_settings, cli_values
    try:
        settings, notes = build_settings(args.robot, cli_values(args),
                                         robot_config.robot if robot_config is not None else None)
        if args.takeover:
            if not isinstance(settings, (SerialConfig, EmulatorConfig)):  # sessions are the serial protocol's
                raise RobotSpecError("--takeover applies to serial devices (serial:PORT, emulator), not "
                                     f"{settings.label()}")
            settings = replace(settings, takeover=True)
        settings.check()  # a typo in --robot is reported before the package is loaded
    except RobotSpecError as exc:
        raise UserError(str(exc)) from None
    for note in notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    return settings


def _name_maps(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, str]]:
    from runtime.binding import MappingError, parse_name_map
    try:
        return parse_name_map(args.obs_map, "--obs-map"), parse_name_map(args.joint_map, "--joint-map")
    except MappingError as exc:
        raise UserError(str(exc)) from None


def main(argv: Optional[list[str]] = None) -> int:
    from runtime.robots import unknown_robot_options
    argv = list(sys.argv[1:] if argv is None else argv)
    from runtime.cameras import unknown_camera_options
    unknown = unknown_robot_options(argv) or unknown_camera_options(argv)
    if unknown:
        return _fail(unknown)
    args = build_parser().parse_args(argv)
    if args.episodes < 1 or args.max_steps < 1:
        return _fail("--episodes and --max-steps must be >= 1")
    if args.save_media and not args.out:
        return _fail("--save-media needs --out DIR")
    handle = None
    loop = None
    camera = None
    code = 0
    try:
        stall_step, stall_s = _parse_stall(args.inject_stall)
        jump_step, jump_px, jump_count = _parse_jump(args.inject_jump)
        _check_period_arg(args.period)
        if not 0.0 <= args.link_error_budget <= 1.0:  # NaN fails too
            raise UserError(f"--link-error-budget must be a fraction in [0, 1], got {args.link_error_budget}")
        obs_map, joint_map = _name_maps(args)
        robot_config = _load_robot_config(args.robot_config)
        settings = _robot_settings(args, robot_config)
        _check_out_dir(args.out)
        policy = _load_policy(args)
        camera_settings = _camera_settings(args, policy)
        from runtime.safety import SafetyConfigError, check_period
        try:
            period = check_period(args.period if args.period is not None else policy.manifest.control.period_s,
                                  "--period" if args.period is not None else "the package's control.period_s")
        except SafetyConfigError as exc:
            raise UserError(str(exc)) from None
        from firmware_bridge.robot import LinkError
        from runtime import robots
        try:
            handle = robots.make_robot(settings, period_s=period, package=str(args.package))
        except (robots.RobotSpecError, LinkError) as exc:
            raise UserError(str(exc)) from None

        from runtime.loop import ControlLoop, FaultInjection, LoopConfig, LoopError
        config = LoopConfig(episodes=args.episodes, base_seed=args.seed, max_steps=args.max_steps, period_s=period,
                            lockstep=handle.lockstep, lead_ticks=args.lead, spin_s=args.spin_ms / 1e3,
                            realtime_priority=args.rt_priority, robot_config=robot_config,
                            on_device_fault=args.on_device_fault, release_estop=args.release_estop,
                            obs_map=obs_map, joint_map=joint_map, camera_max_age_s=args.camera_max_age,
                            camera_max_repeat=args.camera_max_repeat, camera_max_stale=args.camera_max_stale,
                            link_error_budget=args.link_error_budget,
                            faults=FaultInjection(stall_at_step=stall_step, stall_s=stall_s,
                                                  nan_plan=args.inject_nan_plan, jump_at_step=jump_step,
                                                  jump_px=jump_px, jump_count=jump_count))
        if camera_settings is not None:
            camera = _open_camera(camera_settings, policy, handle, period)
        try:
            # episode i plans with seed S+i through Policy.reset(seed=): one onnxruntime session per run
            loop = ControlLoop(policy, handle.robot, config, handle.capabilities, camera)
        except (LoopError, ValueError) as exc:
            raise UserError(str(exc)) from None
        for note in loop.stats.limits.get("notes", []):
            print(f"{PROG}: note: {note}", file=sys.stderr)

        previous_handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
        signal.signal(signal.SIGINT, lambda signum, frame: loop.request_estop())
        signal.signal(signal.SIGTERM, lambda signum, frame: loop.request_estop())
        show = args.status == "on" or (args.status == "auto" and sys.stderr.isatty())
        status = StatusLine(loop, args.episodes, args.max_steps) if show else None
        if status:
            status.start()
        try:
            stats = loop.run()  # never raises for what happens inside the run
        finally:
            if status:
                status.stop()
            # Ctrl-C after the run (while the outputs are written) is a plain interrupt again
            signal.signal(signal.SIGINT, previous_handlers[0])
            signal.signal(signal.SIGTERM, previous_handlers[1])

        from runtime.stats import summary_table
        summary = stats.summary()
        summary.update({"package": str(Path(args.package).resolve()), "robot": handle.spec,
                        "precision": policy.precision, "candidates": policy.candidates, "threads": args.threads,
                        "temporal_consistency": policy.temporal_consistency,
                        "tc_reset_after": policy.tc_reset_after, "device": args.device,
                        "seed": args.seed, "firmware": handle.capabilities.firmware_version})
        code = stats.exit_code()
        print(summary_table(summary))
        if stats.stop_reason:
            print(f"{PROG}: stopped: {stats.stop_reason}", file=sys.stderr)
        if code == 5:
            print(f"{PROG}: E-STOP NOT CONFIRMED by the device: make the robot safe by hand", file=sys.stderr)
        if stats.interrupted:
            print(f"{PROG}: interrupted", file=sys.stderr)
        if args.out:
            try:
                written = _write_outputs(Path(args.out), stats, summary, loop, args.save_media)
                print(f"wrote {', '.join(written)} to {args.out}")
            except OSError as exc:
                print(f"{PROG}: error: cannot write the outputs to {args.out}: {exc.strerror or exc}", file=sys.stderr)
                code = code or 2
    except UserError as exc:
        code = _fail(str(exc))
    except KeyboardInterrupt:  # Ctrl-C before the loop took over the signal
        code = 130
        if handle is not None:
            if _estop_now(handle.robot):
                print(f"{PROG}: interrupted; e-stop engaged (confirmed by the device)", file=sys.stderr)
            else:
                code = 5
                print(f"{PROG}: interrupted; E-STOP NOT CONFIRMED by the device: make the robot safe by hand",
                      file=sys.stderr)
        else:
            print(f"{PROG}: interrupted", file=sys.stderr)
    except Exception as exc:  # a bug outside the run: one line, and the robot is e-stopped
        code = 4
        msg = f"{PROG}: error: internal error: {type(exc).__name__}: {_one_line(exc)}"
        if handle is not None and not _estop_now(handle.robot):
            code = 5
            msg += "; E-STOP NOT CONFIRMED by the device"
        print(msg, file=sys.stderr)
    finally:
        if loop is not None:
            loop.close()
        if camera is not None:  # before the robot: the simulated camera reads the robot's States
            camera.close()
        if handle is not None:
            try:
                handle.close()
            except Exception as exc:
                print(f"{PROG}: closing the robot link failed: {_one_line(exc)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
