"""imle-train on image tasks: --image-encoder / --image-crop, end to end on a tiny image buffer."""
from __future__ import annotations

import pytest
import torch
from tiny_buffers import make_tiny_buffer

from trainer.cli import train_main
from trainer.models.encoders import LightConvEncoder, ResNet18GN
from trainer.train import load_checkpoint, network_from_checkpoint


@pytest.fixture(scope="module")
def image_buffer(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "img.zarr"
    make_tiny_buffer(path, n_episodes=3, with_image=True, lengths=[12, 10, 11])
    return path


def _args(path, out, *extra):
    return ["--task", "pusht-image", "--data", str(path), "--steps", "2", "--batch-size", "4", "--preset", "tiny",
            "--n-samples", "2", "--threads", "1", "--out", str(out), "--no-progress", *extra]


@pytest.mark.parametrize("extra", [(), ("--data-on-device", "on")])
def test_light_encoder_trains_and_rebuilds_from_its_checkpoint(image_buffer, tmp_path, extra):
    out = tmp_path / "light"
    assert train_main(_args(image_buffer, out, "--image-encoder", "light", "--image-crop", "80", *extra)) == 0
    state = load_checkpoint(out / "last.pt")
    assert state["spec"]["image_encoder"] == "light" and state["spec"]["crop"] == 80
    net = network_from_checkpoint(state)
    assert isinstance(net.image_encoder, LightConvEncoder)
    img = torch.randint(0, 256, (1, 2, 3, 96, 96), dtype=torch.uint8)
    with torch.no_grad():
        cond = net.encode(torch.full((1, 2, 2), 200.0), img)
    assert cond.shape == (1, 2 * 2 + 2 * LightConvEncoder.out_dim) and torch.isfinite(cond).all()


def test_the_default_image_encoder_is_the_papers_resnet(image_buffer, tmp_path):
    from trainer.train.config import task_preset

    cfg = task_preset("pusht-image")
    assert cfg.image_encoder == "resnet18gn" and cfg.image_crop == 84
    from trainer.models.policy_net import NetworkSpec

    assert NetworkSpec.from_dict({**NetworkSpec(2, 2, image_shape=(3, 96, 96)).to_dict()}).image_encoder == "resnet18gn"
    old = NetworkSpec(2, 2, image_shape=(3, 96, 96)).to_dict()
    del old["image_encoder"]  # a checkpoint written before the flag existed
    from trainer.models.policy_net import PolicyNetwork

    assert isinstance(PolicyNetwork(NetworkSpec.from_dict(old), [1, 1], [0, 0], [1, 1], [0, 0]).image_encoder,
                      ResNet18GN)


def test_resuming_with_another_image_encoder_is_refused(image_buffer, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(_args(image_buffer, out, "--image-encoder", "light")) == 0
    capsys.readouterr()
    assert train_main(_args(image_buffer, out, "--image-encoder", "resnet18gn")) == 2
    err = capsys.readouterr().err.strip()
    assert "was trained with image_encoder = 'light', this run asks for 'resnet18gn'" in err and "\n" not in err


@pytest.mark.parametrize("extra, message", [
    (("--image-crop", "100"), "imle-train: error: image crop 100 is larger than the frames (96x96); use a crop <= 96"),
    (("--image-crop", "-1"), "imle-train: error: --image-crop must be an integer >= 0, got -1"),
])
def test_bad_image_flags_are_one_line_errors(image_buffer, tmp_path, capsys, extra, message):
    assert train_main(_args(image_buffer, tmp_path / "bad", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err


def test_unknown_image_encoder_is_refused_by_the_parser(image_buffer, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train_main(_args(image_buffer, tmp_path / "bad", "--image-encoder", "vit"))
    assert exc.value.code == 2
    assert "--image-encoder: invalid choice: 'vit'" in capsys.readouterr().err
