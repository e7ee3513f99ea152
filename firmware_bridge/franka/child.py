"""The control process's entry point: connect pylibfranka, configure the arm, run the control loop."""
from __future__ import annotations

import signal
from typing import Any, Optional

from .arms import ARMS
from .control_loop import _ControlLoop
from .fci import FrankaImportError, import_pylibfranka
from .safety import SafetyConfig


def _control_main(host: str, arm_name: str, safety: SafetyConfig, realtime: bool,
                  collision: Optional[tuple], joint_impedance: Optional[tuple], buf: Any, lock: Any,
                  conn: Any, parent_pid: int, late_applied: bool = False) -> None:
    """Child-process entry point."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the parent, which stops us cleanly
    loop_ref: list = []

    def on_term(signum: int, frame: Any) -> None:
        if loop_ref:
            loop_ref[0].terminate = True
        else:
            raise SystemExit(0)
    signal.signal(signal.SIGTERM, on_term)
    try:
        pf = import_pylibfranka()
    except FrankaImportError as exc:
        conn.send(("fatal", str(exc)))
        return
    try:
        config = pf.RealtimeConfig.kEnforce if realtime else pf.RealtimeConfig.kIgnore
        robot = pf.Robot(host, config)
        if collision is not None:
            robot.set_collision_behavior(*[list(x) for x in collision])
        if joint_impedance is not None:
            robot.set_joint_impedance(list(joint_impedance))
        st = robot.read_once()
    except Exception as exc:
        conn.send(("fatal", f"cannot connect to the Franka at {host}: {type(exc).__name__}: {exc}"))
        return
    loop = _ControlLoop(pf, robot, ARMS[arm_name], safety, buf, lock, conn, parent_pid, late_applied)
    loop_ref.append(loop)
    loop.exchange(st)
    conn.send(("ready", {"libfranka": getattr(pf, "__version__", "?"), "robot_mode": str(st.robot_mode)}))
    try:
        loop.run()
    except Exception as exc:  # a bug in the loop: say so; the arm stops itself when commands cease
        loop.report("fatal", f"control loop crashed: {type(exc).__name__}: {exc}")
        raise
