"""Per-run statistics of the control loop: jitter, deadlines, plan latency, counters, per-step log.

Everything here is plain numpy + the standard library; matplotlib is imported only by
:func:`plot_timing` (the robot may not have it).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np


def percentiles(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """p50 / p99 / max of values (times `scale`); NaN for an empty list."""
    if len(values) == 0:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan, "n": 0}
    arr = np.asarray(values, dtype=np.float64) * scale
    return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)),
            "max": float(arr.max()), "n": int(arr.size)}


@dataclass
class EpisodeStats:
    index: int
    seed: int
    steps: int = 0               # commands sent (held ticks included)
    max_progress: float = math.nan     # the task's success signal: highest value seen (NaN: no signal)
    final_progress: float = math.nan   # ... its value at the episode's last observation
    success: bool = False
    held_ticks: int = 0
    dropped_actions: int = 0
    wall_s: float = 0.0
    aborted: str = ""            # why the episode ended early (estop, link, interrupted), "" otherwise


@dataclass
class Counters:
    """Event counts of one run; each says what the loop did instead of the plain path."""
    ticks: int = 0                # ticks executed (skipped ones excluded)
    missed_deadlines: int = 0     # ticks started later than the tolerance, plus skipped ticks
    skipped_ticks: int = 0        # deadlines passed entirely (host stalled longer than a period)
    dropped_actions: int = 0      # planned actions whose tick had passed when the plan arrived
    held_ticks: int = 0           # no action for the tick: held the last command / current position
    tail_ticks: int = 0           # executed the previous plan's tail because the new plan was late
    plans: int = 0
    plan_overruns: int = 0        # a plan was due while the previous one was still running
    plan_errors: int = 0          # the policy raised; nothing from that plan was sent
    nan_blocked: int = 0          # non-finite commands replaced by a hold
    clipped: int = 0              # commands clamped to the position limits
    rate_limited: int = 0         # commands clamped to the per-tick rate limit
    link_loss_events: int = 0     # link unhealthy or state stale: planning stopped, no targets sent
    link_hold_ticks: int = 0      # ticks spent waiting for the link to recover
    link_recoveries: int = 0
    send_failures: int = 0        # send_command returned None (port down)
    estops: int = 0
    bad_states: int = 0           # States refused by runtime.state_check (never became observations)
    device_faults: int = 0        # Fault messages from the device (any code)
    refused_commands: int = 0     # ... of which said a command was refused (ESTOP, BAD_COMMAND, IMPLAUSIBLE)
    fault_holds: int = 0          # ticks held because of a device fault (--on-device-fault hold)
    camera_holds: int = 0         # ticks held because the camera frame was stale, missing, repeated or malformed


# More than this fraction of the device's frames lost on the wire or dropped as corrupt makes a completed run
# exit 3: the plant was seen through a degraded link. A clean pty or USB link loses none; a host so loaded that
# the device's transmit buffer overflows loses a few, which this leaves alone.
LINK_ERROR_BUDGET = 0.05


def link_errors(link: dict[str, Any], budget: float = LINK_ERROR_BUDGET) -> dict[str, Any]:
    """Frames from the device lost (sequence gaps) or dropped as corrupt, against the budget."""
    lost = int(sum((link.get("corrupt") or {}).values())) + int(link.get("seq_gaps") or 0)
    frames = lost + int(link.get("frames_ok") or 0)
    fraction = lost / frames if frames else 0.0
    return {"lost": lost, "frames": frames, "fraction": fraction, "budget": budget, "degraded": fraction > budget}


# imle-run's exit codes (docs/deploy.md, `imle-run --help`)
EXIT_CLEAN = 0           # every episode ran; the device reported nothing
EXIT_USAGE = 2           # a mistake in the command line, the package, the robot config or the connection
EXIT_FAULTS = 3          # completed, but the device reported faults/refusals, States were bad, the link dropped
#                          or lost more than LINK_ERROR_BUDGET of the device's frames
EXIT_STOPPED = 4         # stopped early: device e-stop, device fault (stop policy), bad States, link lost, error
EXIT_ESTOP_UNCONFIRMED = 5  # an e-stop was needed and the device did not confirm it
EXIT_INTERRUPTED = 130   # Ctrl-C / SIGTERM, e-stop confirmed


@dataclass
class RunStats:
    """Everything a run measured. Times are seconds unless the name says otherwise."""
    mode: str = "realtime"                     # realtime | lockstep
    period_s: float = 0.0
    jitter_s: list[float] = field(default_factory=list)      # |actual tick start - deadline|
    tick_work_s: list[float] = field(default_factory=list)   # tick start -> command written
    plan_latency_s: list[float] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    episodes: list[EpisodeStats] = field(default_factory=list)
    link: dict[str, Any] = field(default_factory=dict)       # the link's own counters at the end
    link_error_budget: float = LINK_ERROR_BUDGET              # see link_errors()
    settings: dict[str, Any] = field(default_factory=dict)   # what the loop ran with (priority, spin, ...)
    wall_s: float = 0.0
    interrupted: bool = False
    stop_reason: str = ""                                    # why the run stopped early ("" = it did not)
    error: str = ""                                          # an exception inside the run (one line)
    estop: dict[str, Any] = field(default_factory=dict)      # requested, reason, confirmed, attempts, error
    limits: dict[str, Any] = field(default_factory=dict)     # the limits used (runtime.safety.SafetyLimits)
    device: dict[str, Any] = field(default_factory=dict)     # what the device reported (runtime.device_reports)
    states: dict[str, Any] = field(default_factory=dict)     # State checks (runtime.state_check)
    task: dict[str, Any] = field(default_factory=dict)       # the task's names bound to the robot's, success signal
    camera: dict[str, Any] = field(default_factory=dict)     # the camera used and its frame checks (runtime.cameras)
    step_log: Optional["StepLog"] = field(default=None, repr=False)  # per-tick rows (not in the summary)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest: percentiles in milliseconds, counters, episodes."""
        miss_rate = self.counters.missed_deadlines / max(1, self.counters.ticks + self.counters.skipped_ticks)
        eps = [asdict(e) for e in self.episodes]
        successes = [e.success for e in self.episodes]
        return {
            "mode": self.mode,
            "period_ms": self.period_s * 1e3,
            "jitter_ms": percentiles(self.jitter_s, 1e3),
            "tick_work_ms": percentiles(self.tick_work_s, 1e3),
            "plan_latency_ms": percentiles(self.plan_latency_s, 1e3),
            "missed_deadline_rate": miss_rate,
            "counters": asdict(self.counters),
            "link": self.link,
            "link_errors": link_errors(self.link, self.link_error_budget),
            "episodes": eps,
            "success_rate": float(np.mean(successes)) if successes else math.nan,
            "success_signal": self.task.get("success_signal"),
            "success_threshold": self.task.get("success_threshold"),
            "mean_max_progress": float(np.nanmean([e.max_progress for e in self.episodes]))
            if self.episodes and not all(math.isnan(e.max_progress) for e in self.episodes) else math.nan,
            "task": self.task,
            "settings": self.settings,
            "wall_s": self.wall_s,
            "interrupted": self.interrupted,
            "stop_reason": self.stop_reason,
            "error": self.error,
            "estop": self.estop,
            "limits": self.limits,
            "device_reports": self.device,
            "states": self.states,
            "camera": self.camera or None,
            "exit_code": self.exit_code(),
            "outcome": OUTCOMES[self.exit_code()],
        }

    def faults_seen(self) -> bool:
        c = self.counters
        return bool(c.device_faults or c.refused_commands or c.bad_states or c.fault_holds or c.link_loss_events
                    or c.send_failures or c.camera_holds
                    or link_errors(self.link, self.link_error_budget)["degraded"])

    def exit_code(self) -> int:
        """How the run went, as imle-run's exit status (most urgent first)."""
        if self.estop.get("requested") and not self.estop.get("confirmed"):
            return EXIT_ESTOP_UNCONFIRMED
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.stop_reason:
            return EXIT_STOPPED
        return EXIT_FAULTS if self.faults_seen() else EXIT_CLEAN


