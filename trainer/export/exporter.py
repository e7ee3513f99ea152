"""Checkpoint -> model package: ONNX graphs (fp32, optionally int8), parity report, manifest.

    from trainer.export import export_package
    export_package("runs/pusht-state/last.pt", "exported_models/pusht-state", quantize="int8")
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from runtime import samplers
from runtime.onnx_session import make_session
from runtime.package import (ActionSpec, ControlSpec, ErrorStats, Horizons, Manifest, MinMaxStats, Normalization,
                             ObsSpec, Parity, SamplerSpec, Training)
from trainer.export import tasks
from trainer.export.graphs import DenoiserGraph, EncoderGraph, GeneratorGraph
from trainer.export.rewrites import decoder_tail, for_onnxruntime
from trainer.export.observations import Calibration, ObservationSet, from_checkpoint_data, random_calibration
from trainer.export.onnx_export import ExportError, GraphSpec, check_counts, export_graph
from trainer.export.parity import error_stats
from trainer.export.quantize import QuantConfig, has_quantizable_ops, quantize_int8
from trainer.export.writer import code_version, file_entry, finish, staging_dir
from trainer.models.policy_net import NetworkSpec, PolicyNetwork

DEFAULT_SAMPLERS = {"diffusion": SamplerSpec("ddpm", 100, prediction="epsilon"),
                    "flow_matching": SamplerSpec("euler", 1, prediction="velocity")}


@dataclass
class ExportOptions:
    quantize: str | None = None  # None (fp32 only) | "int8" (both files in the package)
    name: str | None = None  # default: the output directory's name
    candidates: int = 32  # default candidate count written to the manifest
    temporal_consistency: bool = True
    sampler: SamplerSpec | None = None  # baselines; default DDPM-100 (diffusion), Euler-1 (flow matching)
    data_path: str | None = None  # override the checkpoint's dataset path (calibration and parity)
    parity_tolerance: float = 1e-4  # fp32 ONNX vs torch, as a fraction of the action range
    n_calibrate: int = 32  # observations for int8 calibration
    n_parity: int = 32  # held-out observations for the parity report
    parity_candidates: int = 8  # candidates per parity observation
    calibration_candidates: int = 8  # latents per calibration observation (ranges need variety, not volume)
    quant: QuantConfig = field(default_factory=QuantConfig)
    # rewrite the graphs for onnxruntime (trainer/export/rewrites.py; same function, 2-3x faster),
    # or export the network's modules as they are (for comparison)
    rewrite: bool = True
    use_ema: bool = True
    seed: int = 0
    progress: bool = True


def _load_state(checkpoint) -> dict:
    if isinstance(checkpoint, dict):
        return checkpoint
    from trainer.train.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)


def _network(state: dict, use_ema: bool) -> PolicyNetwork:
    from trainer.train.checkpoint import network_from_checkpoint

    return network_from_checkpoint(state, use_ema=use_ema)


def _obs_feeds(obs: ObservationSet, k: int) -> dict[str, np.ndarray]:
    f = {"obs_state": np.ascontiguousarray(obs.obs_state[k:k + 1], dtype=np.float32)}
    if obs.obs_image is not None:
        f["obs_image"] = np.ascontiguousarray(obs.obs_image[k:k + 1])
    return f


def _torch(feeds: dict[str, np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(v) for v in feeds.values()]


def _bar(it, desc: str, progress: bool, total: int | None = None):
    return tqdm(it, desc=desc, total=total, disable=not progress, leave=False, dynamic_ncols=True)


def _fp32_net(net: PolicyNetwork, opt: ExportOptions) -> PolicyNetwork:
    return for_onnxruntime(net, convs_as_matmul=True) if opt.rewrite else net


def _layout(opt: ExportOptions, precision: str) -> str:
    if not opt.rewrite:
        return "plain"
    return "ort-rewrites, conv1d-as-matmul" if precision == "fp32" else "ort-rewrites, qlinearconv"


def _quantize_from_conv_form(wrap, net: PolicyNetwork, example: tuple, gspec: GraphSpec, stage: Path,
                             fp32_name: str, out_name: str, feeds: list, opt: ExportOptions) -> None:
    """int8 from the graph with the U-Net's Conv1d kept as Conv: QLinearConv is onnxruntime's
    fastest int8 path (a quantised MatMul was slower)."""
    if not opt.rewrite:
        quantize_int8(stage / fp32_name, stage / out_name, feeds, opt.quant)
        return
    # the decoder tail kept in fp32 is exported as MatMuls (fast fp32), which are not quantised
    tail = opt.quant.fp32_decoder_tail
    qcfg = replace(opt.quant, exclude_output_conv=False) if tail else opt.quant  # the output conv is in the tail
    with tempfile.TemporaryDirectory(prefix="imle-export-") as tmp:
        conv = export_graph(wrap(for_onnxruntime(net, convs_as_matmul=decoder_tail(net) if tail else False)),
                            example, Path(tmp) / "conv.onnx", gspec)
        quantize_int8(conv, stage / out_name, feeds, qcfg)


# ---------------------------------------------------------------------------- rs_imle
def _export_generator(net: PolicyNetwork, stage: Path, calib: Calibration, opt: ExportOptions,
                      low: list[float], high: list[float]) -> tuple[list, Parity]:
    spec = net.spec
    graph = GeneratorGraph(net).eval()
    tp, a = spec.pred_horizon, spec.action_dim
    rng = np.random.default_rng(opt.seed)
    obs_names = ["obs_state"] + (["obs_image"] if spec.image_shape is not None else [])
    gspec = GraphSpec(obs_names + ["z"], ["actions"], {"z": {0: "N"}, "actions": {0: "N"}}, {"actions": ["N", tp, a]})
    example = (*_torch(_obs_feeds(calib.parity, 0)), torch.randn(3, tp, a))
    export_graph(GeneratorGraph(_fp32_net(net, opt)), example, stage / "generator.onnx", gspec)

    def feeds_at(n: int, k: int = 0, obs: ObservationSet = calib.parity) -> dict[str, np.ndarray]:
        return {**_obs_feeds(obs, k), "z": rng.standard_normal((n, tp, a), dtype=np.float32)}

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return graph(*_torch(feeds)).double().numpy()

    span = float(np.min(np.asarray(high) - np.asarray(low)))
    check_counts(stage / "generator.onnx", feeds_at, reference, tolerance=opt.parity_tolerance * span,
                 limit_text=f" raw units: {opt.parity_tolerance:.0e} of the action range")

    parity_feeds = [feeds_at(opt.parity_candidates, k) for k in range(len(calib.parity))]
    fp32 = make_session(stage / "generator.onnx", threads=1)
    ref = np.stack([reference(f) for f in _bar(parity_feeds, "parity torch", opt.progress)])
    out32 = np.stack([fp32.run(["actions"], f)[0] for f in _bar(parity_feeds, "parity fp32", opt.progress)])
    parity = Parity(source=calib.parity.source, observations=len(parity_feeds), candidates=opt.parity_candidates,
                    tolerance_frac_of_range=opt.parity_tolerance, fp32_vs_torch=error_stats(out32, ref, low, high))
    _check_fp32(parity.fp32_vs_torch, opt.parity_tolerance)
    files = [file_entry(stage, "generator.onnx", "fp32", "generator", layout=_layout(opt, "fp32"))]
    if opt.quantize == "int8":
        calib_feeds = [feeds_at(opt.calibration_candidates, k, calib.calibrate) for k in range(len(calib.calibrate))]
        _quantize_from_conv_form(GeneratorGraph, net, example, gspec, stage, "generator.onnx", "generator.int8.onnx",
                                 calib_feeds, opt)
        check_counts(stage / "generator.int8.onnx", feeds_at, None)
        int8 = make_session(stage / "generator.int8.onnx", threads=1)
        out8 = np.stack([int8.run(["actions"], f)[0] for f in _bar(parity_feeds, "parity int8", opt.progress)])
        parity.int8_vs_fp32 = error_stats(out8, out32, low, high)
        files.append(file_entry(stage, "generator.int8.onnx", "int8", "generator", opt.quant.label,
                                layout=_layout(opt, "int8")))
    return files, parity


# ---------------------------------------------------------------------------- baselines
def _export_baseline(net: PolicyNetwork, stage: Path, calib: Calibration, opt: ExportOptions, sampler: SamplerSpec,
                     low: list[float], high: list[float]) -> tuple[list, Parity, int]:
    spec = net.spec
    if not spec.unet.timestep_embed_dim:
        raise ExportError("this checkpoint's U-Net has no timestep embedding: not a diffusion/flow-matching model")
    tp, a = spec.pred_horizon, spec.action_dim
    rng = np.random.default_rng(opt.seed)
    enc, den = EncoderGraph(net).eval(), DenoiserGraph(net).eval()
    obs_names = ["obs_state"] + (["obs_image"] if spec.image_shape is not None else [])
    example = _obs_feeds(calib.parity, 0)
    export_graph(EncoderGraph(_fp32_net(net, opt)), tuple(_torch(example)), stage / "encoder.onnx",
                 GraphSpec(obs_names, ["cond"], {}))
    with torch.no_grad():
        cond0 = enc(*_torch(example))
    cond_dim = int(cond0.shape[1])
    den_example = (cond0, torch.randn(3, tp, a), torch.tensor([5.0]))
    den_spec = GraphSpec(["cond", "sample", "timestep"], ["output"], {"sample": {0: "N"}, "output": {0: "N"}},
                         {"output": ["N", tp, a]})
    export_graph(DenoiserGraph(_fp32_net(net, opt)), den_example, stage / "denoiser.onnx", den_spec)
    t_max = float(sampler.train_steps - 1) if sampler.kind in ("ddpm", "ddim") else 1.0

    def den_feeds(n: int) -> dict[str, np.ndarray]:
        return {"cond": cond0.numpy(), "sample": rng.standard_normal((n, tp, a), dtype=np.float32),
                "timestep": np.array([rng.uniform(0, t_max)], np.float32)}

    def den_ref(f: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return den(*_torch(f)).double().numpy()

    check_counts(stage / "denoiser.onnx", den_feeds, den_ref, tolerance=opt.parity_tolerance * 2.0,
                 limit_text=f" normalised units: {opt.parity_tolerance:.0e} of the action range")

    scale, offset = net.action_scale.numpy(), net.action_offset.numpy()
    schedule = samplers.ddpm_schedule(sampler.train_steps)

    def run_sampler(step_fn: Callable, x_T: np.ndarray, seed: int) -> np.ndarray:
        r = np.random.default_rng(seed)
        if sampler.kind == "ddpm":
            y = samplers.sample_ddpm(step_fn, x_T, schedule, r)
        elif sampler.kind == "ddim":
            y = samplers.sample_ddim(step_fn, x_T, schedule, steps=sampler.steps)
        else:
            y = samplers.sample_euler(step_fn, x_T, steps=sampler.steps)
        return (y - offset) / scale

    def ort_plan(enc_s, den_s, f: dict, x_T: np.ndarray, seed: int) -> np.ndarray:
        c = enc_s.run(["cond"], f)[0]
        step = lambda x, t: den_s.run(["output"], {"cond": c, "sample": x, "timestep": np.array([t], np.float32)})[0]
        return run_sampler(step, x_T, seed)

    def torch_plan(f: dict, x_T: np.ndarray, seed: int) -> np.ndarray:
        with torch.no_grad():
            c = enc(*_torch(f))
            step = lambda x, t: den(c, torch.from_numpy(x), torch.tensor([t], dtype=torch.float32)).numpy()
            return run_sampler(step, x_T, seed)

    # end-to-end through the sampler; DDPM-100 is 100 network calls per plan, so fewer observations
    k_obs = min(len(calib.parity), 4 if sampler.steps > 10 else 16)
    cases = [(_obs_feeds(calib.parity, k), rng.standard_normal((opt.parity_candidates, tp, a), dtype=np.float32), k)
             for k in range(k_obs)]
    enc32, den32 = make_session(stage / "encoder.onnx"), make_session(stage / "denoiser.onnx")
    ref = np.stack([torch_plan(f, x, s) for f, x, s in _bar(cases, "parity torch", opt.progress)])
    out32 = np.stack([ort_plan(enc32, den32, f, x, s) for f, x, s in _bar(cases, "parity fp32", opt.progress)])
    # the limit applies to one network step (encoder + denoiser, normalised units over the range
    # of 2): an iterative sampler compounds float rounding, so its end-to-end error is reported only
    steps = []
    for f, x, _ in cases:
        t = np.array([rng.uniform(0, t_max)], np.float32)
        got = den32.run(["output"], {"cond": enc32.run(["cond"], f)[0], "sample": x, "timestep": t})[0]
        with torch.no_grad():
            want = den(enc(*_torch(f)), torch.from_numpy(x), torch.from_numpy(t)).numpy()
        steps.append((got, want))
    step_stats = error_stats(np.stack([g for g, _ in steps]), np.stack([w for _, w in steps]), [-1.0] * a, [1.0] * a)
    parity = Parity(source=calib.parity.source + f"; end to end through {sampler.kind}-{sampler.steps}",
                    observations=k_obs, candidates=opt.parity_candidates, tolerance_frac_of_range=opt.parity_tolerance,
                    fp32_vs_torch=error_stats(out32, ref, low, high), fp32_step_vs_torch=step_stats)
    _check_fp32(step_stats, opt.parity_tolerance, "one denoiser step of fp32 ONNX")
    files = [file_entry(stage, "encoder.onnx", "fp32", "encoder"),
             file_entry(stage, "denoiser.onnx", "fp32", "denoiser", layout=_layout(opt, "fp32"))]
    if opt.quantize == "int8":
        enc_calib = [_obs_feeds(calib.calibrate, k) for k in range(len(calib.calibrate))]
        enc_int8 = has_quantizable_ops(stage / "encoder.onnx", opt.quant)  # an image encoder; a state one has no conv
        if enc_int8:
            quantize_int8(stage / "encoder.onnx", stage / "encoder.int8.onnx", enc_calib, opt.quant)
        den_calib = []
        for f in enc_calib:  # samples along the sampler's path: noise at t_max down to data-like values at 0
            t = float(rng.uniform(0, t_max))
            noise_level = t / t_max if t_max else 1.0
            x = rng.standard_normal((opt.calibration_candidates, tp, a)).astype(np.float32) * max(noise_level, 0.3)
            den_calib.append({"cond": enc32.run(["cond"], f)[0], "sample": x, "timestep": np.array([t], np.float32)})
        _quantize_from_conv_form(DenoiserGraph, net, den_example, den_spec, stage, "denoiser.onnx", "denoiser.int8.onnx",
                                 den_calib, opt)
        check_counts(stage / "denoiser.int8.onnx", den_feeds, None)
        enc8 = make_session(stage / ("encoder.int8.onnx" if enc_int8 else "encoder.onnx"))
        den8 = make_session(stage / "denoiser.int8.onnx")
        out8 = np.stack([ort_plan(enc8, den8, f, x, s) for f, x, s in _bar(cases, "parity int8", opt.progress)])
        parity.int8_vs_fp32 = error_stats(out8, out32, low, high)
        if enc_int8:
            files.append(file_entry(stage, "encoder.int8.onnx", "int8", "encoder", opt.quant.label))
        files.append(file_entry(stage, "denoiser.int8.onnx", "int8", "denoiser", opt.quant.label,
                                layout=_layout(opt, "int8")))
    return files, parity, cond_dim


def _check_fp32(stats: ErrorStats, tolerance: float, what: str = "fp32 ONNX") -> None:
    if not stats.max_frac_of_range <= tolerance:
        raise ExportError(f"{what} differs from torch by {stats.max_frac_of_range:.2e} of the action range "
                          f"(max {stats.max_abs:.4g} units); the limit is {tolerance:.0e}")


# ---------------------------------------------------------------------------- entry point
def export_package(checkpoint: str | Path | dict, out_dir: str | Path, quantize: str | None = None,
                   calibration: Calibration | str | None = None, options: ExportOptions | None = None,
                   **overrides) -> Path:
    """Export a checkpoint (path or the dict of ``load_checkpoint``) as a model package in ``out_dir``.

    ``calibration``: None = observations of the checkpoint's dataset (training episodes calibrate,
    held-out ones measure parity); "random" = uniform observations in the data range (for randomly
    initialised networks); or a :class:`Calibration`. ``overrides`` set fields of ExportOptions.
    Raises ExportError (or DatasetError / CheckpointError) with a one-line message.
    """
    opt = options or ExportOptions()
    for k, v in overrides.items():
        if not hasattr(opt, k):
            raise TypeError(f"export_package() got an unknown option {k!r}")
        setattr(opt, k, v)
    if quantize is not None:
        opt.quantize = quantize
    if opt.quantize not in (None, "int8"):
        raise ExportError(f"unknown quantisation {opt.quantize!r}: the only format is int8")
    out_dir = Path(out_dir)
    state = _load_state(checkpoint)
    method = state.get("method", "rs_imle")
    if method not in ("rs_imle", "diffusion", "flow_matching"):
        raise ExportError(f"checkpoint method {method!r} is not exportable")
    net = _network(state, opt.use_ema)
    spec: NetworkSpec = net.spec
    config = state.get("config", {})
    task = config.get("task", "unknown")
    data_cfg = config.get("data", {})
    if calibration is None:
        calibration = from_checkpoint_data(state, opt.data_path, opt.n_calibrate, opt.n_parity, opt.seed)
    elif calibration == "random":
        st = state["state_stats"]
        calibration = random_calibration(spec, st["min"], st["max"], min(opt.n_calibrate, 16),
                                         min(opt.n_parity, 16), opt.seed)
    elif not isinstance(calibration, Calibration):
        raise ExportError("calibration must be None, 'random' or a Calibration")
    low, high = list(state["action_stats"]["min"]), list(state["action_stats"]["max"])

    torch.manual_seed(opt.seed)
    stage = staging_dir(out_dir)
    try:
        sampler, cond_dim = None, None
        if method == "rs_imle":
            files, parity = _export_generator(net, stage, calibration, opt, low, high)
        else:
            sampler = opt.sampler or DEFAULT_SAMPLERS[method]
            files, parity, cond_dim = _export_baseline(net, stage, calibration, opt, sampler, low, high)
        manifest = Manifest(
            name=opt.name or out_dir.name, method=method, task=task,
            obs=ObsSpec(state_dim=spec.state_dim,
                        state_names=tasks.state_names(task, tuple(data_cfg.get("state_dims", range(spec.state_dim)))),
                        image_shape=list(spec.image_shape) if spec.image_shape else None,
                        channel_order=tasks.channel_order(task) if spec.image_shape else None,
                        image_dtype="uint8" if spec.image_shape else None),
            action=ActionSpec(dim=spec.action_dim, names=tasks.action_names(task, spec.action_dim), low=low, high=high),
            horizons=Horizons(obs=spec.obs_horizon, pred=spec.pred_horizon,
                              action=int(data_cfg.get("action_horizon", 8))),
            control=ControlSpec(period_s=tasks.period_s(task),
                                candidates=opt.candidates if method == "rs_imle" else 1,
                                temporal_consistency=opt.temporal_consistency),
            latent_shape=[spec.pred_horizon, spec.action_dim],
            normalization=Normalization(state=MinMaxStats(**state["state_stats"]),
                                        action=MinMaxStats(**state["action_stats"])),
            files=files,
            training=Training(dataset=str(data_cfg.get("path", "")), episodes=list(state.get("episodes", [])),
                              steps=int(state.get("step", 0)), config=config, code_version=code_version(),
                              command=str(state.get("command", ""))),
            parity=parity, sampler=sampler, cond_dim=cond_dim)
        if len(manifest.obs.state_names) != spec.state_dim:  # config and spec disagree: fall back to generic names
            manifest.obs.state_names = [f"state_{i}" for i in range(spec.state_dim)]
        return finish(stage, out_dir, manifest)
    except BaseException:
        import shutil

        shutil.rmtree(stage, ignore_errors=True)
        raise
