"""`imle-record`: record demonstrations from a robot into a replay buffer (Diffusion Policy's zarr layout).

    imle-record --task TASK.toml --out demos.zarr --robot SPEC [--robot.FIELD VALUE ...]
                --source scripted:MODULE:FUNCTION | keyboard
                [--episodes N] [--seed S] [--max-steps N] [--review ask|auto] [--require-success]
                [--camera NAME --camera.FIELD VALUE ...] [--camera-max-age S] [--camera-max-repeat N]
                [--robot-config FILE] [--obs-map ...] [--joint-map ...]
                [--start MODULE:FUNCTION [--start-speed V] [--start-tolerance T] [--start-timeout S]]
    imle-record --out demos.zarr --discard-last

Each episode is stored only when it is kept (`--review ask`: a prompt after every episode, keep /
discard and re-record / quit; `auto`: keep every episode that ended normally), and then atomically:
Ctrl-C, a crash or SIGKILL never damage the episodes already stored.

Cameras (a task with an image) are chosen as for imle-run: `--camera NAME` (picamera2, v4l2, simulated,
recorded, synthetic) with `--camera.FIELD VALUE` options (runtime.cameras). Each tick records the frame
paired with that tick's State by capture time; a frame older than --camera-max-age, dated in the
future, missing, or the same frame for more than --camera-max-repeat ticks is never recorded: the
episode ends there, is discarded (one line saying why; counted as a camera stale event) and the next
attempt starts. The review line and the final line show the camera's frame rate and stale count.

`--start MODULE:FUNCTION`: FUNCTION(task, seed) gives each episode's start pose (the task's action
order); before the episode the robot is driven there slowly through the same robot interface, inside
its limits, and the move is not recorded (runtime.record.start). This is how episodes start at chosen
poses on a real robot.
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Optional

PROG = "imle-record"

EPILOG = """exit status:
  0    every requested episode was stored (or --discard-last done)
  2    a mistake: command line, task, buffer, robot, source, a start pose outside the robot's limits
       (one line on stderr)
  3    the attempts ran out before --episodes episodes were kept
  4    an episode was aborted (device e-stop or fault, bad State, link lost, a source error, the robot
       did not reach the start pose, the camera stopped);
       the device was e-stopped; the episodes stored before it are intact
  5    an e-stop was needed and the device did NOT confirm it: make the robot safe by hand
  130  interrupted (Ctrl-C / SIGTERM), e-stop confirmed; the episode in progress was not stored"""


class UserError(Exception):
    """Reported as one line, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Record demonstrations from a robot into a replay buffer.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="BUFFER.zarr", help="replay buffer to create or append to")
    p.add_argument("--task", default=None, metavar="TASK.toml",
                   help="task file: the state columns and action dimensions by name, image keys, period")
    p.add_argument("--source", default=None, metavar="SOURCE",
                   help="scripted:MODULE:FUNCTION (or scripted:FILE.py:FUNCTION) or keyboard")
    p.add_argument("--discard-last", action="store_true", help="drop the last stored episode and exit")
    from runtime.robots import add_robot_arguments
    add_robot_arguments(p)
    p.add_argument("--episodes", type=int, default=1, help="episodes to store")
    p.add_argument("--max-attempts", type=int, default=None, help="give up after this many episodes were recorded "
                   "(kept or not; default: 3 x --episodes)")
    p.add_argument("--seed", type=int, default=0, help="attempt i resets a simulated plant with seed S+i")
    p.add_argument("--max-steps", type=int, default=1000, help="commands per episode at most")
    p.add_argument("--review", choices=("ask", "auto"), default=None,
                   help="ask: keep/discard each episode at a prompt; auto: keep those that ended normally "
                        "(default: ask on a terminal, else auto)")
    p.add_argument("--require-success", action="store_true",
                   help="auto review: keep only episodes whose task success signal reached its threshold")
    from runtime.cameras import add_camera_arguments
    from runtime.cameras.monitor import DEFAULT_MAX_REPEAT
    cam = add_camera_arguments(p)
    cam.add_argument("--camera-max-age", type=float, default=None, metavar="S",
                     help="a frame older than this is not recorded: the episode is discarded (default: two "
                          "periods, at least 0.1 s)")
    cam.add_argument("--camera-max-repeat", type=int, default=DEFAULT_MAX_REPEAT, metavar="N",
                     help="the same frame for more ticks in a row than this is a frozen camera: the episode is "
                          "discarded")
    p.add_argument("--robot-config", metavar="FILE", default=None, help="the operator's robot configuration (TOML)")
    p.add_argument("--obs-map", default=None, metavar="TASK=ROBOT,...", help="read state column TASK from ROBOT")
    p.add_argument("--joint-map", default=None, metavar="TASK=ROBOT,...", help="task joint TASK is robot joint ROBOT")
    p.add_argument("--takeover", action="store_true", help="take the device over from another host's session")
    p.add_argument("--start", default=None, metavar="MODULE:FUNCTION",
                   help="FUNCTION(task, seed) -> the episode's start pose (task action order); the robot is "
                        "moved there before each episode (not recorded)")
    p.add_argument("--start-speed", type=float, default=0.25, metavar="V",
                   help="largest joint speed of the move to start (robot units/s; default 0.25)")
    p.add_argument("--start-tolerance", type=float, default=0.01, metavar="T",
                   help="the move ends when every joint is within T of the start (default 0.01)")
    p.add_argument("--start-timeout", type=float, default=5.0, metavar="S",
                   help="seconds after the move's ramp to get within tolerance, else abort (default 5)")
    return p