OUTCOMES = {EXIT_CLEAN: "clean", EXIT_FAULTS: "completed with device faults", EXIT_STOPPED: "stopped early",
            EXIT_ESTOP_UNCONFIRMED: "E-STOP NOT CONFIRMED", EXIT_INTERRUPTED: "interrupted"}


# ----------------------------------------------------------------------------- per-step log
STEP_COLUMNS = ("episode", "step", "tick", "deadline_s", "start_s", "jitter_ms", "source", "plan_id")


@dataclass
class StepRecord:
    episode: int
    step: int
    tick: int
    deadline_s: float       # relative to the run start
    start_s: float          # relative to the run start (NaN in lock-step)
    source: str             # plan | tail | hold | link-hold
    plan_id: int
    action: Optional[np.ndarray]   # what the policy asked for (None when holding)
    command: Optional[np.ndarray]  # what was sent (None when nothing was sent)
    positions: np.ndarray          # robot positions observed at the tick
    extras: np.ndarray             # robot extra sensors observed at the tick


class StepLog:
    """Per-tick rows kept in memory (300 steps x a few episodes is small) and written as CSV."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.rows: list[StepRecord] = []

    def add(self, rec: StepRecord) -> None:
        if self.enabled:
            self.rows.append(rec)

    def episode_rows(self, episode: int) -> list[StepRecord]:
        return [r for r in self.rows if r.episode == episode]

    def write_csv(self, path: Path, action_names: Sequence[str], joint_names: Sequence[str],
                  extra_names: Sequence[str], command_index: Optional[Sequence[int]] = None) -> None:
        """`command_index[i]`: the robot joint action dimension i commands; the command_<action> columns
        hold what that joint was sent (commands are in the robot's joint order)."""
        a_cols = [f"action_{n}" for n in action_names]
        c_cols = [f"command_{n}" for n in action_names]
        order = np.asarray(command_index if command_index is not None else range(len(action_names)), np.intp)
        p_cols = [f"pos_{n}" for n in joint_names]
        e_cols = [f"extra_{n}" for n in extra_names]

        def vals(arr: Optional[np.ndarray], n: int) -> list[str]:
            if arr is None:
                return [""] * n
            return [repr(float(v)) for v in np.asarray(arr).reshape(-1)[:n]]

        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow([*STEP_COLUMNS, *a_cols, *c_cols, *p_cols, *e_cols])
            for r in self.rows:
                jitter = (r.start_s - r.deadline_s) * 1e3 if not math.isnan(r.start_s) else math.nan
                w.writerow([r.episode, r.step, r.tick, f"{r.deadline_s:.6f}", f"{r.start_s:.6f}", f"{jitter:.4f}",
                            r.source, r.plan_id, *vals(r.action, len(a_cols)),
                            *vals(None if r.command is None else np.asarray(r.command).reshape(-1)[order], len(c_cols)),
                            *vals(r.positions, len(p_cols)), *vals(r.extras, len(e_cols))])


# ----------------------------------------------------------------------------- presentation
def _fmt(x: float, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def summary_table(summary: dict[str, Any]) -> str:
    """A plain-text table of a RunStats.summary() (fits an 80-column terminal)."""
    j, w, p = summary["jitter_ms"], summary["tick_work_ms"], summary["plan_latency_ms"]
    c = summary["counters"]
    lines = [
        f"mode {summary['mode']}, period {summary['period_ms']:.1f} ms, {c['ticks']} ticks, "
        f"{summary['wall_s']:.1f} s" + (" (interrupted)" if summary.get("interrupted") else ""),
        f"{'':22}{'p50':>10}{'p99':>10}{'max':>10}",
    ]
    if summary["mode"] == "realtime":
        lines.append(f"{'period jitter (ms)':22}{_fmt(j['p50']):>10}{_fmt(j['p99']):>10}{_fmt(j['max']):>10}")
    lines.append(f"{'tick work (ms)':22}{_fmt(w['p50']):>10}{_fmt(w['p99']):>10}{_fmt(w['max']):>10}")
    lines.append(f"{'plan latency (ms)':22}{_fmt(p['p50'], 2):>10}{_fmt(p['p99'], 2):>10}{_fmt(p['max'], 2):>10}")
    lines.append(
        f"missed deadlines {c['missed_deadlines']} (skipped {c['skipped_ticks']}), dropped actions "
        f"{c['dropped_actions']}, held ticks {c['held_ticks']}, tail ticks {c['tail_ticks']}")
    lines.append(
        f"plans {c['plans']} (overruns {c['plan_overruns']}, errors {c['plan_errors']}), NaN blocked "
        f"{c['nan_blocked']}, clipped {c['clipped']}, rate limited {c['rate_limited']}")
    link = summary.get("link") or {}
    corrupt = sum((link.get("corrupt") or {}).values())
    lines.append(
        f"link: losses {c['link_loss_events']} (held {c['link_hold_ticks']} ticks, recovered "
        f"{c['link_recoveries']}), corrupt frames {corrupt}, seq gaps {link.get('seq_gaps', 0)}, "
        f"reconnects {link.get('reconnects', 0)}, tx errors {link.get('tx_errors', 0)}")
    errs = summary.get("link_errors") or {}
    if errs.get("degraded"):
        lines.append(f"link DEGRADED: {errs['lost']} of {errs['frames']} frames from the device lost or corrupt "
                     f"({100 * errs['fraction']:.1f}% > --link-error-budget {100 * errs['budget']:g}%)")
    dev = summary.get("device_reports") or {}
    faults = dev.get("faults") or {}
    flags = dev.get("flag_states") or {}
    lines.append(
        f"device: faults {c.get('device_faults', 0)}"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))})" if faults else "")
        + f", refused commands {c.get('refused_commands', 0)}, fault holds {c.get('fault_holds', 0)}, "
        f"bad States {c.get('bad_states', 0)}"
        + (f", flags seen: {', '.join(f'{k} {v}' for k, v in sorted(flags.items()))}" if flags else ""))
    if dev.get("last_fault"):
        lines.append(f"last device fault: {dev['last_fault']}")
    lines.extend(camera_lines(summary.get("camera")))
    lim = (summary.get("limits") or {}).get("joints") or {}
    if lim:
        lines.append("limits: " + "; ".join(f"{n} [{_g(j['lower'])}, {_g(j['upper'])}] step {_g(j['max_step'])}"
                                          for n, j in lim.items()))
    eps = summary["episodes"]
    if eps:
        signal = summary.get("success_signal")
        lines.append(f"{'episode':>8}{'seed':>8}{'steps':>7}{'progress':>9}{'success':>9}{'held':>6}"
                     f"{'dropped':>9}  note")
        for e in eps:
            lines.append(f"{e['index']:>8}{e['seed']:>8}{e['steps']:>7}{_fmt(e['max_progress']):>9}"
                         f"{('yes' if e['success'] else 'no'):>9}{e['held_ticks']:>6}{e['dropped_actions']:>9}"
                         f"  {e['aborted']}")
        if signal:
            lines.append(f"success rate {_fmt(summary['success_rate'], 2)} ({signal} >= "
                         f"{_g(summary.get('success_threshold'))}), "
                         f"mean max {signal} {_fmt(summary['mean_max_progress'])}")
        else:
            lines.append("no success signal (the task declares none): episodes ran to their step limit")
    if summary.get("stop_reason"):
        lines.append(f"STOPPED: {summary['stop_reason']}")
    est = summary.get("estop") or {}
    if est.get("requested"):
        if est.get("confirmed"):
            lines.append(f"e-stop engaged (confirmed by the device): {est.get('reason', '')}")
        else:
            lines.append(f"E-STOP NOT CONFIRMED by the device after {est.get('attempts', 0)} attempts "
                         f"({est.get('reason', '')}): make the robot safe by hand")
    if "exit_code" in summary:
        lines.append(f"outcome: {summary.get('outcome', '')} (exit {summary['exit_code']})")
    return "\n".join(lines)


