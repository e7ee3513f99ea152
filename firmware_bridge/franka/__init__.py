"""Franka arm (FR3, or Panda/FER) through pylibfranka, behind the same `Robot` interface as SerialLink.

    robot = FrankaRobot("172.16.0.2")          # the FCI address of the arm's Control box
    caps = robot.connect()                     # 7 joints, datasheet limits, libfranka version
    robot.send_command(q_target)               # any rate; streamed to the arm at 1 kHz, rate limited
    state = robot.latest_state()               # q (positions); dq, end-effector xyz, commanded q (extras)
    robot.estop()                              # controlled stop, then the arm holds (robot idle)
    robot.close()

Why a child process and not a thread: the Franka's real-time interface wants a joint command every
millisecond, and pylibfranka's `readOnce()` keeps the GIL while it waits for the next robot state.
Measured against franka-sim: a 1 kHz loop in a thread halves the throughput of the process's other
threads and is itself delayed by up to 15 ms (15 lost cycles; the FCI aborts after 20) whenever
they compute. So the 1 kHz loop runs in its own process (spawned, so it inherits no threads), which
owns the libfranka connection; targets and states cross in a small shared-memory block guarded by
a lock that the control loop only ever *tries* to take, so the policy process can never stall it.

Safety in the control loop, every 1 ms cycle:
* targets are clamped inside the datasheet joint limits (minus a margin) and non-finite targets
  are refused;
* the commanded position follows the target through a jerk-, acceleration- and velocity-limited
  approach (`rate_limit_step`, limits = datasheet x scale factors), so a target far away is reached
  smoothly at bounded speed and never by a jump; the commanded signal also stays inside the FR3's
  position-dependent velocity envelope, so the FCI's own checks (the ones that raise
  `joint_motion_generator_*` reflexes) are never the safety net;
* a watchdog: no `send_command` (valid or not) for `watchdog_s` -> decelerate and hold;
* each cycle continues from where the arm's commanded reference is: our last command, bridged over
  any cycle we missed the way the FCI bridges it (acceleration held, integrated), with the arm's own
  dq_d / ddq_d when its q_d confirms that point (franka-sim re-differences a late command over the
  cycles it answered, like libfranka's limitRate reads them). A state whose q_d is elsewhere is
  stale (it left before our command was applied: franka-sim on a loaded machine) and is not
  followed: continuing from it steps the command back by a cycle of motion (~300 rad/s^2 at
  0.3 rad/s, which the FCI rejects). benchmarks/franka_sim_stress.py, two busy loops on 2 cores:
  0 of 100 far-target motions aborted, where re-seeding from every state's q_d aborted 3 of 100;
* a late command: the FCI drops it, franka-sim applies it, differenced over every cycle since our
  previous one (`late_commands`, by default "applied" on loopback only). Against franka-sim the first
  command after lost cycles eases any held acceleration by one cycle's jerk budget, so the next
  state's q_d tells whether it arrived in time, and a late one is continued from the history
  franka-sim recorded (`follow_arm_reference`). With the control process frozen for 1-8 ms every
  20-80 ms: 0 of 40 motions aborted, against 26 of 40 before;
* e-stop / close / parent process gone -> decelerate at SafetyConfig.stop_scale x the arm's limits,
  finish the motion; the arm then holds its position under its own controller (robot mode Idle).
libfranka exceptions (reflexes, network loss) end the motion and mark the link unhealthy; the arm
stops itself. `recover()` runs libfranka's automatic error recovery, as an explicit operator action.

The package, one job per module: fci (the FCI's timing, importing pylibfranka), arms (datasheet
limits), safety (SafetyConfig, CommandLimits), ratelimit (the 1 ms rate-limit maths), shared (the
shared-memory layout and modes), stats (FrankaStats), control_loop (the 1 kHz loop), child (the
control process's entry point), settings (arm / realtime / late_commands, and the one place the
IMLE_FRANKA_* environment variables are read as a fallback), robot (FrankaRobot, the host API).
"""
from .arms import ARMS, FER, FR3, ArmLimits
from .child import _control_main
from .control_loop import _ControlLoop
from .fci import DT, MAX_LOST_CYCLES, N_JOINTS, REFERENCE_TOLERANCE, VELOCITY_TOLERANCE, FrankaImportError
from .ratelimit import JointRateLimiter, clamp_target, late_command_history, rate_limit_step, velocity_envelope
from .robot import DEFAULT_COLLISION, DEFAULT_JOINT_IMPEDANCE, FrankaRobot, _seq_reached
from .safety import CommandLimits, SafetyConfig
from .settings import LATE_COMMANDS, FrankaSettings, late_commands_for, resolve_settings
from .shared import EXTRA_NAMES, _Layout, _Mode
from .stats import FrankaStats

# Private names the control-loop tests use: _ControlLoop, _Layout, _Mode, _control_main, _seq_reached.
__all__ = ["_ControlLoop", "_Layout", "_Mode", "_control_main", "_seq_reached",
           "ARMS", "DEFAULT_COLLISION", "DEFAULT_JOINT_IMPEDANCE", "DT", "EXTRA_NAMES", "FER", "FR3", "LATE_COMMANDS",
           "MAX_LOST_CYCLES", "N_JOINTS", "REFERENCE_TOLERANCE", "VELOCITY_TOLERANCE", "ArmLimits", "CommandLimits",
           "FrankaImportError", "FrankaRobot", "FrankaSettings", "FrankaStats", "JointRateLimiter", "SafetyConfig",
           "clamp_target", "late_command_history", "late_commands_for", "rate_limit_step", "resolve_settings",
           "velocity_envelope"]
