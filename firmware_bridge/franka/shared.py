"""The shared-memory block between the host process and the 1 kHz control process: its layout (float64
offsets), the control loop's modes, and the names of the State extras it carries."""
from __future__ import annotations

from .fci import N_JOINTS


class _Mode:
    STARTING, IDLE, RUNNING, HOLD, ESTOPPED, FAULT, CLOSED = range(7)
    NAMES = ("starting", "idle", "running", "hold", "estopped", "fault", "closed")


class _Layout:
    """Offsets into the float64 shared block. Parent -> child first, then child -> parent."""
    n = N_JOINTS
    # parent -> child
    P_SEQ, P_FEED, P_ESTOP, P_CLOSE, P_RECOVER = range(5)
    P_TARGET = 5
    # child -> parent
    C_SEQ = P_TARGET + n
    C_TIME, C_HOST_TIME, C_FLAGS, C_ACK, C_MODE = range(C_SEQ + 1, C_SEQ + 6)
    C_CYCLES, C_LOST, C_ERRORS, C_WATCHDOG, C_CLAMPS, C_SUCCESS, C_STALE = range(C_SEQ + 6, C_SEQ + 13)
    C_Q = C_SEQ + 13
    C_DQ = C_Q + n
    C_EE = C_DQ + n
    C_QCMD = C_EE + 3
    C_MAXV = C_QCMD + n
    C_MAXA = C_MAXV + n
    C_MAXJ = C_MAXA + n
    SIZE = C_MAXJ + n
    CHILD_START = C_SEQ


EXTRA_NAMES = tuple([f"dq{i}" for i in range(1, 8)] + ["ee_x", "ee_y", "ee_z"]
                    + [f"q_cmd{i}" for i in range(1, 8)])