def _fail(msg: str) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 2


def _one_line(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:300]


def _array_specs(task: Any) -> list:
    from runtime.record.buffer import ArraySpec
    specs = [ArraySpec(task.state.key, (len(task.state.names),)), ArraySpec(task.action.key, (len(task.action.names),))]
    specs += [ArraySpec(im.key, tuple(im.shape), "uint8") for im in task.images[:1]]
    return specs


def _check_attrs(path: Path, task: Any) -> None:
    """An existing buffer recorded for another task (period, names) is refused: one buffer, one task."""
    from runtime.record.buffer import read_attrs
    rec = read_attrs(path).get("imle_record")
    old = rec.get("task") if isinstance(rec, dict) else None
    if not isinstance(old, dict):
        return
    new = task.to_dict()
    for part, key in (("task", "period_s"), ("observation", "state"), ("action", "names"), ("action", "joints")):
        a, b = (old.get(part) or {}).get(key), new[part][key]
        if a is not None and a != b:
            raise UserError(f"{path} was recorded with {part}.{key} = {str(a)[:80]}; this task has {str(b)[:80]}: "
                            "record into a new buffer")


def _discard_last(out: str) -> int:
    from runtime.record.buffer import BufferError, ReplayBufferWriter
    try:
        with ReplayBufferWriter(out, create=False) as w:
            n = w.n_episodes
            frames = w.discard_last()
            print(f"discarded episode {n - 1} ({frames} frames); {out} holds {w.n_episodes} episodes")
    except BufferError as exc:
        return _fail(str(exc))
    return 0


def _ask(prompt: str) -> str:
    try:
        return input(prompt).strip().lower()
    except EOFError:
        return "q"


def _fps(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.1f}"


