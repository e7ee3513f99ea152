"""What the device reports reaches the loop: Fault messages and State flags, classified and counted.

Each tick the loop drains the robot's Fault messages (Robot.take_faults) and looks at the State's
flags. The verdict tells it what to do:

- "estop": the device's e-stop is engaged (ESTOP flag, or a command refused with code ESTOP) and
  the host did not ask for it: the run stops.
- "fault": a command was refused (BAD_COMMAND, IMPLAUSIBLE), the firmware failed (INTERNAL, or a
  code this host does not know), or the FAULT flag stayed set on `fault_flag_limit` States in a row
  (commands keep faulting): the loop holds or stops, per --on-device-fault.
- None: nothing to act on. WATCHDOG, LIMIT, BAD_FRAME, NO_SESSION, ... are counted (the run's exit
  code says faults were seen) but the loop goes on: the device already handled them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from firmware_bridge.robot import Robot

# FaultCode values (firmware_bridge.protocol; 10 and 11 are protocol v2). By number, so a code this
# host's firmware_bridge does not name yet is still classified.
CODE_NAMES = {1: "WATCHDOG", 2: "LIMIT", 3: "BAD_FRAME", 4: "ESTOP", 5: "NO_SESSION", 6: "BAD_COMMAND",
              7: "VERSION", 8: "UNSUPPORTED", 9: "INTERNAL", 10: "SESSION_BUSY", 11: "IMPLAUSIBLE"}
ESTOP_CODE = 4
REFUSAL_CODES = frozenset({4, 6, 11})          # the device refused a JointCommand
INFO_CODES = frozenset({1, 2, 3, 5, 7, 8, 10})  # counted; the device handled it, the run goes on
# State.flags bits (firmware_bridge.protocol.StatusFlags)
FLAG_NAMES = {0x0001: "ESTOP", 0x0002: "WATCHDOG_HOLD", 0x0004: "FAULT", 0x0008: "LIMIT"}
FLAG_ESTOP, FLAG_FAULT = 0x0001, 0x0004


def _one_line(text: Any, limit: int = 160) -> str:
    """Device text is untrusted: printable, one line, bounded."""
    s = "".join(ch if ch.isprintable() else " " for ch in str(text))
    return s[:limit]


def code_name(code: Any) -> str:
    try:
        value = int(code)
    except (TypeError, ValueError):
        return _one_line(code, 40)
    return CODE_NAMES.get(value, f"code {value}")


@dataclass
class Verdict:
    kind: str   # "estop" | "fault"
    text: str   # one line for the operator


@dataclass
class DeviceReports:
    """Counts of everything the device reported during a run, and the decision rules above."""
    fault_flag_limit: int = 3
    faults: dict[str, int] = field(default_factory=dict)       # Fault messages by code name
    refused: int = 0                                           # Faults saying a command was refused
    flag_states: dict[str, int] = field(default_factory=dict)  # States (each counted once) with each flag set
    last_fault: str = ""
    _fault_flag_in_row: int = 0
    _last_state: Any = None
    _last_key: tuple = (None, None, None)

    @property
    def total_faults(self) -> int:
        return sum(self.faults.values())

    def drain(self, robot: Robot) -> list[tuple[Optional[int], str, str]]:
        """The robot's new Faults (Robot.take_faults) as (code, name, text)."""
        out: list[tuple[Optional[int], str, str]] = []
        for f in robot.take_faults():
            try:
                num: Optional[int] = int(f.code)
            except (TypeError, ValueError):
                num = None
            out.append((num, code_name(f.code), _one_line(f.text)))
        return out

    def on_faults(self, faults: list[tuple[Optional[int], str, str]], estop_ours: bool = False) -> Optional[Verdict]:
        """Count the Faults; the most severe verdict among them (estop > fault > None)."""
        verdict: Optional[Verdict] = None
        for code, name, text in faults:
            self.faults[name] = self.faults.get(name, 0) + 1
            self.last_fault = f"{name}: {text}" if text else name
            if code in REFUSAL_CODES:
                self.refused += 1
            if estop_ours:
                continue  # the host engaged the e-stop itself: refusals after it are expected
            if code == ESTOP_CODE:
                verdict = Verdict("estop", f"the device refused a command: e-stop engaged ({self.last_fault})")
            elif code not in INFO_CODES and (verdict is None or verdict.kind != "estop"):
                verdict = Verdict("fault", f"device fault {self.last_fault}")
        return verdict

    def on_state(self, state: Any, estop_ours: bool = False, commanded: bool = True) -> Optional[Verdict]:
        """Count the State's flags; verdict for an e-stop the host did not engage, or a FAULT flag that
        stays set although commands went out (each applied command clears it on the device; while the
        host sends nothing, e.g. during a link loss, a set FAULT flag says nothing new)."""
        if state is None:
            return None
        # The loop looks once a tick; a State already seen (no new one since, or the stale one kept while the
        # link is lost) is not counted again: "in a row" means States the device sent, not ticks.
        key = (getattr(state, "seq", None), getattr(state, "rx_time", None), id(state))
        if state is self._last_state or (key[0] not in (None, -1) and key[:2] == self._last_key[:2]):
            return self._repeat_verdict(state, estop_ours)
        self._last_state, self._last_key = state, key
        try:
            flags = int(getattr(state, "flags", 0))
        except (TypeError, ValueError):
            flags = 0
        for bit, name in FLAG_NAMES.items():
            if flags & bit:
                self.flag_states[name] = self.flag_states.get(name, 0) + 1
        if not flags & FLAG_FAULT:
            self._fault_flag_in_row = 0
        elif commanded:
            self._fault_flag_in_row += 1
        if estop_ours:
            return None
        if flags & FLAG_ESTOP:
            return Verdict("estop", "the device's e-stop is engaged (State flag ESTOP)")
        if self._fault_flag_in_row >= self.fault_flag_limit:
            self._fault_flag_in_row = 0
            last = f" (last fault: {self.last_fault})" if self.last_fault else ""
            return Verdict("fault", f"the device's FAULT flag stayed set on {self.fault_flag_limit} States in a "
                                    f"row{last}")
        return None

    def _repeat_verdict(self, state: Any, estop_ours: bool) -> Optional[Verdict]:
        """A State seen before still says the e-stop is engaged: that stays a stop (counted once)."""
        try:
            flags = int(getattr(state, "flags", 0))
        except (TypeError, ValueError):
            flags = 0
        if not estop_ours and flags & FLAG_ESTOP:
            return Verdict("estop", "the device's e-stop is engaged (State flag ESTOP)")
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"faults": dict(self.faults), "refused_commands": self.refused, "flag_states": dict(self.flag_states),
                "last_fault": self.last_fault}
