"""rs_imle packages: one generator graph (raw observations + z -> raw actions), fp32 and int8."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from runtime.onnx_session import make_session
from runtime.package import Parity
from trainer.export.common import (ExportOptions, bar, check_fp32, example_chunks, fp32_net, layout, obs_feeds,
                                   quantize_from_conv_form, to_torch)
from trainer.export.encoder_once import encoder_convs_on_z
from trainer.export.graphs import GeneratorGraph
from trainer.export.observations import Calibration, ObservationSet
from trainer.export.onnx_export import ExportError, GraphSpec, check_counts, export_graph
from trainer.export.parity import error_stats
from trainer.export.writer import file_entry
from trainer.models.policy_net import PolicyNetwork


def check_encoder_once(path: Path) -> None:
    """ExportError when an image-encoder node of the graph at ``path`` depends on the latents: the encoder
    would run once per candidate instead of once per plan."""
    n, on_z = encoder_convs_on_z(path)
    if on_z:
        raise ExportError(f"{path.name}: {len(on_z)} of {n} image-encoder convolutions depend on z (first: "
                          f"{on_z[0]}); the encoder must run once per plan, on the [1, To] observation")


def export_generator(net: PolicyNetwork, stage: Path, calib: Calibration, opt: ExportOptions,
                     low: list[float], high: list[float]) -> tuple[list, Parity]:
    spec = net.spec
    graph = GeneratorGraph(net).eval()
    tp, a = spec.pred_horizon, spec.action_dim
    rng = np.random.default_rng(opt.seed)
    obs_names = ["obs_state"] + (["obs_image"] if spec.image_shape is not None else [])
    gspec = GraphSpec(obs_names + ["z"], ["actions"], {"z": {0: "N"}, "actions": {0: "N"}}, {"actions": ["N", tp, a]})
    example = (*to_torch(obs_feeds(calib.parity, 0)), example_chunks(3, tp, a, opt.seed))
    export_graph(GeneratorGraph(fp32_net(net, opt)), example, stage / "generator.onnx", gspec)
    if spec.image_shape is not None:
        check_encoder_once(stage / "generator.onnx")

    def feeds_at(n: int, k: int = 0, obs: ObservationSet = calib.parity) -> dict[str, np.ndarray]:
        return {**obs_feeds(obs, k), "z": rng.standard_normal((n, tp, a), dtype=np.float32)}

    def reference(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return graph(*to_torch(feeds)).double().numpy()

    span = float(np.min(np.asarray(high) - np.asarray(low)))
    check_counts(stage / "generator.onnx", feeds_at, reference, tolerance=opt.parity_tolerance * span,
                 limit_text=f" raw units: {opt.parity_tolerance:.0e} of the action range")

    parity_feeds = [feeds_at(opt.parity_candidates, k) for k in range(len(calib.parity))]
    fp32 = make_session(stage / "generator.onnx", threads=1)
    ref = np.stack([reference(f) for f in bar(parity_feeds, "parity torch", opt.progress)])
    out32 = np.stack([fp32.run(["actions"], f)[0] for f in bar(parity_feeds, "parity fp32", opt.progress)])
    parity = Parity(source=calib.parity.source, observations=len(parity_feeds), candidates=opt.parity_candidates,
                    tolerance_frac_of_range=opt.parity_tolerance, fp32_vs_torch=error_stats(out32, ref, low, high))
    check_fp32(parity.fp32_vs_torch, opt.parity_tolerance)
    if opt.latent_jitter_std > 0:
        jittered = [{**f, "z": f["z"] + opt.latent_jitter_std * rng.standard_normal(f["z"].shape, dtype=np.float32)}
                    for f in parity_feeds]
        out_j = np.stack([fp32.run(["actions"], f)[0] for f in jittered])
        parity.fp32_latent_jitter = error_stats(out_j, out32, low, high)
        parity.latent_jitter_std = opt.latent_jitter_std
    files = [file_entry(stage, "generator.onnx", "fp32", "generator", layout=layout(opt, "fp32"))]
    if opt.quantize == "int8":
        calib_feeds = [feeds_at(opt.calibration_candidates, k, calib.calibrate) for k in range(len(calib.calibrate))]
        quantize_from_conv_form(GeneratorGraph, net, example, gspec, stage, "generator.onnx", "generator.int8.onnx",
                                 calib_feeds, opt)
        check_counts(stage / "generator.int8.onnx", feeds_at, None)
        if spec.image_shape is not None:
            check_encoder_once(stage / "generator.int8.onnx")
        int8 = make_session(stage / "generator.int8.onnx", threads=1)
        out8 = np.stack([int8.run(["actions"], f)[0] for f in bar(parity_feeds, "parity int8", opt.progress)])
        parity.int8_vs_fp32 = error_stats(out8, out32, low, high)
        files.append(file_entry(stage, "generator.int8.onnx", "int8", "generator", opt.quant.label,
                                layout=layout(opt, "int8")))
    return files, parity
