"""Recorded regressions of the shipped packages: every package in exported_models/ has a lock-step
trace per precision in exported_models/traces/ (`imle-hil record`), and `imle-hil check` replays it
through imle-run's path (emulator over a pty) without a divergence: bit for bit on the platform it
was recorded on, within the precision's golden tolerance elsewhere (an int8 trace from a CPU with
other int8 kernels says so in its output)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "exported_models"
TRACES = MODELS / "traces"
PACKAGES = sorted(p for p in MODELS.iterdir() if (p / "manifest.json").is_file())


def _precisions(pkg: Path) -> list[str]:
    from runtime.package import load_package

    return load_package(pkg, trust=False).manifest.precisions()


def _task(pkg: Path) -> str:
    from runtime.package import load_package

    return load_package(pkg, trust=False).manifest.task


CASES = [(pkg, prec) for pkg in PACKAGES for prec in _precisions(pkg)]


def test_every_shipped_package_has_a_trace_per_precision():
    missing = [f"{pkg.name}.{prec}.npz" for pkg, prec in CASES if not (TRACES / f"{pkg.name}.{prec}.npz").is_file()]
    assert CASES and not missing, f"record them: imle-hil record PACKAGE --robot emulator-lockstep --out " \
                                  f"exported_models/traces/PACKAGE.PRECISION.npz --precision P ({missing})"


@pytest.mark.parametrize("pkg,precision", CASES, ids=[f"{p.name}-{q}" for p, q in CASES])
def test_shipped_trace_replays_without_divergence(pkg, precision):
    from runtime.hil_trace import load_trace

    trace = TRACES / f"{pkg.name}.{precision}.npz"
    meta = load_trace(trace).meta
    if _task(pkg).startswith("pusht"):
        pytest.importorskip("gym_pusht")  # the emulator's Push-T plant
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               PYGAME_HIDE_SUPPORT_PROMPT="1")
    res = subprocess.run([sys.executable, "-m", "runtime.hil_cli", "check", str(pkg), str(trace)],
                         capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
    assert f"{meta['package']} {precision} on emulator-lockstep" in res.stdout
    assert f"ok: {sum(e['steps'] for e in meta['episodes'])} steps" in res.stdout
