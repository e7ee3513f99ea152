"""Exported image policies: the centre crop lives in the graph, the encoder runs once per plan, the runtime plans."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.data import MinMax
from trainer.export import ExportError, checkpoint_state, export_package
from trainer.export.encoder_once import encoder_convs_on_z, image_convs
from trainer.export.imle import check_encoder_once
from trainer.models import PRESETS, NetworkSpec, UNetConfig, build_network

STATE = MinMax(min=[13.5, 32.5], max=[496.1, 510.9])
ACTION = MinMax(min=[12.0, 25.0], max=[511.0, 511.0])


def _net(encoder: str = "light"):
    torch.manual_seed(0)
    unet = UNetConfig(**{**PRESETS["tiny"].__dict__, "timestep_embed_dim": 0})
    spec = NetworkSpec(state_dim=2, action_dim=2, image_shape=(3, 96, 96), crop=84, image_encoder=encoder, unet=unet)
    return build_network(spec, STATE, ACTION).eval()


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    net = _net()
    out = tmp_path_factory.mktemp("pkg") / "light"
    export_package(checkpoint_state(net, STATE, ACTION, task="pusht-image"), out, quantize="int8",
                   calibration="random", n_calibrate=4, n_parity=2, parity_candidates=2, progress=False)
    return out, net


def _obs(seed=0):
    rng = np.random.default_rng(seed)
    state = np.array([[200.0, 300.0], [210.0, 290.0]], np.float32)
    return state, rng.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8)


@pytest.mark.parametrize("name", ["generator.onnx", "generator.int8.onnx"])
def test_no_encoder_convolution_depends_on_the_latents(package, name):
    n, on_z = encoder_convs_on_z(package[0] / name)
    assert n == 5 and on_z == []  # 4 conv layers + the keypoint 1x1 conv, none on the candidates' path


def test_an_encoder_run_per_candidate_is_an_export_error(tmp_path):
    """A graph that expands the observation to N copies before the encoder is refused."""
    from trainer.export.onnx_export import GraphSpec, export_graph

    net = _net()

    class PerCandidate(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, obs_state, obs_image, z):
            n = z.shape[0]
            cond = self.net.encode(obs_state.expand(n, -1, -1), obs_image.expand(n, -1, -1, -1, -1))
            return self.net.unnormalize_action(self.net(z, cond))

    state, img = _obs()
    example = (torch.from_numpy(state[None]), torch.from_numpy(img[None]), torch.randn(3, 16, 2))
    spec = GraphSpec(["obs_state", "obs_image", "z"], ["actions"], {"z": {0: "N"}, "actions": {0: "N"}})
    path = export_graph(PerCandidate(), example, tmp_path / "bad.onnx", spec)
    with pytest.raises(ExportError, match=r"bad\.onnx: 5 of 5 image-encoder convolutions depend on z"):
        check_encoder_once(path)


def test_exported_graph_crops_the_centre_as_evaluation_does(package):
    """Pixels outside the centre 84x84 never reach the graph's output; pixels inside do; and the graph
    equals the torch network in eval mode (centre crop) on the full frame."""
    from runtime.onnx_session import make_session

    pkg, net = package
    sess = make_session(pkg / "generator.onnx", threads=1)
    state, img = _obs()
    z = np.random.default_rng(1).standard_normal((4, 16, 2), dtype=np.float32)

    def run(frames):
        return sess.run(["actions"], {"obs_state": state[None], "obs_image": frames[None], "z": z})[0]

    base = run(img)
    border = img.copy()
    border[:, :, :6, :] = 255 - border[:, :, :6, :]  # the 6-pixel margins the centre crop drops
    border[:, :, 90:, :] = 0
    border[:, :, :, :6] = 17
    border[:, :, :, 90:] = 255
    assert np.array_equal(run(border), base)
    inside = img.copy()
    inside[:, :, 6:90, 6:90] = 255 - inside[:, :, 6:90, 6:90]
    assert np.abs(run(inside) - base).max() > 1e-3
    with torch.no_grad():
        cond = net.encode(torch.from_numpy(state[None]), torch.from_numpy(img[None]))
        ref = net.unnormalize_action(net(torch.from_numpy(z), cond)).numpy()
    assert np.abs(base - ref).max() < 1e-3 * (511 - 12)


def test_runtime_plans_with_full_frames_at_both_precisions(package):
    from runtime import Policy

    pkg, _ = package
    state, img = _obs()
    for precision in ("fp32", "int8"):
        pol = Policy(pkg, precision=precision, candidates=32, threads=1)
        assert pol.manifest.obs.image_shape == [3, 96, 96]  # the camera's frame: the crop is in the graph
        chunk = pol.plan(state, img)
        assert chunk.shape == (16, 2) and np.isfinite(chunk).all()


def test_int8_graph_quantises_the_image_encoder(package):
    import onnx

    model = onnx.load(str(package[0] / "generator.int8.onnx"))
    convs = image_convs(model)
    assert len(convs) == 5
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert all(producers.get(c.input[1]) == "DequantizeLinear" for c in convs)  # QDQ weights: int8 kernels
