"""Packages that try to hurt the robot, for the safety HIL tests (imported, not a conftest).

Each is a real, self-consistent package (hashes match, the runtime loads it): what makes it hostile
is what its graph commands and what its manifest claims.

    tampered  the manifest's action range (and its task's) is +-1e9 and the graph's outputs span it:
              every plan asks for jumps of hundreds of pixels past the table (the attack of issue #16)
    corner    a normal action range, but the generator is pushed far outside it: every command
              drives into a corner of the box, and consecutive candidates jump across it
"""
from __future__ import annotations

import json
from pathlib import Path

KINDS = ("tampered", "corner")


def build_hostile_package(out_dir: Path, kind: str, seed: int = 0) -> Path:
    import torch

    from trainer.data import MinMax
    from trainer.export import checkpoint_state, export_package
    from trainer.models import NetworkSpec, UNetConfig, build_network

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    torch.manual_seed(seed)
    spec = NetworkSpec(state_dim=5, action_dim=2, obs_horizon=2, pred_horizon=16, angle_dims=(4,),
                       unet=UNetConfig(down_dims=(8, 16), kernel_size=3, n_groups=4))
    state_stats = MinMax(min=[0.0, 0.0, 0.0, 0.0, 0.0], max=[512.0, 512.0, 512.0, 512.0, 6.2831855])
    span = 1e9 if kind == "tampered" else 512.0
    action_stats = MinMax(min=[-span if kind == "tampered" else 0.0] * 2, max=[span] * 2)
    net = build_network(spec, state_stats, action_stats)
    with torch.no_grad():
        last = net.unet.final[-1]
        if kind == "tampered":
            last.weight.mul_(1e-6)       # outputs a few 1e-6 of +-1e9 around 0: hundreds of px, changing every step
            last.bias.copy_(torch.tensor([2e-7, -2e-7]))
        else:
            last.weight.mul_(20.0)       # candidates disagree wildly: the z that is kept jumps across the box
            last.bias.copy_(torch.tensor([3.0, -3.0]))  # far past the range: x beyond 512, y below 0
    state = checkpoint_state(net, state_stats, action_stats, task="pusht-state", action_horizon=8)
    pkg = export_package(state, out_dir, calibration="random", progress=False, candidates=4)
    if kind == "tampered":  # a thorough attacker rewrites the task's action limits too (the manifest is unsigned)
        path = Path(pkg) / "manifest.json"
        manifest = json.loads(path.read_text())
        if manifest.get("task_spec"):
            manifest["task_spec"]["action"]["low"] = [-span] * 2
            manifest["task_spec"]["action"]["high"] = [span] * 2
            path.write_text(json.dumps(manifest, indent=2) + "\n")
    return pkg
