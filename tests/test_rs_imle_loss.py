"""The RS-IMLE loss: rejection, nearest-sample selection, and where gradients go."""
import torch

from trainer.objectives.rs_imle import rs_imle_loss


def test_zero_when_every_sample_is_rejected():
    target = torch.zeros(3, 4, 2)
    samples = (torch.randn(3, 5, 4, 2) * 1e-3).requires_grad_()  # all within epsilon of the target
    loss, info = rs_imle_loss(target, samples, epsilon=0.03)
    assert loss.item() == 0.0
    assert info["kept_fraction"].item() == 0.0
    assert (info["selected"] == -1).all()
    loss.backward()  # still differentiable, with zero gradient
    assert torch.count_nonzero(samples.grad) == 0


def test_gradient_moves_only_the_nearest_valid_sample():
    target = torch.zeros(1, 2, 1)
    # distances: 0.01 (rejected), 0.5 (nearest kept), 1.0, 2.0
    values = torch.tensor([0.01, 0.5, 1.0, 2.0]).reshape(1, 4, 1, 1)
    samples = torch.cat([values, torch.zeros(1, 4, 1, 1)], dim=2).requires_grad_()
    loss, info = rs_imle_loss(target, samples, epsilon=0.03)
    assert info["selected"].tolist() == [1]
    assert abs(loss.item() - 0.5) < 1e-6  # plain (not squared) L2 distance
    loss.backward()
    moved = samples.grad.abs().sum(dim=(2, 3))[0]
    assert moved[1] > 0
    assert moved[0] == 0 and moved[2] == 0 and moved[3] == 0


def test_datapoints_without_a_kept_sample_are_left_out_of_the_mean():
    target = torch.zeros(2, 1, 1)
    samples = torch.tensor([[0.0, 0.001], [3.0, 4.0]]).reshape(2, 2, 1, 1)
    loss, info = rs_imle_loss(target, samples, epsilon=0.03)
    assert abs(loss.item() - 3.0) < 1e-6  # only the second datapoint counts
    assert info["selected"].tolist() == [-1, 0]
    assert abs(info["kept_fraction"].item() - 0.5) < 1e-6


def test_distance_is_over_the_flattened_chunk():
    target = torch.zeros(1, 3, 2)
    samples = torch.ones(1, 1, 3, 2)
    loss, _ = rs_imle_loss(target, samples, epsilon=0.03)
    assert abs(loss.item() - 6 ** 0.5) < 1e-6
