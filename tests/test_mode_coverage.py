"""The method's reason to exist: RS-IMLE covers both modes of a bimodal demonstration set,
where an MSE regressor trained the same way averages them."""
import numpy as np
import pytest
import torch

from trainer.data import MinMax
from trainer.models import NetworkSpec, UNetConfig, build_network
from trainer.objectives.rs_imle import RSIMLEConfig, rs_imle_objective

TP, MODE, SPREAD = 4, 0.6, 0.1  # chunk length; targets are constant chunks near +MODE or -MODE


def _net(seed: int):
    torch.manual_seed(seed)
    spec = NetworkSpec(state_dim=1, action_dim=1, obs_horizon=1, pred_horizon=TP,
                       unet=UNetConfig(down_dims=(16, 32), n_groups=4))
    unit = MinMax(min=[-1.0], max=[1.0])  # identity normalisation
    return build_network(spec, unit, unit)


def _batch(rng, n):
    """Observation is always 0; the demonstrated chunk is +MODE or -MODE with equal probability."""
    obs = torch.zeros(n, 1, 1)
    sign = rng.choice([-1.0, 1.0], size=n)
    # each demonstration is unique (a small offset), as real demonstrations are: identical targets
    # would let a mode collapse inside epsilon and be rejected wholesale
    level = sign * MODE + rng.uniform(-SPREAD, SPREAD, size=n)
    return obs, torch.from_numpy(level.astype(np.float32)).reshape(n, 1, 1) * torch.ones(n, TP, 1)


def _train(loss_kind: str, steps: int = 300, seed: int = 0):
    net = _net(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    rng = np.random.default_rng(seed)
    cfg = RSIMLEConfig(n_samples=20, epsilon=0.03)  # the paper's m and epsilon
    for _ in range(steps):
        obs, target = _batch(rng, 32)
        cond = net.encode(obs)
        if loss_kind == "imle":
            loss, _ = rs_imle_objective(net, cond, target, cfg)
        else:  # the regressor: same network, latent fixed at zero, MSE to the demonstration
            loss = ((net(torch.zeros_like(target), cond) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic and fair on a shared 2-core machine
    yield
    torch.set_num_threads(old)


def test_imle_covers_both_modes_and_mse_averages_them(one_thread):
    imle = _train("imle")
    with torch.no_grad():
        cond = imle.encode(torch.zeros(1, 1, 1))
        out = imle(torch.randn(400, TP, 1, generator=torch.Generator().manual_seed(1)), cond)
    mean = out.mean(dim=(1, 2))
    plus, minus = (mean > 0).float().mean().item(), (mean < 0).float().mean().item()
    assert plus >= 0.3 and minus >= 0.3, f"mode shares +{plus:.2f} / -{minus:.2f}"
    # most samples sit on a mode, not between them
    err = torch.minimum((out - MODE).abs().mean(dim=(1, 2)), (out + MODE).abs().mean(dim=(1, 2)))
    assert (err < 0.15).float().mean().item() > 0.8, f"median error to nearest mode {err.median():.3f}"

    mse = _train("mse")
    with torch.no_grad():
        pred = mse(torch.zeros(1, TP, 1), mse.encode(torch.zeros(1, 1, 1)))
    assert pred.abs().mean().item() < 0.2 * MODE, f"regressor lands at {pred.mean():.3f}, not between modes"
