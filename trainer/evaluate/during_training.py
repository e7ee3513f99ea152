"""Evaluation while training: export the EMA network to a temporary fp32 package, roll it out.

``make_eval_fn(cfg)`` returns ``eval_fn(ema_network, step) -> {"eval_score", "eval_success", ...}``
for :func:`trainer.train.loop.train`, which keeps ``best.pt`` by ``eval_score``. The rollouts run
through ``runtime.Policy`` (the robot's code path), on validation seeds ``VALIDATION_SEED + i``,
disjoint from ``imle-eval``'s default test seeds (100000 + i), so picking best.pt does not tune
on the test episodes.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Callable

from trainer.evaluate.rollout import EvalOptions, evaluate_package

VALIDATION_SEED = 200000


def make_eval_fn(cfg, workers: int = 1, seed: int = VALIDATION_SEED, episodes: int | None = None,
                 candidates: int | None = None, keep_dir: str | Path | None = None) -> Callable[[object, int], dict]:
    """An ``eval_fn`` for the training loop; ``cfg`` is the run's TrainConfig.

    ``keep_dir``: export each evaluated package to ``keep_dir/step_<N>`` instead of a temp dir.
    """
    from trainer.evaluate.env import require_gym_pusht

    require_gym_pusht()  # fail before training starts, not at the first evaluation
    n = int(episodes if episodes is not None else cfg.eval_episodes)
    if n < 1:
        raise ValueError("eval_episodes must be >= 1 when evaluating during training")
    stats: dict = {}

    def _stats():
        if not stats:  # statistics of the run's episode subset, exactly as the loop computes them
            from trainer.data.dataset import load_dataset

            ds = load_dataset(dataclasses.replace(cfg.data, use_image=False))  # images not needed for stats
            stats.update(state=ds.state_stats, action=ds.action_stats, episodes=ds.episodes.tolist())
        return stats

    def eval_fn(ema_network, step: int) -> dict:
        import torch

        from trainer.export import checkpoint_state, export_package

        t0 = time.perf_counter()
        s = _stats()
        state = checkpoint_state(ema_network, s["state"], s["action"], method=cfg.method, task=cfg.task,
                                 action_horizon=cfg.data.action_horizon, dataset=str(cfg.data.path),
                                 episodes=s["episodes"], step=step)
        state["config"] = cfg.to_dict()
        state["model"] = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
                          for k, v in ema_network.state_dict().items()}
        with tempfile.TemporaryDirectory(prefix="imle-eval-") as tmp:
            out = Path(keep_dir) / f"step_{step}" if keep_dir else Path(tmp) / "package"
            export_package(state, out, quantize=None, calibration="random", progress=False,
                           n_parity=4, parity_candidates=2)
            report = evaluate_package(out, EvalOptions(episodes=n, seed=seed, precision="fp32", candidates=candidates,
                                                       workers=workers, progress=False))
        return {"eval_score": report.summary.score.value, "eval_success": report.summary.success.value,
                "eval_score_low": report.summary.score.low, "eval_score_high": report.summary.score.high,
                "eval_episodes": n, "eval_s": time.perf_counter() - t0}

    return eval_fn
