"""Closed-loop Push-T rollouts THROUGH ``runtime.Policy``, executing Ta actions per plan as the robot does.

Episode i uses environment seed ``seed + i`` and policy seed ``seed + i``, so a result does not
depend on how episodes are spread over worker processes.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from runtime.sensors import ObservationHistory  # the runtime's: one history, one padding rule
from trainer.evaluate.env import MAX_STEPS, make_env, split_obs
from trainer.evaluate.metrics import EpisodeResult, Summary, summarize

# seed -> an object with obs_horizon, action_horizon, reset() and act(obs_state, obs_image) -> [Ta, A]
PolicyFactory = Callable[[int], Any]


@dataclass
class EvalOptions:
    episodes: int = 50
    seed: int = 100000  # episode i uses seed + i
    max_steps: int = MAX_STEPS
    precision: str | None = None  # None: the package's default (int8 when present)
    candidates: int | None = None  # None: the package's default
    threads: int = 1  # onnxruntime threads per worker
    device: str = "cpu"  # cpu | cuda | tensorrt (runtime.onnx_session.DEVICES)
    temporal_consistency: bool | None = None  # None: the package's
    tc_reset_after: int | None = None  # None: the package's; 0 = never
    action_horizon: int | None = None  # None: the package's Ta (rows executed per plan)
    workers: int = 1  # processes over episodes
    gif_episodes: int = 0  # record full rollouts of the first k episodes (for GIFs)
    final_frames: bool = False  # keep the last frame of every episode (for the PNG grid)
    render_size: int = 256
    progress: bool = True


@dataclass
class EpisodeMedia:
    frames: list[np.ndarray] = field(default_factory=list)  # every step, when recorded
    final: np.ndarray | None = None


@dataclass
class EvalReport:
    package: str
    method: str
    precision: str
    candidates: int
    temporal_consistency: bool
    options: EvalOptions
    results: list[EpisodeResult]
    summary: Summary
    media: dict[int, EpisodeMedia] = field(default_factory=dict)
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        opts = {k: v for k, v in self.options.__dict__.items()}
        return {"package": self.package, "method": self.method, "precision": self.precision,
                "candidates": self.candidates, "temporal_consistency": self.temporal_consistency,
                "options": opts, "summary": self.summary.to_dict(), "wall_s": self.wall_s,
                "episodes": [r.to_dict() for r in self.results]}


class ActionRecorder:
    """Wraps a policy for :func:`run_episode` and keeps every action it returns (float32 rows)."""

    def __init__(self, policy) -> None:
        self.policy = policy
        self.obs_horizon, self.action_horizon = policy.obs_horizon, policy.action_horizon
        self.actions: list[np.ndarray] = []

    def reset(self) -> None:
        self.policy.reset()

    def act(self, obs_state, obs_image=None):
        out = self.policy.act(obs_state, obs_image)
        self.actions.extend(np.asarray(out, np.float32))
        return out


def run_episode(policy, env, seed: int, episode: int = 0, max_steps: int = MAX_STEPS, record: bool = False,
                final_frame: bool = False) -> tuple[EpisodeResult, EpisodeMedia]:
    """One episode: plan on the To-step history, execute the Ta returned actions, repeat."""
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    policy.reset()
    state, image = split_obs(obs)
    hist = ObservationHistory(policy.obs_horizon, state.size, None if image is None else image.shape)
    hist.push(state, image)  # the first observation fills the window
    media = EpisodeMedia()
    if record:
        media.frames.append(env.render())
    max_reward, max_cov, success, steps, plans, plan_s = 0.0, 0.0, False, 0, 0, 0.0
    done = False
    while not done and steps < max_steps:
        tp = time.perf_counter()
        actions = policy.act(hist.states(), hist.images())
        plan_s += time.perf_counter() - tp
        plans += 1
        for a in actions:
            obs, reward, terminated, truncated, info = env.step(np.asarray(a, dtype=np.float64))
            steps += 1
            hist.push(*split_obs(obs))
            max_reward = max(max_reward, float(reward))
            max_cov = max(max_cov, float(info.get("coverage", 0.0)))
            success = success or bool(info.get("is_success", False))
            if record:
                media.frames.append(env.render())
            # gym-pusht terminates on success; the step limit truncates
            if terminated or truncated or steps >= max_steps:
                done = True
                break
    if final_frame:
        media.final = media.frames[-1] if media.frames else env.render()
    result = EpisodeResult(episode=episode, seed=seed, max_reward=max_reward, max_coverage=max_cov,
                           success=success, steps=steps, plans=plans,
                           plan_latency_ms=1000 * plan_s / max(1, plans), wall_s=time.perf_counter() - t0)
    return result, media


def run_episodes(factory: PolicyFactory, image_shape: tuple[int, ...] | None, opts: EvalOptions,
                 indices: list[int] | None = None) -> Iterator[tuple[EpisodeResult, EpisodeMedia]]:
    """Episodes ``indices`` (default all) in this process, one environment reused."""
    env = make_env(image_shape, opts.max_steps, opts.render_size)
    try:
        for i in indices if indices is not None else range(opts.episodes):
            seed = opts.seed + i
            yield run_episode(factory(seed), env, seed, i, opts.max_steps, record=i < opts.gif_episodes,
                              final_frame=opts.final_frames)
    finally:
        env.close()


# ----------------------------------------------------------------------------- packages
def package_factory(package, opts: EvalOptions) -> PolicyFactory:
    """Seed -> a fresh ``runtime.Policy`` on an already-loaded package."""
    from runtime.policy import Policy

    def make(seed: int):
        return Policy(package, precision=opts.precision, candidates=opts.candidates, threads=opts.threads,
                      seed=seed, temporal_consistency=opts.temporal_consistency,
                      tc_reset_after=opts.tc_reset_after, device=opts.device, action_horizon=opts.action_horizon)

    return make


_WORKER: dict = {}


def _worker_init(package_path: str, opts: EvalOptions) -> None:
    from runtime.package import load_package

    pkg = load_package(package_path)
    _WORKER.update(opts=opts, factory=package_factory(pkg, opts), shape=_image_shape(pkg))


def _worker_episode(i: int) -> tuple[EpisodeResult, EpisodeMedia]:
    return next(run_episodes(_WORKER["factory"], _WORKER["shape"], _WORKER["opts"], [i]))


def _image_shape(pkg) -> tuple[int, ...] | None:
    shape = pkg.manifest.obs.image_shape
    return tuple(shape) if shape else None


def evaluate_package(package_path: str | Path, opts: EvalOptions | None = None) -> EvalReport:
    """Evaluate a model package in gym-pusht through ``runtime.Policy``; see :class:`EvalOptions`."""
    from runtime.package import load_package

    opts = opts or EvalOptions()
    if opts.episodes < 1 or opts.workers < 1 or opts.max_steps < 1:
        raise ValueError("episodes, workers and max_steps must be >= 1")
    t0 = time.perf_counter()
    pkg = load_package(package_path)
    probe = package_factory(pkg, opts)(opts.seed)  # fails fast on a bad precision / candidate count
    # record what runs: the package's selection settings where the options left them open
    opts = replace(opts, temporal_consistency=probe.temporal_consistency, tc_reset_after=probe.tc_reset_after,
                   action_horizon=probe.action_horizon)
    shape = _image_shape(pkg)
    bar = tqdm(total=opts.episodes, desc=f"eval {pkg.root.name}", unit="ep", disable=not opts.progress,
               dynamic_ncols=True)
    out: list[tuple[EpisodeResult, EpisodeMedia]] = []
    workers = min(opts.workers, opts.episodes)
    if workers == 1:
        it = run_episodes(package_factory(pkg, opts), shape, opts)
        for item in it:
            out.append(item)
            _progress(bar, out)
    else:
        # spawn, not fork: the parent may hold torch / onnxruntime thread pools that fork would copy
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_worker_init, initargs=(str(package_path), opts)) as pool:
            for item in pool.imap_unordered(_worker_episode, range(opts.episodes)):
                out.append(item)
                _progress(bar, out)
    bar.close()
    out.sort(key=lambda x: x[0].episode)
    results = [r for r, _ in out]
    media = {r.episode: m for r, m in out if m.frames or m.final is not None}
    return EvalReport(package=str(package_path), method=pkg.manifest.method, precision=probe.precision,
                      candidates=probe.candidates, temporal_consistency=probe.temporal_consistency, options=opts,
                      results=results, summary=summarize(results), media=media, wall_s=time.perf_counter() - t0)


def _progress(bar, out: list) -> None:
    scores = [r.max_reward for r, _ in out]
    bar.set_postfix(score=f"{np.mean(scores):.3f}", success=f"{np.mean([r.success for r, _ in out]):.2f}")
    bar.update(1)
