"""What the graph exporters share: options, feeds, the fp32/int8 graph forms, the parity limit."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from runtime.package import TC_RESET_AFTER, ErrorStats, SamplerSpec
from trainer.export.observations import ObservationSet
from trainer.export.onnx_export import ExportError, GraphSpec, export_graph
from trainer.export.quantize import QuantConfig, quantize_int8
from trainer.export.rewrites import decoder_tail, for_onnxruntime
from trainer.models.policy_net import PolicyNetwork


@dataclass
class ExportOptions:
    quantize: str | None = None  # None (fp32 only) | "int8" (both files in the package)
    name: str | None = None  # default: the output directory's name
    candidates: int = 32  # default candidate count written to the manifest
    temporal_consistency: bool = True
    tc_reset_after: int = TC_RESET_AFTER  # plans between re-draws of the selection reference (0: never)
    sampler: SamplerSpec | None = None  # baselines; default DDPM-100 (diffusion), Euler-1 (flow matching)
    data_path: str | None = None  # override the checkpoint's dataset path (calibration and parity)
    parity_tolerance: float = 1e-4  # fp32 ONNX vs torch, as a fraction of the action range
    n_calibrate: int = 32  # observations for int8 calibration
    n_parity: int = 32  # held-out observations for the parity report
    parity_candidates: int = 8  # candidates per parity observation
    latent_jitter_std: float = 0.01  # rs_imle parity: the fp32 generator's response to z + 0.01 N(0, 1)
    calibration_candidates: int = 8  # latents per calibration observation (ranges need variety, not volume)
    quant: QuantConfig = field(default_factory=QuantConfig)
    # rewrite the graphs for onnxruntime (trainer/export/rewrites.py; same function, 2-3x faster),
    # or export the network's modules as they are (for comparison)
    rewrite: bool = True
    use_ema: bool = True
    seed: int = 0
    progress: bool = True


def obs_feeds(obs: ObservationSet, k: int) -> dict[str, np.ndarray]:
    f = {"obs_state": np.ascontiguousarray(obs.obs_state[k:k + 1], dtype=np.float32)}
    if obs.obs_image is not None:
        f["obs_image"] = np.ascontiguousarray(obs.obs_image[k:k + 1])
    return f


def example_chunks(n: int, tp: int, a: int, seed: int) -> torch.Tensor:
    """Seeded chunk-shaped inputs (latents / noisy samples) for tracing, from a private generator: the
    export never touches torch's global random stream (validation while training exports mid-run)."""
    return torch.randn(n, tp, a, generator=torch.Generator().manual_seed(seed))


def to_torch(feeds: dict[str, np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(v) for v in feeds.values()]


def bar(it, desc: str, progress: bool, total: int | None = None):
    return tqdm(it, desc=desc, total=total, disable=not progress, leave=False, dynamic_ncols=True)


def fp32_net(net: PolicyNetwork, opt: ExportOptions) -> PolicyNetwork:
    return for_onnxruntime(net, convs_as_matmul=True) if opt.rewrite else net


def layout(opt: ExportOptions, precision: str) -> str:
    if not opt.rewrite:
        return "plain"
    return "ort-rewrites, conv1d-as-matmul" if precision == "fp32" else "ort-rewrites, qlinearconv"


def quantize_from_conv_form(wrap, net: PolicyNetwork, example: tuple, gspec: GraphSpec, stage: Path,
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


def check_fp32(stats: ErrorStats, tolerance: float, what: str = "fp32 ONNX") -> None:
    if not stats.max_frac_of_range <= tolerance:
        raise ExportError(f"{what} differs from torch by {stats.max_frac_of_range:.2e} of the action range "
                          f"(max {stats.max_abs:.4g} units); the limit is {tolerance:.0e}")
