"""``imle-task``: write a starter task file from a replay buffer, check a task against its data.

    imle-task init my_arm.zarr --out my_arm.toml   # keys, dimensions, generic names, data ranges
    imle-task check my_arm.toml my_arm.zarr        # one line per problem, exit 2; a summary otherwise
    imle-task list                                 # the built-in tasks
    imle-task show pusht-state                     # print a built-in task file
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

EPILOG = """\
A task file (TOML) says what the policy observes and commands: the replay buffer's keys, the name of
every column, which observed columns are angles (wrap-around: the network sees sin/cos), camera keys
and image shapes, the action's robot joints and limits, the horizons, the control period and the
success signal. See docs/training.md, "Your own robot".

exit codes: 0 ok; 2 bad arguments, task file or data (one line naming the field and both values).
"""

IMAGE_NDIM = 4  # [frames, H, W, C]


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string of printable text is a TOML basic string


def _toml_list(values) -> str:
    return "[" + ", ".join(_toml_str(v) if isinstance(v, str) else _num(v) for v in values) + "]"


def _num(x: float) -> str:
    r = repr(float(x))
    return r if ("." in r or "e" in r or "inf" in r or "nan" in r) else r + ".0"


def _angle_like(lo: float, hi: float) -> bool:
    """A column whose range spans most of [-pi, pi] or [0, 2 pi]: maybe a wrap-around joint."""
    return (lo >= -math.pi - 1e-3 and hi <= math.pi + 1e-3 and hi - lo > 1.5 * math.pi) or \
           (lo >= -1e-3 and hi <= 2 * math.pi + 1e-3 and hi - lo > 1.5 * math.pi)


def starter_task(path: str | Path, name: str | None = None, state_key: str | None = None,
                 action_key: str | None = None) -> str:
    """The text of a starter task file for the replay buffer at ``path``."""
    from trainer.data.replay_buffer import DatasetError
    from trainer.data.replay_buffer import open_buffer
    from trainer.data.task_check import summarize

    s = summarize(path)
    root, ends = open_buffer(path)
    two_d = [k for k, shp in s.shapes.items() if len(shp) == 2]
    images = [k for k, shp in s.shapes.items() if len(shp) == IMAGE_NDIM]
    if action_key is None:
        action_key = "action" if "action" in two_d else None
    if action_key is None or action_key not in two_d:
        raise DatasetError(f"{Path(path).name}: no [frames, dims] array to use as the action (2-D arrays: "
                           f"{', '.join(two_d) or 'none'}); name it with --action-key")
    if state_key is None:
        rest = [k for k in two_d if k != action_key]
        state_key = "state" if "state" in rest else (rest[0] if rest else None)
    if state_key is None or state_key not in two_d or state_key == action_key:
        raise DatasetError(f"{Path(path).name}: no [frames, dims] array to use as the observed state (2-D arrays: "
                           f"{', '.join(two_d) or 'none'}); name it with --state-key")
    n = s.frames

    def ranges(key: str) -> tuple[np.ndarray, np.ndarray]:
        lo = hi = None
        arr = root[f"data/{key}"]
        for start in range(0, n, 65536):  # blocks: a long recording need not fit in memory twice
            block = np.asarray(arr[start:min(n, start + 65536)], np.float64)
            if not np.isfinite(block).all():
                from trainer.data.replay_buffer import check_finite

                check_finite(np.asarray(arr[:n], np.float32), ends, f"data/{key}", path)
            bl, bh = block.min(0), block.max(0)
            lo, hi = (bl, bh) if lo is None else (np.minimum(lo, bl), np.maximum(hi, bh))
        return lo, hi

    s_lo, s_hi = ranges(state_key)
    a_lo, a_hi = ranges(action_key)
    n_state, n_action = s.shapes[state_key][1], s.shapes[action_key][1]
    state_names = [f"state_{i}" for i in range(n_state)]
    action_names = [f"action_{i}" for i in range(n_action)]
    task_name = name or "".join(c if c.isalnum() or c in "_-" else "_" for c in Path(path).stem) or "my_task"
    angle_hint = [state_names[i] for i in range(n_state) if _angle_like(s_lo[i], s_hi[i])]
    low, high = a_lo.copy(), a_hi.copy()
    constant = [i for i in range(n_action) if not low[i] < high[i]]
    for i in constant:  # a task limit needs low < high: open a constant dimension by 1 unit and say so
        low[i], high[i] = low[i] - 0.5, high[i] + 0.5

    lines = [
        f"# Starter task file written by `imle-task init {Path(path).name}`.",
        "# CHECK AND EDIT before training: name every column after what it is (the runtime maps observations",
        "# and actions to the robot's reported names, by name), mark wrap-around angles, set the control period",
        "# your demonstrations were recorded at, and add a [success] signal if the robot reports one.",
        f"# Data: {s.episodes} episodes, {n} frames; arrays: "
        + ", ".join(f"data/{k} {list(v)}" for k, v in s.shapes.items()) + ".",
        "",
        "[task]",
        f"name = {_toml_str(task_name)}",
        "period_s = 0.1                      # CHECK: seconds between recorded frames (0.1 = 10 Hz)",
        "",
        "[horizons]",
        "obs = 2                             # frames the policy sees (the last one is now)",
        "pred = 16                           # steps in a generated chunk",
        "action = 8                          # steps executed per plan (<= pred - obs + 1)",
        "",
        "[observation.state]",
        f"key = {_toml_str(state_key)}",
        "# one name per column of data/" + state_key + ", in order; per-column range in the data:",
    ]
    for i in range(n_state):
        lines.append(f"#   {state_names[i]}: {s_lo[i]:.6g} .. {s_hi[i]:.6g}")
    lines += [
        f"names = {_toml_list(state_names)}",
        f"use = {_toml_list(state_names)}   # the columns the policy observes",
        "angles = []                         # observed columns that wrap around (revolute joints, headings)",
    ]
    if angle_hint:
        lines.append(f"# these columns span about 2 pi and may be angles: {', '.join(angle_hint)}")
    for k in images:
        h, w, c = s.shapes[k][1:]
        lines += ["", "[[observation.images]]", f"key = {_toml_str(k)}", f"shape = [{h}, {w}, {c}]",
                  f"camera = {_toml_str(k)}                    # CHECK: the camera's name",
                  'channel_order = "RGB"']
    lines += [
        "",
        "[action]",
        f"key = {_toml_str(action_key)}",
        f"names = {_toml_list(action_names)}",
        f"joints = {_toml_list(action_names)}   # CHECK: the robot joint each dimension commands, in order",
        "# task limits from the data's range (they can only narrow the robot's own limits):",
        f"low = {_toml_list([float(x) for x in low])}",
        f"high = {_toml_list([float(x) for x in high])}",
    ]
    if constant:
        lines.append("# CHECK: constant in the data, opened by 1 unit: "
                     + ", ".join(action_names[i] for i in constant))
    others = [k for k in s.shapes if k not in (state_key, action_key, *images)]
    if others:
        lines += ["", f"# not used by this task: {', '.join(f'data/{k}' for k in others)}"]
    lines += ["", "# [success]", '# signal = "progress"                 # a value the robot reports each tick',
              "# threshold = 0.95                   # success when signal >= threshold", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imle-task", description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("init", help="write a starter task file from a replay buffer")
    i.add_argument("data", help="replay buffer (.zarr)")
    i.add_argument("--out", default=None, help="task file to write (default: print it)")
    i.add_argument("--name", default=None, help="task name (default: the buffer's file name)")
    i.add_argument("--state-key", default=None, help="data/<key> of the observed state (default: state)")
    i.add_argument("--action-key", default=None, help="data/<key> of the action (default: action)")
    i.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    c = sub.add_parser("check", help="check a task (built-in name or file) against a replay buffer")
    c.add_argument("task", help="built-in task name or task file")
    c.add_argument("data", help="replay buffer (.zarr)")
    sub.add_parser("list", help="the built-in tasks")
    s = sub.add_parser("show", help="print a built-in task file")
    s.add_argument("task")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.task_spec import TaskSpec, TaskSpecError
    from trainer.data.replay_buffer import DatasetError
    from trainer.tasks import builtin_names, builtin_path, resolve_task

    try:
        if args.command == "list":
            for name in builtin_names():
                print(f"{name}: {builtin_path(name)}")
            return 0
        if args.command == "show":
            if args.task not in builtin_names():
                raise TaskSpecError(f"unknown task {args.task[:80]!r}: built-in tasks are {', '.join(builtin_names())}")
            print(builtin_path(args.task).read_text(), end="")
            return 0
        if args.command == "init":
            text = starter_task(args.data, args.name, args.state_key, args.action_key)
            import tomllib

            TaskSpec.from_dict(tomllib.loads(text))  # the starter itself must be a valid task
            if args.out is None:
                print(text, end="")
                return 0
            out = Path(args.out)
            if out.exists() and not args.force:
                raise TaskSpecError(f"{out} exists; choose another --out or add --force")
            out.write_text(text)
            print(f"wrote {out}: name the fields, mark angles, set period_s, then `imle-task check {out} {args.data}`")
            return 0
        spec = resolve_task(args.task)
        from trainer.data.task_check import check_task_data

        s = check_task_data(spec, args.data)
        print(f"task {spec.name} matches {args.data}: {s.episodes} episodes, {s.frames} frames")
        angles = f" (angles: {', '.join(spec.state.angles)})" if spec.state.angles else ""
        print(f"  observes {len(spec.state.use)} of {len(spec.state.names)} columns of data/{spec.state.key}: "
              f"{', '.join(spec.state.use)}{angles}")
        for im in spec.images:
            print(f"  camera {im.camera}: data/{im.key} {list(im.shape)} {im.channel_order}")
        print(f"  commands {', '.join(f'{n}->{j}' for n, j in zip(spec.action.names, spec.action.joints))} "
              f"from data/{spec.action.key} every {spec.period_s:g} s")
        h = spec.horizons
        print(f"  horizons obs {h.obs}, pred {h.pred}, action {h.action}; success: "
              + (f"{spec.success.signal} >= {spec.success.threshold:g}" if spec.success else "none declared"))
        return 0
    except (TaskSpecError, DatasetError, OSError) as exc:
        msg = str(exc) if not isinstance(exc, OSError) or isinstance(exc, ValueError) else \
            f"{exc.filename or ''}: {exc.strerror}"
        print(f"imle-task: error: {' '.join(msg.split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