def camera_lines(cam: Optional[dict[str, Any]]) -> list[str]:
    """The camera's lines of the summary table (none for a policy without a camera)."""
    if not cam:
        return []
    age = cam.get("frame_age_ms") or {}
    name = cam.get("name", "?")
    if cam.get("synthetic"):
        name = f"{name} -- SYNTHETIC FRAMES, NOT A CAMERA"
    fps = cam.get("fps")
    out = [f"camera: {name}, {_fmt(fps, 1) if isinstance(fps, float) else '-'} fps, frame age p50 "
           f"{_fmt(age.get('p50', math.nan), 1)} ms p99 {_fmt(age.get('p99', math.nan), 1)} ms, drops "
           f"{cam.get('drops', 0)}, stale holds {cam.get('stale_holds', 0)}"
           + (f" ({', '.join(f'{k} {v}' for k, v in sorted((cam.get('holds_by_reason') or {}).items()))})"
              if cam.get("holds_by_reason") else "")]
    bad = cam.get("bad_frames") or {}
    if bad or cam.get("errors") or cam.get("stopped"):
        out.append(f"camera frames refused {sum(bad.values())}"
                   + (f" ({', '.join(f'{k} {v}' for k, v in sorted(bad.items()))})" if bad else "")
                   + f", read errors {cam.get('errors', 0)}"
                   + (f", stopped: {cam['stopped']}" if cam.get("stopped") else ""))
    return out


