"""Baseline packages (diffusion, flow matching): an encoder graph and a denoiser graph; the runtime
runs the numpy sampler over the denoiser, so every method is timed through the same runtime."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from runtime import samplers
from runtime.onnx_session import make_session
from runtime.package import Parity, SamplerSpec
from trainer.export.common import (ExportOptions, bar, check_fp32, example_chunks, fp32_net, layout, obs_feeds,
                                   quantize_from_conv_form, to_torch)
from trainer.export.graphs import DenoiserGraph, EncoderGraph
from trainer.export.observations import Calibration
from trainer.export.onnx_export import ExportError, GraphSpec, check_counts, export_graph
from trainer.export.parity import error_stats
from trainer.export.quantize import has_quantizable_ops, quantize_int8
from trainer.export.writer import file_entry
from trainer.models.policy_net import PolicyNetwork

DEFAULT_SAMPLERS = {"diffusion": SamplerSpec("ddpm", 100, prediction="epsilon"),
                    "flow_matching": SamplerSpec("euler", 1, prediction="velocity")}


def export_baseline(net: PolicyNetwork, stage: Path, calib: Calibration, opt: ExportOptions, sampler: SamplerSpec,
                     low: list[float], high: list[float]) -> tuple[list, Parity, int]:
    spec = net.spec
    if not spec.unet.timestep_embed_dim:
        raise ExportError("this checkpoint's U-Net has no timestep embedding: not a diffusion/flow-matching model")
    tp, a = spec.pred_horizon, spec.action_dim
    rng = np.random.default_rng(opt.seed)
    enc, den = EncoderGraph(net).eval(), DenoiserGraph(net).eval()
    obs_names = ["obs_state"] + (["obs_image"] if spec.image_shape is not None else [])
    example = obs_feeds(calib.parity, 0)
    export_graph(EncoderGraph(fp32_net(net, opt)), tuple(to_torch(example)), stage / "encoder.onnx",
                 GraphSpec(obs_names, ["cond"], {}))
    with torch.no_grad():
        cond0 = enc(*to_torch(example))
    cond_dim = int(cond0.shape[1])
    den_example = (cond0, example_chunks(3, tp, a, opt.seed), torch.tensor([5.0]))
    den_spec = GraphSpec(["cond", "sample", "timestep"], ["output"], {"sample": {0: "N"}, "output": {0: "N"}},
                         {"output": ["N", tp, a]})
    export_graph(DenoiserGraph(fp32_net(net, opt)), den_example, stage / "denoiser.onnx", den_spec)
    t_max = float(sampler.train_steps - 1) if sampler.kind in ("ddpm", "ddim") else 1.0

    def den_feeds(n: int) -> dict[str, np.ndarray]:
        return {"cond": cond0.numpy(), "sample": rng.standard_normal((n, tp, a), dtype=np.float32),
                "timestep": np.array([rng.uniform(0, t_max)], np.float32)}

    def den_ref(f: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return den(*to_torch(f)).double().numpy()

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
            c = enc(*to_torch(f))
            step = lambda x, t: den(c, torch.from_numpy(x), torch.tensor([t], dtype=torch.float32)).numpy()
            return run_sampler(step, x_T, seed)

    # end-to-end through the sampler; DDPM-100 is 100 network calls per plan, so fewer observations
    k_obs = min(len(calib.parity), 4 if sampler.steps > 10 else 16)
    cases = [(obs_feeds(calib.parity, k), rng.standard_normal((opt.parity_candidates, tp, a), dtype=np.float32), k)
             for k in range(k_obs)]
    enc32, den32 = make_session(stage / "encoder.onnx"), make_session(stage / "denoiser.onnx")
    ref = np.stack([torch_plan(f, x, s) for f, x, s in bar(cases, "parity torch", opt.progress)])
    out32 = np.stack([ort_plan(enc32, den32, f, x, s) for f, x, s in bar(cases, "parity fp32", opt.progress)])
    # the limit applies to one network step (encoder + denoiser, normalised units over the range
    # of 2): an iterative sampler compounds float rounding, so its end-to-end error is reported only
    steps = []
    for f, x, _ in cases:
        t = np.array([rng.uniform(0, t_max)], np.float32)
        got = den32.run(["output"], {"cond": enc32.run(["cond"], f)[0], "sample": x, "timestep": t})[0]
        with torch.no_grad():
            want = den(enc(*to_torch(f)), torch.from_numpy(x), torch.from_numpy(t)).numpy()
        steps.append((got, want))
    step_stats = error_stats(np.stack([g for g, _ in steps]), np.stack([w for _, w in steps]), [-1.0] * a, [1.0] * a)
    parity = Parity(source=calib.parity.source + f"; end to end through {sampler.kind}-{sampler.steps}",
                    observations=k_obs, candidates=opt.parity_candidates, tolerance_frac_of_range=opt.parity_tolerance,
                    fp32_vs_torch=error_stats(out32, ref, low, high), fp32_step_vs_torch=step_stats)
    check_fp32(step_stats, opt.parity_tolerance, "one denoiser step of fp32 ONNX")
    files = [file_entry(stage, "encoder.onnx", "fp32", "encoder"),
             file_entry(stage, "denoiser.onnx", "fp32", "denoiser", layout=layout(opt, "fp32"))]
    if opt.quantize == "int8":
        enc_calib = [obs_feeds(calib.calibrate, k) for k in range(len(calib.calibrate))]
        enc_int8 = has_quantizable_ops(stage / "encoder.onnx", opt.quant)  # an image encoder; a state one has no conv
        if enc_int8:
            quantize_int8(stage / "encoder.onnx", stage / "encoder.int8.onnx", enc_calib, opt.quant)
        den_calib = []
        for f in enc_calib:  # samples along the sampler's path: noise at t_max down to data-like values at 0
            t = float(rng.uniform(0, t_max))
            noise_level = t / t_max if t_max else 1.0
            x = rng.standard_normal((opt.calibration_candidates, tp, a)).astype(np.float32) * max(noise_level, 0.3)
            den_calib.append({"cond": enc32.run(["cond"], f)[0], "sample": x, "timestep": np.array([t], np.float32)})
        quantize_from_conv_form(DenoiserGraph, net, den_example, den_spec, stage, "denoiser.onnx", "denoiser.int8.onnx",
                                 den_calib, opt)
        check_counts(stage / "denoiser.int8.onnx", den_feeds, None)
        enc8 = make_session(stage / ("encoder.int8.onnx" if enc_int8 else "encoder.onnx"))
        den8 = make_session(stage / "denoiser.int8.onnx")
        out8 = np.stack([ort_plan(enc8, den8, f, x, s) for f, x, s in bar(cases, "parity int8", opt.progress)])
        parity.int8_vs_fp32 = error_stats(out8, out32, low, high)
        if enc_int8:
            files.append(file_entry(stage, "encoder.int8.onnx", "int8", "encoder", opt.quant.label))
        files.append(file_entry(stage, "denoiser.int8.onnx", "int8", "denoiser", opt.quant.label,
                                layout=layout(opt, "int8")))
    return files, parity, cond_dim
