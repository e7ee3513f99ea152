"""Random-crop augmentation on the device (batched index arithmetic) and the centre crop of evaluation/export."""
from __future__ import annotations

import pytest
import torch

from trainer.models.crop import CropError, centre_crop, crop_at, crop_offsets, random_crop
from trainer.models.policy_net import NetworkSpec, PolicyNetwork
from trainer.models.unet1d import PRESETS
from trainer.objectives.noise import BatchNoise, batch_noise


def _frames(b=64, t=2, h=96, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, 3, h, w), dtype=torch.uint8, generator=g)


def test_offsets_stay_inside_the_frame_and_differ_per_sample():
    top, left = crop_offsets((64, 2), 96, 90, 84, torch.device("cpu"), torch.Generator().manual_seed(1))
    assert top.shape == left.shape == (64, 2)
    assert int(top.min()) >= 0 and int(top.max()) <= 12 and int(left.min()) >= 0 and int(left.max()) <= 6
    pairs = {(int(a), int(b)) for a, b in zip(top.flatten(), left.flatten())}
    assert len(pairs) > 40  # 128 frames, 13 x 7 possible offsets: not one offset for the batch


def test_every_frame_is_the_slice_at_its_own_offset():
    x = _frames(b=5, t=2, h=12, w=10).reshape(10, 3, 12, 10)
    top, left = torch.tensor([0, 4, 1, 2, 3, 0, 4, 4, 0, 2]), torch.tensor([2, 0, 1, 2, 0, 2, 1, 0, 0, 2])
    got = crop_at(x, top, left, 8)
    assert got.shape == (10, 3, 8, 8) and got.dtype == torch.uint8
    for i in range(10):
        t, l_ = int(top[i]), int(left[i])
        assert torch.equal(got[i], x[i, :, t:t + 8, l_:l_ + 8])


def test_random_crop_is_deterministic_under_a_seed():
    x = _frames(b=8)
    a = random_crop(x, 84, torch.Generator().manual_seed(3))
    b = random_crop(x, 84, torch.Generator().manual_seed(3))
    c = random_crop(x, 84, torch.Generator().manual_seed(4))
    assert a.shape == (8, 2, 3, 84, 84) and torch.equal(a, b) and not torch.equal(a, c)


def test_training_crops_follow_the_batch_noise_of_the_step():
    """While training the offsets come from BatchNoise: the same (seed, step) gives the same crops, and
    two processes' halves of a global batch crop as one process does."""
    x = _frames(b=8)

    def crop(offset, local, step=0):
        with batch_noise(BatchNoise(7, step, offset, local, 8, "cpu")):
            return random_crop(x[offset:offset + local], 84)

    whole = crop(0, 8)
    assert torch.equal(whole, crop(0, 8))
    assert torch.equal(torch.cat([crop(0, 4), crop(4, 4)]), whole)
    assert not torch.equal(whole, crop(0, 8, step=1))


def test_centre_crop_and_no_crop():
    x = _frames(b=2)
    assert torch.equal(centre_crop(x, 84), x[..., 6:90, 6:90])
    assert centre_crop(x, 0) is x and random_crop(x, 0) is x
    assert torch.equal(centre_crop(x, 96), x)


@pytest.mark.parametrize("size, message", [
    (100, r"image crop 100 is larger than the frames \(96x96\); use a crop <= 96 or 0 for none"),
    (-1, r"image crop must be an integer >= 0 \(0: no crop\), got -1"),
])
def test_bad_crop_sizes_are_one_line_errors(size, message):
    with pytest.raises(CropError, match=message):
        random_crop(_frames(b=2), size)
    with pytest.raises(CropError, match=message):
        centre_crop(_frames(b=2), size)


def test_network_with_a_crop_larger_than_its_frames_is_refused():
    spec = NetworkSpec(state_dim=2, action_dim=2, image_shape=(3, 64, 64), crop=84, image_encoder="light",
                       unet=PRESETS["tiny"])
    with pytest.raises(CropError, match=r"image crop 84 is larger than the frames \(64x64\)"):
        PolicyNetwork(spec, [1, 1], [0, 0], [1, 1], [0, 0])


def test_network_crops_randomly_in_training_and_centrally_in_eval():
    spec = NetworkSpec(state_dim=2, action_dim=2, image_shape=(3, 96, 96), image_encoder="light",
                       unet=PRESETS["tiny"])
    net = PolicyNetwork(spec, [1, 1], [0, 0], [1, 1], [0, 0])
    x = _frames(b=4)
    torch.manual_seed(0)
    train_a = net.crop(x)
    torch.manual_seed(0)
    assert torch.equal(net.crop(x), train_a)
    assert not torch.equal(train_a, centre_crop(x, 84))
    net.eval()
    assert torch.equal(net.crop(x), centre_crop(x, 84))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_random_crop_on_cuda_matches_the_slices():
    x = _frames(b=16).cuda()
    top, left = crop_offsets((16, 2), 96, 96, 84, x.device, torch.Generator(device="cuda").manual_seed(0))
    got = crop_at(x.reshape(32, 3, 96, 96), top.reshape(-1), left.reshape(-1), 84)
    assert got.device.type == "cuda"
    flat = x.reshape(32, 3, 96, 96).cpu()
    for i, (t, l_) in enumerate(zip(top.reshape(-1).tolist(), left.reshape(-1).tolist())):
        assert torch.equal(got[i].cpu(), flat[i, :, t:t + 84, l_:l_ + 84])
