"""A tiny Push-T image package (LIGHT encoder, fp32 + int8, golden vectors), exported once per test
process and shared by the tests that need a real one (test_verify_image.py, test_hil_camera_flag.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

_BUILT: dict[str, Path] = {}


def tiny_image_package(tmp_root: Path) -> Path:
    """The package directory (built under `tmp_root` the first time; later calls reuse it). Callers that
    change a package must copy it first (copy_package)."""
    if "pkg" not in _BUILT:
        import torch

        from trainer.data import MinMax
        from trainer.export import checkpoint_state, export_package
        from trainer.models import NetworkSpec, UNetConfig, build_network

        torch.manual_seed(0)
        spec = NetworkSpec(state_dim=2, action_dim=2, obs_horizon=2, pred_horizon=16, image_shape=(3, 96, 96),
                           crop=84, image_encoder="light",
                           unet=UNetConfig(down_dims=(8, 16), kernel_size=3, n_groups=4))
        stats = MinMax(min=[0.0, 0.0], max=[512.0, 512.0])
        net = build_network(spec, stats, stats)
        with torch.no_grad():  # actions near the middle of the table (a random net would slam the edges)
            last = net.unet.final[-1]
            last.weight.mul_(0.05)
            last.bias.zero_()
        state = checkpoint_state(net, stats, stats, task="pusht-image", action_horizon=8)
        _BUILT["pkg"] = export_package(state, Path(tmp_root) / "tiny-pusht-image", quantize="int8",
                                       calibration="random", n_calibrate=4, n_parity=2, parity_candidates=2,
                                       progress=False, candidates=4)
    return _BUILT["pkg"]


def copy_package(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
