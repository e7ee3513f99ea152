"""Baselines: the numpy schedule and samplers (runtime) and the torch objectives (trainer)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.samplers import ddim_timesteps, ddpm_schedule, sample_ddim, sample_ddpm, sample_euler


def test_schedule_matches_squaredcos_cap_v2_closed_form():
    s = ddpm_schedule(100)
    abar = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    expected = np.array([min(1 - abar((i + 1) / 100) / abar(i / 100), 0.999) for i in range(100)])
    np.testing.assert_allclose(s.betas, expected, rtol=1e-12)
    np.testing.assert_allclose(s.alphas_cumprod, np.cumprod(1 - expected), rtol=1e-12)
    # abar follows the cosine curve itself (normalised by abar(0)) until the 0.999 cap at the end
    ts = np.arange(1, 90)
    np.testing.assert_allclose(s.alphas_cumprod[ts - 1], [abar(t / 100) / abar(0) for t in ts], rtol=1e-9)
    assert s.betas[-1] == pytest.approx(0.999) and np.all(np.diff(s.alphas_cumprod) < 0)


def _oracle(x0: np.ndarray, abar: np.ndarray):
    def eps(x, t):  # the exact epsilon of x under q(x_t | x0)
        a = abar[int(t)]
        return (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
    return eps


def test_ddim_with_a_perfect_epsilon_oracle_recovers_x0():
    s = ddpm_schedule(100)
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-0.9, 0.9, size=(3, 16, 2)).astype(np.float32)
    x_T = rng.standard_normal(x0.shape).astype(np.float32)
    out = sample_ddim(_oracle(x0, s.alphas_cumprod), x_T, s, steps=10)
    np.testing.assert_allclose(out, x0, atol=1e-4)
    assert list(ddim_timesteps(100, 10)) == [99, 89, 79, 69, 59, 49, 39, 29, 19, 9]


def test_ddpm_with_an_oracle_lands_on_x0_and_clips():
    s = ddpm_schedule(100)
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-0.9, 0.9, size=(2, 8, 2)).astype(np.float32)
    out = sample_ddpm(_oracle(x0, s.alphas_cumprod), rng.standard_normal(x0.shape), s, rng)
    # the last step has no noise and its x0 coefficient is 1, so the oracle's x0 comes back
    np.testing.assert_allclose(out, x0, atol=1e-4)
    wild = sample_ddpm(lambda x, t: -10 * np.ones_like(x), np.zeros((1, 4, 2), np.float32), s, rng)
    assert np.all(np.abs(wild) <= 1.0 + 1e-6)


@pytest.mark.parametrize("steps", [1, 4])
def test_euler_is_exact_on_a_linear_path(steps):
    rng = np.random.default_rng(2)
    x1 = rng.standard_normal((4, 16, 2)).astype(np.float32)
    noise = rng.standard_normal(x1.shape).astype(np.float32)
    seen = []

    def velocity(x, t):  # the true velocity field of the straight path from noise to x1
        seen.append(t)
        np.testing.assert_allclose(x, (1 - t) * noise + t * x1, atol=1e-5)
        return x1 - noise

    np.testing.assert_allclose(sample_euler(velocity, noise, steps=steps), x1, atol=1e-5)
    assert seen == pytest.approx([i / steps for i in range(steps)])


# ---- torch objectives -------------------------------------------------------------------------
torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_thread():
    # the machine is shared: torch's default threads spin against other processes and run 10x slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _toy_net(embed: int):
    from trainer.models.unet1d import ConditionalUnet1D, UNetConfig

    torch.manual_seed(0)
    return ConditionalUnet1D(2, 4, UNetConfig(down_dims=(16, 32), timestep_embed_dim=embed))


def _toy_batch(b: int = 32):
    # two conditions, two constant chunks: a tiny but conditional regression problem
    g = torch.Generator().manual_seed(0)
    which = torch.randint(0, 2, (b,), generator=g)
    cond = torch.nn.functional.one_hot(which, 4).float()
    target = torch.where(which.reshape(-1, 1, 1) == 0, 0.5, -0.5) * torch.ones(b, 8, 2)
    return cond, target


@pytest.mark.parametrize("method", ["diffusion", "flow_matching"])
def test_baseline_losses_train_a_tiny_net(method):
    from types import SimpleNamespace

    from trainer.objectives import build_objective

    obj = build_objective(SimpleNamespace(method=method))
    assert obj.timestep_embed_dim == 128
    net = _toy_net(obj.timestep_embed_dim)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    cond, target = _toy_batch()
    torch.manual_seed(1)
    losses = []
    for _ in range(60):
        loss, info = obj.loss(net, cond, target)
        assert set(info) == {"mse"} and math.isfinite(info["mse"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])


def test_diffusion_objective_uses_the_runtime_schedule():
    from trainer.objectives.diffusion import DiffusionObjective

    obj = DiffusionObjective()
    s = ddpm_schedule(100)
    x = torch.ones(2, 4, 2)
    noise = torch.zeros_like(x)
    t = torch.tensor([0, 99])
    out = obj.noisy(x, t, noise)
    np.testing.assert_allclose(out[:, 0, 0].numpy(), np.sqrt(s.alphas_cumprod[[0, 99]]), rtol=1e-6)


def test_flow_matching_sampler_and_objective_share_the_time_convention():
    """A net trained on the toy problem, sampled through the numpy Euler sampler, lands near the data."""
    from trainer.objectives.flow_matching import FlowMatchingObjective

    obj = FlowMatchingObjective()
    net = _toy_net(obj.timestep_embed_dim)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    cond, target = _toy_batch(64)
    torch.manual_seed(2)
    for _ in range(150):
        loss, _ = obj.loss(net, cond, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    c = cond[:1]

    def step_fn(x, t):
        with torch.no_grad():
            return net(torch.from_numpy(x), c, torch.full((x.shape[0],), t)).numpy()

    out = sample_euler(step_fn, np.random.default_rng(0).standard_normal((16, 8, 2)).astype(np.float32), steps=4)
    expected = float(target[0, 0, 0])
    assert abs(float(np.median(out)) - expected) < 0.25
