"""Comparing a replayed run with its recorded trace: the first divergence, step by step.

Exact (bit for bit) when the replay runs on the platform the trace was recorded on (same machine
architecture, onnxruntime, NumPy and CPU class, runtime.hil_trace.this_platform): the run is
deterministic there. Otherwise every float is compared within the golden tolerance of the trace's
precision (runtime.golden.TOLERANCE, a fraction of the quantity's range), and a selected candidate
that differs is not by itself a divergence (near-ties flip between CPUs; the chunk it leads to is
compared). An int8 trace from a CPU with other int8 kernels (x86 VNNI, ARM dot product) says so.

Within a row the order is what the loop did: the device State observed, the plan made from it
(observation history, frames, selected candidate, distance, chunk), the action, the command sent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from runtime.golden import TOLERANCE
from runtime.hil_trace import Trace


@dataclass
class Divergence:
    episode: int
    step: int
    field: str
    expected: str
    got: str
    detail: str = ""

    def line(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return (f"first divergence at episode {self.episode} step {self.step}: {self.field} expected {self.expected}, "
                f"got {self.got}{extra}")


@dataclass
class Comparison:
    exact: bool
    mode: str                             # one line: how the trace was compared and why
    rows: int                             # rows compared
    divergence: Optional[Divergence] = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.divergence is None


def compare_mode(recorded: dict[str, Any], here: dict[str, Any], precision: str) -> tuple[bool, str]:
    """(exact, a one-line description): exact on the recording's platform, else the precision's tolerance."""
    diffs = [f"{k} {recorded.get(k)!r} here {here.get(k)!r}" for k in ("machine", "onnxruntime", "numpy", "cpu_class")
             if recorded.get(k) != here.get(k)]
    if not diffs:
        return True, "exact: same machine, onnxruntime, NumPy and CPU class as the recording"
    tol = TOLERANCE[precision]
    text = f"{precision} tolerance {tol:g} of range: recorded on {'; '.join(diffs)}"
    if precision == "int8" and recorded.get("int8_kernels") != here.get("int8_kernels"):
        text += (f"; int8 kernels differ (trace {recorded.get('int8_kernels') or 'none'}, here "
                 f"{here.get('int8_kernels') or 'none'}): a trace from another CPU class, compared with the int8 "
                 f"tolerance")
    return False, text


def _ranges(expected: Trace, replay: Trace) -> dict[str, np.ndarray]:
    """The scale of each quantity, from the replay (the package and robot here; a trace's own numbers are
    not trusted): joint and action ranges, the observation statistics' spread; extras: their recorded spread."""
    r = replay.meta["ranges"]

    def span(key: str, n: int) -> np.ndarray:
        a = np.asarray(r[key], np.float64).reshape(-1)
        if a.size != n:
            a = np.ones(n)
        return np.where(np.isfinite(a) & (a > 0), a, 1.0)  # an unbounded joint: absolute units

    ext = expected.steps["extras"]
    extra_range = np.maximum(np.ptp(ext, axis=0), 1.0) if len(ext) else np.ones(ext.shape[1])
    joints = span("joints", expected.steps["positions"].shape[1])
    actions = span("actions", expected.steps["action"].shape[1])
    return {"positions": joints, "command": joints, "extras": extra_range, "action": actions, "chunk": actions,
            "obs_state": span("obs_state", expected.plans["obs_state"].shape[2])}


def _fmt(a: np.ndarray) -> str:
    flat = np.asarray(a).reshape(-1)
    body = ", ".join(f"{float(v):.9g}" for v in flat[:6])
    return f"[{body}{', ...' if flat.size > 6 else ''}]"


def _array_diff(name: str, exp: np.ndarray, got: np.ndarray, exact: bool, tol: float,
                scale: Optional[np.ndarray], labels: Optional[list[str]] = None) -> Optional[tuple[str, str, str, str]]:
    """(field, expected, got, detail) of the worst differing element, or None when they agree."""
    if exp.shape != got.shape:
        return name, f"shape {list(exp.shape)}", f"shape {list(got.shape)}", ""
    if exact:
        bad = ~((exp == got) | (np.isnan(exp) & np.isnan(got)))
        if not bad.any():
            return None
        i = np.unravel_index(int(np.argmax(bad)), exp.shape)
        err = abs(float(got[i]) - float(exp[i]))
        where = _label(i, labels)
        return (f"{name}{where}", f"{float(exp[i]):.9g}", f"{float(got[i]):.9g}",
                f"|diff| {err:.3g}; exact comparison on the recording's platform")
    with np.errstate(invalid="ignore"):
        frac = np.abs(got.astype(np.float64) - exp.astype(np.float64)) / np.broadcast_to(scale, exp.shape)
    frac = np.where(np.isfinite(frac), frac, np.inf)
    if not (frac > tol).any():
        return None
    i = np.unravel_index(int(np.argmax(frac)), exp.shape)
    return (f"{name}{_label(i, labels)}", f"{float(exp[i]):.9g}", f"{float(got[i]):.9g}",
            f"|diff| {float(frac[i]):.3g} of range > tolerance {tol:g}")


