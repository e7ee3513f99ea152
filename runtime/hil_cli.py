"""`imle-hil`: record a lock-step run of a package as a trace, and check later that it still runs the same.

    imle-hil record PACKAGE --robot emulator-lockstep --out TRACE [--precision int8|fp32] [--seed S]
                    [--episodes N] [--max-steps N] [--candidates N] [--robot.FIELD VALUE ...]
                    [--camera simulated|synthetic]
    imle-hil check PACKAGE TRACE [--robot SPEC ...] [--tolerance]

`check` replays the run with the trace's seeds and settings (on the trace's robot unless --robot is
given) and prints the first divergence: episode, step, field, expected and got values.

`--camera` (image packages only; kept in the trace, so `check` replays with the same camera):
`simulated` (the default) draws the emulated Push-T plant from each lock-step State; `synthetic` is
a gradient whose frame at tick k depends only on k (flagged synthetic). A state package given
--camera is refused with one line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

PROG = "imle-hil"

EPILOG = """exit status:
  0    check: the replay matches the trace; record: the trace was written
  1    check: the replay diverges from the trace (the first divergence is printed)
  2    a mistake: command line, package, robot, unreadable trace, a trace of another package
  130  interrupted

A trace is exact on the platform it was recorded on (same machine, onnxruntime, NumPy, CPU class);
elsewhere it is compared within the golden tolerance of its precision (fp32 1e-4, int8 7e-2 of the
quantity's range). Keep traces outside package directories (exported_models/traces/)."""


class UserError(Exception):
    """Reported as one line, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    from runtime.robots import add_robot_arguments

    p = argparse.ArgumentParser(prog=PROG, description="Recorded regressions of a policy package on a robot.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="run the package in lock-step and store the trace")
    r.add_argument("package")
    add_robot_arguments(r)
    r.add_argument("--out", required=True, metavar="TRACE", help="the trace file to write (.npz)")
    r.add_argument("--precision", choices=("int8", "fp32"), default=None)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--episodes", type=int, default=1)
    r.add_argument("--max-steps", type=int, default=64)
    r.add_argument("--candidates", type=int, default=None)
    r.add_argument("--no-temporal-consistency", action="store_true")
    r.add_argument("--tc-reset-after", type=int, default=None, metavar="N")
    r.add_argument("--camera", default=None, metavar="simulated|synthetic",
                   help="the camera of an image package (default simulated: the emulated plant drawn from each "
                        "State; synthetic: a deterministic gradient); refused for a state package")
    c = sub.add_parser("check", help="replay a trace and report the first divergence")
    c.add_argument("package")
    c.add_argument("trace")
    add_robot_arguments(c)
    c.add_argument("--tolerance", action="store_true",
                   help="compare within the precision's tolerance even on the recording's platform")
    return p


def _record(args: argparse.Namespace) -> int:
    from runtime.hil_run import RunError, RunSettings, record_run
    from runtime.hil_trace import TraceError, save_trace
    from runtime.robots import cli_values

    out = Path(args.out)
    if (out.parent / "manifest.json").exists():
        raise UserError(f"--out {out}: that directory is a package (its loader refuses unlisted files); store "
                        "traces outside it, e.g. exported_models/traces/")
    if args.robot is None:
        raise UserError("record needs --robot (e.g. emulator-lockstep)")
    camera = _camera_choice(args.package, args.camera)
    settings = RunSettings(precision=args.precision, seed=args.seed, episodes=args.episodes, max_steps=args.max_steps,
                           candidates=args.candidates,
                           temporal_consistency=False if args.no_temporal_consistency else None,
                           tc_reset_after=args.tc_reset_after, robot=args.robot, robot_options=cli_values(args),
                           camera=camera)
    try:
        trace = record_run(args.package, settings)
    except RunError as exc:
        raise UserError(str(exc)) from None
    outcome = trace.meta["outcome"]
    if outcome["exit_code"] != 0:
        raise UserError(f"the run did not complete cleanly (imle-run exit status {outcome['exit_code']}"
                        f"{': ' + outcome['stop_reason'] if outcome['stop_reason'] else ''}); no trace written")
    try:
        save_trace(trace, out)
    except (TraceError, OSError) as exc:
        raise UserError(f"cannot write {out}: {getattr(exc, 'strerror', None) or exc}") from None
    print(f"wrote {out}: {trace.meta['package']} {trace.meta['precision']}, {trace.rows} steps, "
          f"{len(trace.plans['row'])} plans, manifest sha256 {trace.meta['manifest_sha256'][:12]}")
    return 0


def _camera_choice(package: str, camera: Optional[str]) -> str:
    """--camera for `record`: one of runtime.hil_run.CAMERAS, and only for a package that sees a camera
    (UserError, one line). Without it: the RunSettings default (simulated), which a state package ignores."""
    from runtime.hil_run import CAMERAS, RunSettings

    if camera is None:
        return RunSettings.camera
    if camera not in CAMERAS:
        raise UserError(f"--camera {camera}: use {' or '.join(CAMERAS)}")
    from runtime.package import PackageError, read_manifest
    try:  # only the observation's shape is read here; record_run checks the package in full
        image = read_manifest(Path(package), trust=False).obs.image_shape
    except (PackageError, OSError) as exc:
        raise UserError(f"cannot load {package}: {' '.join(str(exc).split())[:200]}") from None
    if image is None:
        raise UserError(f"--camera {camera}: package {Path(package).name} sees no camera (a state policy); "
                        f"drop --camera")
    return camera


def _check(args: argparse.Namespace) -> int:
    from runtime.hil_compare import compare, compare_mode
    from runtime.hil_run import RunError, _manifest_sha256, record_run, settings_of
    from runtime.hil_trace import TraceError, load_trace, this_platform
    from runtime.package import PackageError
    from runtime.robots import cli_values

    try:
        trace = load_trace(args.trace)
    except TraceError as exc:
        raise UserError(str(exc)) from None
    try:
        sha = _manifest_sha256(Path(args.package))
    except (PackageError, OSError) as exc:
        raise UserError(f"cannot read {args.package}: {exc}") from None
    if sha != trace.meta["manifest_sha256"]:
        raise UserError(f"trace {Path(args.trace).name} was recorded with manifest sha256 "
                        f"{trace.meta['manifest_sha256']}, {args.package} has {sha}: a trace of another package "
                        f"(or an older build of it)")
    try:
        settings = settings_of(trace)
    except RunError as exc:
        raise UserError(str(exc)) from None
    if args.robot is not None:
        settings.robot, settings.robot_options = args.robot, cli_values(args)
    elif cli_values(args):
        settings.robot_options = {**settings.robot_options, **cli_values(args)}
    exact, mode = compare_mode(trace.meta["platform"], this_platform(), trace.meta["precision"])
    if args.tolerance and exact:
        exact, mode = False, f"{trace.meta['precision']} tolerance (--tolerance)"
    try:
        replay = record_run(args.package, settings)
    except RunError as exc:
        raise UserError(str(exc)) from None
    res = compare(trace, replay, exact, mode)
    print(f"{PROG}: {trace.meta['package']} {trace.meta['precision']} on {settings.robot}: {mode}")
    for note in res.notes:
        print(f"{PROG}: note: {note}")
    if res.divergence is not None:
        print(f"{PROG}: {res.divergence.line()}", file=sys.stderr)
        return 1
    print(f"{PROG}: ok: {res.rows} steps, {len(trace.plans['row'])} plans match")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    from runtime.robots import unknown_robot_options

    argv = list(sys.argv[1:] if argv is None else argv)
    unknown = unknown_robot_options(argv)
    if unknown:
        print(f"{PROG}: error: {unknown}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        return _record(args) if args.cmd == "record" else _check(args)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
