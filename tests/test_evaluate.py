"""trainer.evaluate: metrics, observation history, state setting, rollouts through runtime.Policy, CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trainer.evaluate.metrics import EpisodeResult, bootstrap_mean_ci, summarize, two_level_bootstrap_ci, wilson_ci


# ---------------------------------------------------------------------------------------- metrics
def test_wilson_interval_matches_the_formula_and_edges():
    ci = wilson_ci(5, 10)
    z = 1.959963984540054
    half = z * math.sqrt(0.25 / 10 + z * z / 400) / (1 + z * z / 10)
    assert ci.value == 0.5 and ci.low == pytest.approx(0.5 - half) and ci.high == pytest.approx(0.5 + half)
    assert wilson_ci(0, 50).low == 0.0 and 0.0 < wilson_ci(0, 50).high < 0.1
    assert wilson_ci(50, 50).high == 1.0 and 0.9 < wilson_ci(50, 50).low < 1.0


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible():
    x = np.random.default_rng(0).uniform(0, 1, 50)
    a, b = bootstrap_mean_ci(x), bootstrap_mean_ci(x)
    assert a == b and a.low < x.mean() < a.high
    assert a.high - a.low == pytest.approx(2 * 1.96 * x.std() / math.sqrt(50), rel=0.2)  # ~ normal theory
    c = bootstrap_mean_ci(np.ones(7))
    assert c.value == c.low == c.high == 1.0


def test_two_level_bootstrap_carries_the_spread_between_groups():
    rng = np.random.default_rng(1)
    # four training runs whose true means differ (0, 0.05, 0.15, 0.2), 50 noisy episodes each
    groups = [m + rng.normal(0, 0.01, 50) for m in (0.0, 0.05, 0.15, 0.2)]
    flat, two = bootstrap_mean_ci(np.concatenate(groups)), two_level_bootstrap_ci(groups)
    assert two.value == pytest.approx(flat.value) and two.low < 0.1 < two.high
    assert (two.high - two.low) > 5 * (flat.high - flat.low)  # 4 runs, not 200 independent episodes
    assert two == two_level_bootstrap_ci(groups)
    one = two_level_bootstrap_ci(groups[:1])  # one run: only its episodes vary
    assert one.high - one.low == pytest.approx(bootstrap_mean_ci(groups[0]).high - bootstrap_mean_ci(groups[0]).low,
                                               rel=0.15)
    assert math.isnan(two_level_bootstrap_ci([]).value)


def test_summary_score_and_success():
    rs = [EpisodeResult(i, 100 + i, r, r * 0.95, r >= 1.0, 10, 2, 1.0, 0.1) for i, r in enumerate([1.0, 0.5, 0.0, 1.0])]
    s = summarize(rs)
    assert s.score.value == pytest.approx(0.625) and s.success.value == 0.5 and s.episodes == 4


# ---------------------------------------------------------------------------------------- env
def test_missing_gym_pusht_names_the_extra(monkeypatch):
    import sys

    from trainer.evaluate.env import SimUnavailable, require_gym_pusht

    monkeypatch.setitem(sys.modules, "gym_pusht", None)  # makes `import gym_pusht` raise ImportError
    with pytest.raises(SimUnavailable, match=r"\.\[sim\]"):
        require_gym_pusht()


gym_pusht = pytest.importorskip("gym_pusht", reason="gym-pusht not installed: pip install -e '.[sim]'")


def test_set_state_puts_the_block_where_asked_unlike_gym_pushts_reset():
    from trainer.evaluate.env import make_env, reset_to_state

    env = make_env()
    state = np.array([100.0, 120.0, 300.0, 250.0, 1.2])
    obs = reset_to_state(env, state)
    np.testing.assert_allclose(obs[:4], state[:4], atol=1e-6)
    assert obs[4] == pytest.approx(state[4])
    naive, _ = env.reset(options={"reset_to_state": state})  # gym-pusht: position, then angle
    assert np.linalg.norm(naive[2:4] - state[2:4]) > 20.0  # the offset centre of mass moved it
    env.close()


class ScriptedPolicy:
    """Moves the agent toward a fixed point; records what the rollout gave it."""

    obs_horizon, action_horizon = 2, 8

    def __init__(self, target=(256.0, 256.0)):
        self.target = np.asarray(target)
        self.calls, self.resets = [], 0

    def reset(self):
        self.resets += 1

    def act(self, obs_state, obs_image=None):
        self.calls.append((np.array(obs_state), None if obs_image is None else obs_image.shape))
        return np.repeat(self.target[None], self.action_horizon, 0)


def test_episode_executes_ta_actions_per_plan_with_a_padded_history():
    from trainer.evaluate.env import make_env
    from trainer.evaluate.rollout import run_episode

    env = make_env(max_steps=20)
    pol = ScriptedPolicy()
    res, media = run_episode(pol, env, seed=100000, episode=0, max_steps=20, record=True, final_frame=True)
    assert res.steps == 20 and res.plans == 3 and pol.resets == 1  # 8 + 8 + 4 steps
    first = pol.calls[0][0]
    assert first.shape == (2, 5) and np.array_equal(first[0], first[1])  # padded by repetition
    assert not np.array_equal(pol.calls[1][0][0], pol.calls[1][0][1])
    assert 0.0 <= res.max_reward <= 1.0 and res.success == (res.max_coverage > 0.95)
    assert len(media.frames) == 21 and media.final.shape == (256, 256, 3)
    env.close()


def test_image_policies_get_chw_uint8_history():
    from trainer.evaluate.env import make_env
    from trainer.evaluate.rollout import run_episode

    env = make_env(image_shape=(3, 96, 96), max_steps=8)
    pol = ScriptedPolicy()
    run_episode(pol, env, seed=1, max_steps=8)
    state, img_shape = pol.calls[0]
    assert state.shape == (2, 2) and img_shape == (2, 3, 96, 96)
    env.close()


# ---------------------------------------------------------------------------------------- packages
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory):
    """An untrained tiny IMLE network exported (fp32 + int8) as a real package."""
    from trainer.data.normalize import MinMax
    from trainer.export import checkpoint_state, export_package
    from trainer.models.policy_net import NetworkSpec, build_network
    from trainer.models.unet1d import UNetConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    spec = NetworkSpec(state_dim=5, action_dim=2, angle_dims=(4,), unet=UNetConfig(down_dims=(8, 16)))
    s_stats = MinMax(min=[0, 0, 0, 0, 0], max=[512, 512, 512, 512, 6.28])
    a_stats = MinMax(min=[0, 0], max=[512, 512])
    state = checkpoint_state(build_network(spec, s_stats, a_stats), s_stats, a_stats)
    out = tmp_path_factory.mktemp("pkg") / "tiny"
    export_package(state, out, quantize="int8", calibration="random", progress=False, candidates=4,
                   n_calibrate=4, n_parity=2)
    return out


def test_evaluate_package_is_independent_of_worker_count(tiny_package):
    from trainer.evaluate.rollout import EvalOptions, evaluate_package

    base = dict(episodes=2, seed=100000, max_steps=16, progress=False, precision="fp32")
    one = evaluate_package(tiny_package, EvalOptions(**base))
    two = evaluate_package(tiny_package, EvalOptions(**base, workers=2))
    assert [r.max_reward for r in one.results] == [r.max_reward for r in two.results]
    assert [r.seed for r in one.results] == [100000, 100001]
    assert one.candidates == 4 and one.precision == "fp32" and one.method == "rs_imle"


def test_cli_writes_json_csv_and_media(tiny_package, tmp_path, capsys):
    from trainer.evaluate.cli import main

    out = tmp_path / "eval"
    rc = main([str(tiny_package), "--episodes", "2", "--max-steps", "10", "--precision", "int8", "--candidates", "2",
               "--no-temporal-consistency", "--save-media", "--gif-episodes", "1", "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "success rate" in text and "Wilson" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == "int8" and summary["candidates"] == 2 and not summary["temporal_consistency"]
    assert len(summary["episodes"]) == 2 and "score" in summary["summary"]
    assert (out / "episodes.csv").read_text().count("\n") == 3
    assert (out / "rollout_000.gif").stat().st_size > 0 and (out / "final_frames.png").stat().st_size > 0


def test_cli_records_the_package_selection_settings_and_overrides(tiny_package, tmp_path, capsys):
    from trainer.evaluate.cli import main

    for extra, want, line in (([], (True, 5, 8), "temporal consistency on, re-drawn every 5 plans, 8 action(s)"),
                              (["--tc-reset-after", "0"], (True, 0, 8), "temporal consistency on, 8 action(s)"),
                              (["--action-horizon", "3"], (True, 5, 3), "every 5 plans, 3 action(s) per plan")):
        out = tmp_path / f"eval{len(extra)}{extra[-1] if extra else ''}"
        argv = [str(tiny_package), "--episodes", "1", "--max-steps", "9", "--out", str(out), "--quiet", *extra]
        assert main(argv) == 0
        s = json.loads((out / "summary.json").read_text())
        # 5: the exporter's default re-draw; 8: the task's Ta
        assert (s["temporal_consistency"], s["options"]["tc_reset_after"], s["options"]["action_horizon"]) == want
        assert s["episodes"][0]["plans"] == -(-9 // want[2])  # 9 steps in plans of Ta actions
        assert line in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "16", "-2"])
def test_cli_refuses_an_action_horizon_outside_the_plan(tiny_package, value, capsys):
    from trainer.evaluate.cli import main

    assert main([str(tiny_package), "--episodes", "1", "--action-horizon", value, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "action_horizon" in err and "1..15" in err and value in err and "\n" not in err


def test_cli_errors_are_one_line(tmp_path, capsys):
    from trainer.evaluate.cli import main

    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imle-eval: error:") and "\n" not in err and "not found" in err


def test_make_eval_fn_scores_an_ema_network(tiny_buffer, tmp_path):
    from trainer.data import load_dataset
    from trainer.evaluate.during_training import make_eval_fn
    from trainer.models.policy_net import build_network
    from trainer.models.unet1d import UNetConfig
    from trainer.train.config import task_preset
    from trainer.train.loop import network_spec

    path, _, _ = tiny_buffer
    cfg = task_preset("pusht-state")
    cfg.data.path, cfg.eval_episodes, cfg.out_dir = str(path), 1, str(tmp_path / "run")
    ds = load_dataset(cfg.data)
    spec = network_spec(cfg, ds, 0)
    spec.unet = UNetConfig(down_dims=(8, 16))
    net = build_network(spec, ds.state_stats, ds.action_stats).eval()
    result = make_eval_fn(cfg, candidates=2)(net, 7)
    assert 0.0 <= result["eval_score"] <= 1.0 and result["eval_success"] in (0.0, 1.0)
    assert result["eval_episodes"] == 1


def test_cli_missing_accelerator_is_a_one_line_error(tiny_package, capsys):
    import onnxruntime as ort

    from trainer.evaluate.cli import main

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    assert main([str(tiny_package), "--episodes", "1", "--max-steps", "4", "--device", "cuda", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imle-eval: error:") and "\n" not in err and "onnxruntime-gpu" in err
