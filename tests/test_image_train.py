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


@pytest.mark.parametrize("encoder", [LightConvEncoder, ResNet18GN])
def test_recomputing_the_encoder_gives_the_same_gradients(encoder):
    torch.manual_seed(0)
    net = encoder().train()
    x = torch.randn(3, 3, 84, 84)
    grads = []
    for recompute in (False, True):
        net.recompute = recompute
        net.zero_grad()
        out = net(x)
        (out.square().sum() + out.sum()).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    net.eval()  # evaluation and export never recompute (no backward there)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


def test_recompute_encoder_trains_the_same_steps_and_refuses_state_tasks(image_buffer, tmp_path, capsys):
    import json

    losses = []
    for flag in ("off", "on"):
        out = tmp_path / flag
        assert train_main(_args(image_buffer, out, "--image-encoder", "light", "--steps", "3", "--log-every", "1",
                                "--recompute-encoder", flag)) == 0
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        losses.append([r["loss"] for r in rows if "loss" in r])
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    capsys.readouterr()
    # a run resumes with the other value (memory, not the objective)
    assert train_main(_args(image_buffer, tmp_path / "on", "--image-encoder", "light", "--steps", "4",
                            "--recompute-encoder", "off")) == 0
    assert load_checkpoint(tmp_path / "on" / "last.pt")["step"] == 4
    capsys.readouterr()
    state_args = ["--task", "pusht-state", "--data", str(image_buffer), "--steps", "1", "--batch-size", "4",
                  "--preset", "tiny", "--threads", "1", "--out", str(tmp_path / "s"), "--no-progress",
                  "--recompute-encoder", "on"]
    assert train_main(state_args) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--recompute-encoder on is not possible on cpu: this task has no image encoder") \
        and "\n" not in err
    with pytest.raises(SystemExit) as exc:  # argparse's own refusal of a value outside the choices
        train_main(_args(image_buffer, tmp_path / "x", "--recompute-encoder", "yes"))
    assert exc.value.code == 2 and "--recompute-encoder: invalid choice: 'yes'" in capsys.readouterr().err
