"""The on-robot policy: ONNX session -> N candidate chunks -> temporal-consistency selection -> actions.

IMLE (``rs_imle``) packages generate all candidates in one batched session call. Baseline packages
(``diffusion``, ``flow_matching``) run the encoder once per plan and the numpy sampler of
:mod:`runtime.samplers` over the denoiser graph, so every method is timed through the same code.

Selection (IMLE Policy's temporal consistency): among finite candidates, keep the one whose first
L steps from the current time (index To-1) are closest, in normalised units, to the unexecuted rest
of the previous plan (L steps). Without a previous plan, candidate 0 (a random draw) is used; the
previous plan is forgotten every ``tc_reset_after`` plans (the package's control setting), so the
policy can leave a mode that has stopped making progress.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from runtime import samplers
from runtime.chunks import executed_rows, now_row, rest_rows
from runtime.normalize import minmax_scale_offset  # the trainer's MinMax uses the same function
from runtime.package import (MAX_TC_RESET_AFTER, Manifest, Package, PackageError, _ort_message, check_action_horizon,
                             check_candidates, load_package)


class PlanError(RuntimeError):
    """No usable plan: every candidate had a non-finite value. A bad plan is never returned."""


class Policy:
    def __init__(self, package: str | Path | Package, precision: str | None = None, candidates: int | None = None,
                 threads: int = 1, seed: int = 0, temporal_consistency: bool | None = None,
                 tc_reset_after: int | None = None, device: str = "cpu", action_horizon: int | None = None):
        self.package = package if isinstance(package, Package) else load_package(package)
        m = self.package.manifest
        self.manifest: Manifest = m
        available = m.precisions()
        if precision is None:
            precision = "int8" if "int8" in available else "fp32"
        if precision not in available:
            raise PackageError(f"precision {precision!r} is not in package {self.package.root.name} "
                               f"(available: {', '.join(available)})")
        self.precision = precision
        if candidates is None:
            candidates = m.control.candidates
        elif isinstance(candidates, float) and candidates.is_integer():
            candidates = int(candidates)
        elif hasattr(candidates, "__index__") and not isinstance(candidates, bool):
            candidates = candidates.__index__()  # numpy integers
        check_candidates(candidates, m.horizons.pred, m.action.dim)
        self.candidates = candidates
        # None: the package's control settings; tc_reset_after 0 = never re-draw
        if temporal_consistency is None:
            temporal_consistency = m.control.temporal_consistency
        if tc_reset_after is None:
            tc_reset_after = m.control.tc_reset_after
        if not 0 <= tc_reset_after <= MAX_TC_RESET_AFTER:
            raise ValueError(f"tc_reset_after must be >= 0 (0: never) and at most {MAX_TC_RESET_AFTER}, "
                             f"got {tc_reset_after}")
        if action_horizon is None:
            action_horizon = m.horizons.action
        elif hasattr(action_horizon, "__index__") and not isinstance(action_horizon, bool):
            action_horizon = action_horizon.__index__()  # numpy integers, as for candidates
        check_action_horizon(action_horizon, m.horizons.obs, m.horizons.pred)
        self._action_horizon = action_horizon
        self.threads = threads
        self.device = device  # cpu | cuda | tensorrt (runtime.onnx_session.DEVICES)
        self.seed = seed
        self.temporal_consistency = temporal_consistency
        self.tc_reset_after = int(tc_reset_after)  # 0: never
        self._rng = np.random.default_rng(seed)
        self._scale, self._offset = minmax_scale_offset(m.normalization.action.min, m.normalization.action.max)
        if m.method == "rs_imle":
            self._gen = self.package.session("generator", precision, threads, device)
        else:
            self._enc = self.package.session("encoder", precision, threads, device)
            self._den = self.package.session("denoiser", precision, threads, device)
            self._schedule = (samplers.ddpm_schedule(m.sampler.train_steps) if m.sampler.kind in ("ddpm", "ddim")
                              else None)
        self._rest: np.ndarray | None = None  # unexecuted rest of the previous plan, raw units
        self._plans_since_reset = 0
        self.last_plan: np.ndarray | None = None
        self.last_plan_info: dict = {}
        self._probe()

    # ------------------------------------------------------------------ graph calls
    def _run(self, role: str, output: str, feeds: dict[str, np.ndarray], shape: tuple) -> np.ndarray:
        """One session call; an onnxruntime failure or an output that contradicts the manifest is a
        one-line PackageError naming the file (a graph can declare one shape and compute another)."""
        sess = {"generator": "_gen", "encoder": "_enc", "denoiser": "_den"}[role]
        name = self.package.entry(role, self.precision).name
        try:
            out = getattr(self, sess).run([output], feeds)[0]
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidArgument / RuntimeException types
            raise PackageError(f"{name}: onnxruntime failed to run the graph ({_ort_message(exc)})") from None
        if out.shape != shape or out.dtype != np.float32:
            raise PackageError(f"{name}: output '{output}' is {out.dtype} {list(out.shape)}, the manifest implies "
                               f"float32 {list(shape)}")
        return out

    def _probe(self) -> None:
        """Run each graph once at load, on zero observations and latents, at the configured candidate
        count: run-time errors and wrong output shapes surface here, not mid-episode. The policy's
        random stream is not touched."""
        m = self.manifest
        feeds = {"obs_state": np.zeros((1, self.obs_horizon, self.state_dim), np.float32)}
        if m.obs.image_shape is not None:
            feeds["obs_image"] = np.zeros((1, self.obs_horizon, *m.obs.image_shape), np.uint8)
        chunk = (self.candidates, self.pred_horizon, self.action_dim)
        if m.method == "rs_imle":
            self._run("generator", "actions", {**feeds, "z": np.zeros(chunk, np.float32)}, chunk)
        else:
            cond = self._run("encoder", "cond", feeds, (1, m.cond_dim))
            self._run("denoiser", "output", {"cond": cond, "sample": np.zeros(chunk, np.float32),
                                             "timestep": np.zeros(1, np.float32)}, chunk)

    # ------------------------------------------------------------------ shapes
    @property
    def obs_horizon(self) -> int:
        return self.manifest.horizons.obs

    @property
    def pred_horizon(self) -> int:
        return self.manifest.horizons.pred

    @property
    def action_horizon(self) -> int:
        """Ta: rows executed per plan (the package's, or the caller's override)."""
        return self._action_horizon

    @property
    def action_dim(self) -> int:
        return self.manifest.action.dim

    @property
    def state_dim(self) -> int:
        return self.manifest.obs.state_dim

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None) -> None:
        """New episode: forget the previous plan. With ``seed``, restart the latent stream as a
        fresh ``Policy(..., seed=seed)`` would (without opening a new onnxruntime session);
        without it the random stream continues."""
        if seed is not None:
            self.seed = seed
            self._rng = np.random.default_rng(seed)
        self._rest = None
        self._plans_since_reset = 0
        self.last_plan = None

    # ------------------------------------------------------------------ planning
    def _feeds(self, obs_state: np.ndarray, obs_image: np.ndarray | None) -> dict[str, np.ndarray]:
        to, ds = self.obs_horizon, self.state_dim
        s = np.asarray(obs_state, dtype=np.float32)
        if s.shape != (to, ds):
            raise ValueError(f"obs_state must have shape ({to}, {ds}) [obs_horizon, state_dim], got {s.shape}")
        feeds = {"obs_state": np.ascontiguousarray(s[None])}
        shape = self.manifest.obs.image_shape
        if shape is not None:
            if obs_image is None:
                raise ValueError(f"this policy needs obs_image of shape ({to}, {', '.join(map(str, shape))}) uint8")
            img = np.asarray(obs_image)
            if img.shape != (to, *shape) or img.dtype != np.uint8:
                raise ValueError(f"obs_image must be uint8 of shape {(to, *shape)}, got {img.dtype} {img.shape}")
            feeds["obs_image"] = np.ascontiguousarray(img[None])
        return feeds

    def _generate(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """All candidates [N, Tp, A] in raw units."""
        shape = (self.candidates, self.pred_horizon, self.action_dim)
        if self.manifest.method == "rs_imle":
            feeds["z"] = self._rng.standard_normal(shape, dtype=np.float32)
            return self._run("generator", "actions", feeds, shape)
        cond = self._run("encoder", "cond", feeds, (1, self.manifest.cond_dim))

        def step_fn(x: np.ndarray, t: float) -> np.ndarray:
            return self._run("denoiser", "output", {"cond": cond, "sample": x, "timestep": np.array([t], np.float32)},
                             shape)

        x_T = self._rng.standard_normal(shape, dtype=np.float32)
        s = self.manifest.sampler
        if s.kind == "ddpm":
            y = samplers.sample_ddpm(step_fn, x_T, self._schedule, self._rng)
        elif s.kind == "ddim":
            y = samplers.sample_ddim(step_fn, x_T, self._schedule, steps=s.steps)
        else:
            y = samplers.sample_euler(step_fn, x_T, steps=s.steps)
        return ((y - self._offset) / self._scale).astype(np.float32)  # normalised -> raw, as the trainer's MinMax

    def _select(self, cands: np.ndarray, finite: np.ndarray) -> tuple[int, float | None]:
        if not finite.any():
            raise PlanError(f"all {len(cands)} candidates contain NaN or inf; no plan returned")
        use_tc = self.temporal_consistency and self._rest is not None and len(self._rest) > 0
        if not use_tc:
            return int(np.argmax(finite)), None  # candidate 0 unless it is bad
        start = now_row(self.obs_horizon)
        length = min(len(self._rest), self.pred_horizon - start)
        diff = (cands[:, start:start + length] - self._rest[None, :length]) * self._scale  # normalised units
        dist = np.sqrt(np.square(diff, dtype=np.float64).reshape(len(cands), -1).sum(axis=1))
        dist[~finite] = np.inf
        best = int(np.argmin(dist))
        return best, float(dist[best])

    def plan(self, obs_state: np.ndarray, obs_image: np.ndarray | None = None) -> np.ndarray:
        """Generate N candidates, select one, remember its unexecuted rest; the chunk [Tp, A] raw."""
        t0 = time.perf_counter()
        feeds = self._feeds(obs_state, obs_image)
        if self.tc_reset_after and self._plans_since_reset >= self.tc_reset_after:
            self._rest, self._plans_since_reset = None, 0  # periodic re-draw: lets the policy switch modes
        cands = self._generate(feeds)
        finite = np.isfinite(cands).reshape(len(cands), -1).all(axis=1)  # the NaN/inf guard
        idx, dist = self._select(cands, finite)
        chunk = np.array(cands[idx], dtype=np.float32)
        self._rest = rest_rows(chunk, self.obs_horizon, self.action_horizon).copy()  # act() runs Ta rows from now
        self._plans_since_reset += 1
        self.last_plan = chunk
        self.last_plan_info = {"latency_s": time.perf_counter() - t0, "selected": idx,
                               "candidates": len(cands), "distance": dist, "discarded": int((~finite).sum())}
        return chunk

    def act(self, obs_state: np.ndarray, obs_image: np.ndarray | None = None) -> np.ndarray:
        """Plan, then the Ta steps to execute now: chunk[To-1 : To-1+Ta] (index To-1 is the current time)."""
        return executed_rows(self.plan(obs_state, obs_image), self.obs_horizon, self.action_horizon).copy()
