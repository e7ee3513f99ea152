"""Closed-loop evaluation in gym-pusht THROUGH ``runtime.Policy`` (the robot's code path).

- env: environment creation, correct state setting (:func:`reset_to_state`), observations
- history: the To-frame observation history, padded at episode start
- rollout: episodes and :func:`evaluate_package` (optionally over worker processes)
- metrics: per-episode results, score and success rate with 95% confidence intervals
- report / media: table, JSON, CSV, GIFs and a PNG grid of final frames
- during_training: :func:`make_eval_fn` for the training loop
- replay: open-loop replay of demonstrations (dataset/simulator agreement)
"""
from trainer.evaluate.metrics import EpisodeResult, Interval, Summary, bootstrap_mean_ci, summarize, wilson_ci
from trainer.evaluate.rollout import EvalOptions, EvalReport, evaluate_package, run_episode, run_episodes

__all__ = ["EpisodeResult", "Interval", "Summary", "bootstrap_mean_ci", "summarize", "wilson_ci", "EvalOptions",
           "EvalReport", "evaluate_package", "run_episode", "run_episodes"]
