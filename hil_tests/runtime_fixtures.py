"""Fixtures of the runtime's hardware-in-the-loop tests: a tiny Push-T package, exported once per
session, and the runtime process. Imported by the test modules (`from runtime_fixtures import ...`;
hil_tests/ is on sys.path), not the conftest.py beside it, which only adds the --device option: shared
helpers live in modules with names of their own (tests/tiny_buffers.py likewise)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def build_tiny_package(out_dir: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny Push-T state policy (down_dims 8/16), exported as an fp32 package.

    The last layer is scaled down so that actions stay near the middle of the action range (within
    about 15 px): the runtime's position clip and step limit (the emulator declares 200 px per
    command) then never change a command, and lock-step commands can be compared bit for bit with
    an in-process rollout (which neither clips nor limits steps). The first command of an episode
    still jumps from the plant's random start to the middle: under 200 px for the seeds the tests use.
    """
    import torch

    from trainer.data import MinMax
    from trainer.export import checkpoint_state, export_package
    from trainer.models import NetworkSpec, UNetConfig, build_network

    torch.manual_seed(seed)
    spec = NetworkSpec(state_dim=5, action_dim=2, obs_horizon=2, pred_horizon=16, angle_dims=(4,),
                       unet=UNetConfig(down_dims=(8, 16), kernel_size=3, n_groups=4))
    state_stats = MinMax(min=[0.0, 0.0, 0.0, 0.0, 0.0], max=[512.0, 512.0, 512.0, 512.0, 6.2831855])
    action_stats = MinMax(min=[0.0, 0.0], max=[512.0, 512.0])
    net = build_network(spec, state_stats, action_stats)
    with torch.no_grad():
        last = net.unet.final[-1]
        last.weight.mul_(0.05)
        last.bias.zero_()
    state = checkpoint_state(net, state_stats, action_stats, task="pusht-state", action_horizon=8)
    return export_package(state, out_dir, calibration="random", progress=False, candidates=4)


_BUILT: dict[str, Path] = {}


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> Path:
    # Imported into several modules, the fixture is defined once per module: export only once per session.
    if "tiny" not in _BUILT:
        _BUILT["tiny"] = build_tiny_package(tmp_path_factory.mktemp("pkg") / "tiny-pusht")
    return _BUILT["tiny"]


def _run_cli(args: list, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """`python -m runtime.cli ARGS` in a subprocess (the runtime process of the HIL setup)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               PYGAME_HIDE_SUPPORT_PROMPT="1")
    return subprocess.run([sys.executable, "-m", "runtime.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="session")
def run_cli():
    """The runtime process: run_cli([package, "--robot", ...]) -> CompletedProcess."""
    return _run_cli