def _review(res: Any, mode: str, require_success: bool, ask: Callable[[str], str], camera: Any = None) -> str:
    """'keep', 'discard' or 'quit' for a complete episode."""
    succ = "-" if res.success is None else ("yes" if res.success else "no")
    line = (f"episode {res.index}: seed {res.seed}, {res.steps} steps, ended: {res.ended}, success: {succ}, "
            f"clipped {res.clipped}, rate-limited {res.rate_limited}")
    if camera is not None:
        line += f", camera {_fps(res.camera_fps)} fps, stale {res.camera_stale}"
    if getattr(res, "move", None) is not None:
        line += f", moved to start in {res.move.ticks} commands (off by {res.move.error:.4f})"
    if getattr(res, "late_ticks", 0):
        line += f", {res.late_ticks} ticks waited for a fresh State"
    if mode == "auto":
        keep = not (require_success and res.success is not True)
        print(f"{line} -> {'kept' if keep else 'discarded (no success)'}")
        return "keep" if keep else "discard"
    print(line)
    while True:
        answer = ask("[k]eep, [d]iscard and re-record, [q]uit (this episode is not stored)? ")
        if answer in ("k", "keep", "y", "yes"):
            return "keep"
        if answer in ("d", "discard", "r", "n", "no"):
            return "discard"
        if answer in ("q", "quit"):
            return "quit"


def _settings(args: argparse.Namespace, robot_config: Any) -> Any:
    from dataclasses import replace

    from runtime.robots import EmulatorConfig, RobotSpecError, SerialConfig, build_settings, cli_values
    try:
        settings, notes = build_settings(args.robot, cli_values(args),
                                         robot_config.robot if robot_config is not None else None)
        if args.takeover:
            if not isinstance(settings, (SerialConfig, EmulatorConfig)):
                raise RobotSpecError(f"--takeover applies to serial devices, not {settings.label()}")
            settings = replace(settings, takeover=True)
        settings.check()
    except RobotSpecError as exc:
        raise UserError(str(exc)) from None
    for note in notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    return settings


def _start_function(args: argparse.Namespace) -> Optional[Callable[[Any, int], Any]]:
    """The --start function and the move's settings, checked before anything is connected."""
    from runtime.record.sources import SourceError, load_function
    from runtime.record.start import MoveToStartConfig, StartError
    try:
        MoveToStartConfig(args.start_speed, args.start_tolerance, args.start_timeout).check()
    except StartError as exc:
        raise UserError(str(exc).replace("move to start: ", "--start-").replace("timeout_s", "timeout")) from None
    if args.start is None:
        return None
    try:
        return load_function(args.start, "--start", "start function")
    except SourceError as exc:
        raise UserError(str(exc)) from None


def _camera_settings(args: argparse.Namespace, task: Any) -> Any:
    """The camera an image task needs, named explicitly (never a silent stand-in); None for a task without
    images. UserError (one line) for a missing, unknown, misconfigured or unwanted camera."""
    from runtime.cameras import CameraSpecError, camera_from_args
    needs = f"records an image ({task.images[0].key})" if task.images else None
    try:
        return camera_from_args(args, f"task {task.name}", needs, "records no image")
    except CameraSpecError as exc:
        raise UserError(str(exc)) from None


def _open_camera(settings: Any, task: Any, handle: Any) -> Any:
    """A FrameStream on the chosen camera (after the robot: the simulated camera draws its States)."""
    from runtime.cameras import CameraContext, CameraSpecError, open_stream
    try:
        stream = open_stream(settings, CameraContext(tuple(task.images[0].shape), task.period_s, handle.lockstep,
                                                     handle.robot, handle.capabilities))
    except CameraSpecError as exc:
        raise UserError(str(exc)) from None
    if stream.synthetic:
        print(f"{PROG}: WARNING: camera {stream.label}: SYNTHETIC FRAMES, NOT A CAMERA are recorded", file=sys.stderr)
    else:
        print(f"{PROG}: camera: {stream.label}", file=sys.stderr)
    return stream


