"""FrankaRobot.take_faults: control-loop events reach the caller as protocol Faults (no arm needed)."""
from __future__ import annotations

import multiprocessing as mp

from firmware_bridge.franka import FrankaRobot
from firmware_bridge.protocol import Fault, FaultCode
from firmware_bridge.robot import Robot


def test_control_loop_events_become_faults_once_and_bounded() -> None:
    robot = FrankaRobot("127.0.0.1", realtime=False)
    assert isinstance(robot, Robot)
    parent, child = mp.Pipe(duplex=False)
    robot._conn = parent  # what the control process writes to
    assert robot.take_faults() == []
    child.send(("error", "cartesian_reflex: collision"))
    child.send(("recovered", "automatic error recovery succeeded"))   # not a fault
    child.send(("watchdog", "no command for 0.1 s: decelerating and holding"))
    faults = robot.take_faults()
    assert [f.code for f in faults] == [FaultCode.INTERNAL, FaultCode.WATCHDOG]
    assert isinstance(faults[0], Fault) and "cartesian_reflex" in faults[0].text
    assert robot.take_faults() == []                                 # each one is returned once
    for i in range(FrankaRobot.FAULT_QUEUE + 5):
        child.send(("error", f"e{i}"))
    faults = robot.take_faults()
    assert len(faults) == FrankaRobot.FAULT_QUEUE and faults[-1].text == f"error: e{FrankaRobot.FAULT_QUEUE + 4}"
    assert robot.stats.faults_dropped == 5
    child.send(("fatal", "x" * 400))
    (fatal,) = robot.take_faults()
    assert fatal.code == FaultCode.INTERNAL and len(fatal.text) == 255
    parent.close()
    child.close()
