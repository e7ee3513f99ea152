"""Static int8 quantisation with onnxruntime, calibrated on real observations.

Format (measured; see docs/benchmarks.md): QDQ with unsigned 8-bit activations and signed 8-bit
per-channel weights. On x86 onnxruntime fuses u8s8 QDQ Conv/Gemm into QLinearConv / integer
kernels; signed activations can leave them unfused, and dynamic quantisation leaves ConvTranspose
in fp32 and re-quantises activations on every call (slower than fp32 here).
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np


@dataclass
class QuantConfig:
    fmt: str = "qdq"  # qdq | qoperator
    activations: str = "u8"  # u8 | s8
    per_channel: bool = True
    # FiLM Gemms run on one [1, C] condition per plan: no speed to gain, and quantising them
    # puts one scale error on every candidate, so they stay fp32
    op_types: tuple[str, ...] = ("Conv", "ConvTranspose")
    preprocess: bool = True  # shape inference + onnxruntime's basic graph optimisation first
    # keep the U-Net's last decoder level and output block in fp32 (as MatMuls, see exporter): on a
    # trained net this halved the int8 action error (mean 0.57% -> 0.32% of range) for ~6% of the FLOPs
    fp32_decoder_tail: bool = True
    exclude_output_conv: bool = True  # without the tail rule: the Conv that writes the actions stays fp32
    calibrate_method: str = "percentile"  # minmax | percentile | entropy; percentile clips rare outliers

    @property
    def label(self) -> str:
        tail = ", decoder tail fp32" if self.fp32_decoder_tail else ""
        return f"{self.fmt}-{self.activations}s8-{'per-channel' if self.per_channel else 'per-tensor'}{tail}"


class _Reader:
    """onnxruntime CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = feeds
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self._feeds)


def _last_conv(model_path: Path) -> list[str]:
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    out = m.graph.output[0].name
    producers = {o: n for n in m.graph.node for o in n.output}
    seen, stack = set(), [out]
    while stack:  # walk back from the output to the first Conv
        name = stack.pop()
        node = producers.get(name)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv":
            return [node.name]
        stack.extend(node.input)
    return []


def has_quantizable_ops(model_path: Path, config: QuantConfig | None = None) -> bool:
    """Whether the graph has any op that static quantisation would turn into int8 (a state encoder
    has none, and onnxruntime's histogram calibrators fail on such a graph)."""
    import onnx

    ops = set((config or QuantConfig()).op_types)
    return any(n.op_type in ops for n in onnx.load(str(model_path), load_external_data=False).graph.node)


def quantize_int8(fp32_path: Path, out_path: Path, feeds: Iterable[dict[str, np.ndarray]],
                  config: QuantConfig | None = None) -> Path:
    """Static int8 model of ``fp32_path`` calibrated on ``feeds`` (a list of input dicts)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    cfg = config or QuantConfig()
    feeds = list(feeds)
    logging.getLogger("root").setLevel(logging.ERROR)  # the quantiser logs every skipped node
    with tempfile.TemporaryDirectory(prefix="imle-quant-") as tmp:
        src = Path(fp32_path)
        if cfg.preprocess:
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            src = pre
        exclude = _last_conv(src) if cfg.exclude_output_conv else []
        method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy}[cfg.calibrate_method]
        act = QuantType.QUInt8 if cfg.activations == "u8" else QuantType.QInt8
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
            quantize_static(str(src), str(out_path), _Reader(feeds),
                            quant_format=QuantFormat.QDQ if cfg.fmt == "qdq" else QuantFormat.QOperator,
                            activation_type=act, weight_type=QuantType.QInt8, per_channel=cfg.per_channel,
                            op_types_to_quantize=list(cfg.op_types), nodes_to_exclude=exclude,
                            calibrate_method=method, extra_options={"ActivationSymmetric": False})
    return Path(out_path)


def optimized_op_counts(path: Path, threads: int = 1) -> Counter:
    """Op types of the graph after onnxruntime's optimisations (to see what got fused)."""
    import onnx

    from runtime.onnx_session import make_session

    with tempfile.TemporaryDirectory(prefix="imle-opt-") as tmp:
        opt = Path(tmp) / "opt.onnx"
        make_session(path, threads, optimized_model_path=opt)
        m = onnx.load(str(opt), load_external_data=False)
    return Counter(n.op_type for n in m.graph.node)