def _setup(args: argparse.Namespace) -> tuple[Any, Any, Any, dict, dict]:
    """Task, robot config, source and name maps (all checked before anything is connected)."""
    from runtime.binding import MappingError, parse_name_map
    from runtime.record.sources import SourceError, make_source
    from runtime.task_spec import TaskSpec, TaskSpecError
    if not args.task or not args.source:
        raise UserError("recording needs --task TASK.toml and --source (or --discard-last alone)")
    try:
        task = TaskSpec.from_toml(args.task)
    except TaskSpecError as exc:
        raise UserError(str(exc)) from None
    rc = None
    if args.robot_config is not None:
        from runtime.robot_config import RobotConfigError, load_robot_config
        try:
            rc = load_robot_config(args.robot_config)
        except RobotConfigError as exc:
            raise UserError(str(exc)) from None
    try:
        maps = parse_name_map(args.obs_map, "--obs-map"), parse_name_map(args.joint_map, "--joint-map")
    except MappingError as exc:
        raise UserError(str(exc)) from None
    args.camera_settings = _camera_settings(args, task)
    try:
        source = make_source(args.source)
    except SourceError as exc:
        raise UserError(str(exc)) from None
    return task, rc, source, maps[0], maps[1]


def main(argv: Optional[list[str]] = None, ask: Callable[[str], str] = _ask) -> int:
    from runtime.cameras import unknown_camera_options
    from runtime.robots import unknown_robot_options
    argv = list(sys.argv[1:] if argv is None else argv)
    unknown = unknown_robot_options(argv) or unknown_camera_options(argv)
    if unknown:
        return _fail(unknown)
    args = build_parser().parse_args(argv)
    if args.discard_last:
        if args.task or args.source or args.robot:
            return _fail("--discard-last works on the buffer alone: give only --out")
        return _discard_last(args.out)
    if args.episodes < 1 or args.max_steps < 1 or (args.max_attempts is not None and args.max_attempts < 1):
        return _fail("--episodes, --max-steps and --max-attempts must be >= 1")
    mode = args.review or ("ask" if sys.stdin.isatty() else "auto")
    handle = writer = source = camera = None
    code = 0
    try:
        task, rc, source, obs_map, joint_map = _setup(args)
        start_fn = _start_function(args)
        settings = _settings(args, rc)
        from runtime.record.buffer import BufferError, ReplayBufferWriter
        out = Path(args.out)
        _check_attrs(out, task)
        attrs = {"imle_record": {"task": task.to_dict(), "robot": settings.label(), "source": args.source}}
        try:
            writer = ReplayBufferWriter(out, _array_specs(task), attrs)
        except (BufferError, OSError) as exc:
            raise UserError(f"{out}: {_one_line(exc)}") from None
        from firmware_bridge.robot import LinkError
        from runtime import robots
        try:
            handle = robots.make_robot(settings, period_s=task.period_s, package=args.task)
        except (robots.RobotSpecError, LinkError) as exc:
            raise UserError(str(exc)) from None
        if args.camera_settings is not None:
            camera = _open_camera(args.camera_settings, task, handle)
        code = _record(args, mode, task, rc, source, obs_map, joint_map, handle, writer, camera, ask, start_fn)
    except UserError as exc:
        code = _fail(str(exc))
    except KeyboardInterrupt:
        code = 130
        print(f"{PROG}: interrupted before recording started", file=sys.stderr)
    finally:
        for thing in (source, camera, handle, writer):
            if thing is not None:
                try:
                    thing.close()
                except Exception as exc:
                    print(f"{PROG}: closing {type(thing).__name__} failed: {_one_line(exc)}", file=sys.stderr)
    return code