def _label(index: tuple, labels: Optional[list[str]]) -> str:
    if labels is not None and len(index) == 1 and index[0] < len(labels):
        return f"[{labels[index[0]]}]"
    return "[" + ",".join(str(int(k)) for k in index) + "]"


def compare(expected: Trace, got: Trace, exact: bool, mode: str) -> Comparison:
    """Walk the recorded trace and the replay's (``got``, made here by runtime.hil_run) row by row;
    the first divergence, or none."""
    res = Comparison(exact, mode, 0)
    tol = TOLERANCE[expected.meta["precision"]]
    scale = _ranges(expected, got)
    names = expected.meta["names"]
    labels = {"positions": names.get("joints"), "command": names.get("joints"), "extras": names.get("extras"),
              "action": names.get("actions")}
    e, g = expected.steps, got.steps
    ep_plan, gp_plan = expected.plan_at(), got.plan_at()
    n = min(expected.rows, got.rows)
    for i in range(n):
        ep_i, st_i = int(e["episode"][i]), int(e["step"][i])

        def diverge(fld: str, exp: str, gt: str, detail: str = "") -> Comparison:
            res.divergence = Divergence(ep_i, st_i, fld, exp, gt, detail)
            return res

        res.rows = i
        if (int(g["episode"][i]), int(g["step"][i])) != (ep_i, st_i):
            return diverge("row", f"episode {ep_i} step {st_i}", f"episode {int(g['episode'][i])} step "
                           f"{int(g['step'][i])}", "the replay's episodes ended at other steps")
        for k in ("positions", "extras"):
            d = _array_diff(f"device state {k}", e[k][i], g[k][i], exact, tol, scale[k], labels[k])
            if d:
                return diverge(*d)
        if (i in ep_plan) != (i in gp_plan):
            return diverge("plan", "a plan" if i in ep_plan else "no plan", "a plan" if i in gp_plan else "no plan")
        if i in ep_plan:
            d = _plan_diff(expected, got, ep_plan[i], gp_plan[i], exact, tol, scale, res)
            if d:
                return diverge(*d)
        if str(e["source"][i]) != str(g["source"][i]):
            return diverge("source", str(e["source"][i]), str(g["source"][i]))
        for k in ("action", "command"):
            if bool(e[f"has_{k}"][i]) != bool(g[f"has_{k}"][i]):
                return diverge(k, "one" if e[f"has_{k}"][i] else "none", "one" if g[f"has_{k}"][i] else "none")
            d = _array_diff(k, e[k][i], g[k][i], exact, tol, scale[k], labels[k])
            if d:
                return diverge(*d)
    res.rows = n
    if expected.rows != got.rows:
        last = e if expected.rows > got.rows else g
        k = n if n < len(last["step"]) else n - 1
        res.divergence = Divergence(int(last["episode"][k]), int(last["step"][k]), "steps",
                                    f"{expected.rows} rows", f"{got.rows} rows",
                                    _ends(expected, got))
    return res


def _plan_diff(expected: Trace, got: Trace, pe: int, pg: int, exact: bool, tol: float, scale: dict,
               res: Comparison) -> Optional[tuple[str, str, str, str]]:
    e, g = expected.plans, got.plans
    if bool(e["ok"][pe]) != bool(g["ok"][pg]):
        return ("plan", "a plan" if e["ok"][pe] else "a failed plan", "a plan" if g["ok"][pg] else "a failed plan", "")
    d = _array_diff("observation", e["obs_state"][pe], g["obs_state"][pg], exact, tol, scale["obs_state"])
    if d:
        return d
    if str(e["image_sha"][pe]) != str(g["image_sha"][pg]):
        return ("camera frames (sha256)", str(e["image_sha"][pe])[:16], str(g["image_sha"][pg])[:16], "")
    if not e["ok"][pe]:
        return None
    if int(e["selected"][pe]) != int(g["selected"][pg]):
        if exact:
            return ("selected candidate", str(int(e["selected"][pe])), str(int(g["selected"][pg])), "")
        if len(res.notes) < 5:
            res.notes.append(f"plan {pe}: selected candidate {int(g['selected'][pg])}, recorded "
                             f"{int(e['selected'][pe])} (compared by its chunk)")
    if exact and (bool(e["has_distance"][pe]) != bool(g["has_distance"][pg])
                  or e["distance"][pe] != g["distance"][pg]):
        return ("selection distance", f"{float(e['distance'][pe]):.9g}", f"{float(g['distance'][pg]):.9g}", "")
    return _array_diff("planned chunk", e["chunk"][pe], g["chunk"][pg], exact, tol, scale["chunk"])


def _ends(expected: Trace, got: Trace) -> str:
    def how(t: Trace) -> str:
        out = [f"ep {i}: {ep.get('steps')} steps{', success' if ep.get('success') else ''}"
               f"{', aborted ' + str(ep.get('aborted')) if ep.get('aborted') else ''}"
               for i, ep in enumerate(t.meta["episodes"][:4])]
        stop = t.meta.get("outcome", {}).get("stop_reason") if isinstance(t.meta.get("outcome"), dict) else ""
        return "; ".join(out) + (f"; stopped: {stop}" if stop else "")
    return f"recorded {how(expected)} | replay {how(got)}"