def _g(x: Any) -> str:
    return "-" if x is None else f"{x:g}"


def write_summary_json(summary: dict[str, Any], path: Path) -> None:
    def clean(o: Any) -> Any:  # NaN is not JSON: write null
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, np.generic):
            return clean(o.item())
        return o

    Path(path).write_text(json.dumps(clean(summary), indent=2) + "\n")


def plot_timing(stats: RunStats, path: Path) -> bool:
    """PNG of period jitter per tick and plan latency per plan. False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 1, figsize=(8, 5.5))
    jit = np.asarray(stats.jitter_s) * 1e3
    ax = axes[0]
    if jit.size:
        ax.plot(jit, lw=0.6)
        ax.axhline(stats.period_s * 1e3 * 0.2, color="r", ls="--", lw=0.8, label="miss tolerance")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_ylim(bottom=0)  # |jitter| is never negative: no mirrored half of the symlog axis
        ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"period jitter ({stats.mode}, period {stats.period_s * 1e3:.1f} ms)")
    ax.set_xlabel("tick")
    ax.set_ylabel("|start - deadline| (ms)")
    lat = np.asarray(stats.plan_latency_s) * 1e3
    ax = axes[1]
    if lat.size:
        ax.plot(lat, ".", ms=3)
    ax.set_title("plan latency")
    ax.set_xlabel("plan")
    ax.set_ylabel("ms")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