def _record(args: argparse.Namespace, mode: str, task: Any, rc: Any, source: Any, obs_map: dict, joint_map: dict,
            handle: Any, writer: Any, camera: Any, ask: Callable[[str], str],
            start_fn: Optional[Callable[[Any, int], Any]] = None) -> int:
    from runtime.binding import MappingError
    from runtime.record.session import RecordConfig, Recorder, limits_summary
    from runtime.record.sources import SourceError
    from runtime.record.start import MoveToStartConfig, StartError, start_pose
    from runtime.robot_config import RobotConfigError
    from runtime.safety import SafetyConfigError
    try:
        rec = Recorder(handle.robot, handle.capabilities, task,
                       RecordConfig(task.period_s, args.max_steps, lockstep=handle.lockstep,
                                    move=MoveToStartConfig(args.start_speed, args.start_tolerance,
                                                           args.start_timeout),
                                    camera_max_age_s=args.camera_max_age, camera_max_repeat=args.camera_max_repeat),
                       camera, rc, obs_map, joint_map)
    except (MappingError, SafetyConfigError, RobotConfigError, ValueError) as exc:
        raise UserError(str(exc)) from None
    print(f"recording {task.name} from {handle.spec} at {task.period_s:g} s into {args.out} "
          f"({writer.n_episodes} episodes there); limits: {limits_summary(rec.limits)}")
    previous = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    signal.signal(signal.SIGINT, lambda s, f: rec.request_stop())
    signal.signal(signal.SIGTERM, lambda s, f: rec.request_stop())
    max_attempts = args.max_attempts or 3 * args.episodes
    kept = attempt = 0
    code = 0
    try:
        while kept < args.episodes and attempt < max_attempts:
            seed = args.seed + attempt
            try:
                start = None if start_fn is None else start_pose(start_fn, task, seed, len(task.action.names))
                res = rec.record_episode(source, attempt, seed, start)
            except StartError as exc:  # nothing moved for this episode: a mistake, not an abort
                print(f"{PROG}: error: {exc}", file=sys.stderr)
                code = 2
                break
            except (SourceError, ValueError) as exc:  # ValueError: a State or frame that does not fit the task
                print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
                code = 4
                break
            attempt += 1
            if rec.stopped:
                code = 130
                break
            if res.camera_problem:  # a wrong frame is never recorded: this episode is discarded, counted
                print(f"{PROG}: episode {res.index} discarded after {res.steps} steps: {res.ended}; not stored",
                      file=sys.stderr)
                stopped = camera.as_dict().get("stopped") if camera is not None else ""
                if stopped:
                    print(f"{PROG}: the camera stopped ({stopped}); recording ends", file=sys.stderr)
                    code = 4
                    break
                continue
            if not res.complete:
                print(f"{PROG}: episode {res.index} aborted after {res.steps} steps: {res.ended}; not stored",
                      file=sys.stderr)
                code = 4
                break
            decision = _review(res, mode, args.require_success, ask, camera)
            if decision == "quit":
                break
            if decision == "keep":
                writer.append_episode(res.data, seed)
                kept += 1
                print(f"stored episode {writer.n_episodes - 1} ({res.steps} frames)")
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    if code in (4, 130):
        if not rec.engage_estop():
            print(f"{PROG}: E-STOP NOT CONFIRMED by the device: make the robot safe by hand", file=sys.stderr)
            code = 5
        elif code == 130:
            print(f"{PROG}: interrupted; e-stop engaged (confirmed); the episode in progress was not stored",
                  file=sys.stderr)
    elif kept < args.episodes and decision_quit(kept, attempt, max_attempts):
        print(f"{PROG}: {kept} of {args.episodes} episodes kept after {attempt} attempts", file=sys.stderr)
        code = 3
    line = f"{args.out}: {writer.n_episodes} episodes, {writer.n_frames} frames"
    if camera is not None:
        d = camera.as_dict()
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(rec.camera_by_reason.items()))
        line += (f"; camera {d.get('name', '?')}: {_fps(_num(d.get('fps')))} fps, {d.get('frames', 0)} frames, "
                 f"drops {d.get('drops', 0)}, stale {rec.camera_stale}")
        if rec.camera_stale:
            line += f" ({reasons}; {rec.camera_stale} episodes discarded)"
    print(line)
    return code


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def decision_quit(kept: int, attempt: int, max_attempts: int) -> bool:
    """The loop ended without enough episodes because the attempts ran out (not an operator's quit)."""
    return attempt >= max_attempts


if __name__ == "__main__":
    sys.exit(main())
