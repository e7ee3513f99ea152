"""torch -> ONNX with the legacy exporter (opset 17) and a check that the candidate count stays dynamic."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

OPSET = 17
CHECK_COUNTS = (1, 7, 32)  # a frozen candidate count shows up as a Reshape failing at some N


class ExportError(RuntimeError):
    """Export could not produce a package that meets the contract (one-line message)."""


@dataclass
class GraphSpec:
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    # declared output shapes (int = fixed, str = dynamic): the exporter's shape inference can leave
    # a fixed axis symbolic (e.g. after slicing), which the runtime's signature check would refuse
    output_shapes: dict[str, list[int | str]] | None = None


def export_graph(module: nn.Module, example: tuple[torch.Tensor, ...], path: Path, spec: GraphSpec) -> Path:
    """Export ``module`` in eval mode to ``path`` (legacy TorchScript exporter, constant folding on)."""
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(module, example, str(path), input_names=spec.input_names, output_names=spec.output_names,
                          dynamic_axes=spec.dynamic_axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
    if spec.output_shapes:
        _declare_output_shapes(Path(path), spec.output_shapes)
    return Path(path)


def _declare_output_shapes(path: Path, shapes: dict[str, list[int | str]]) -> None:
    import onnx

    model = onnx.load(str(path))
    for out in model.graph.output:
        if out.name in shapes:
            dims = out.type.tensor_type.shape.dim
            del dims[:]
            for d in shapes[out.name]:
                dim = dims.add()
                if isinstance(d, int):
                    dim.dim_value = d
                else:
                    dim.dim_param = d
    onnx.save(model, str(path))


def check_counts(path: Path, feeds_at: Callable[[int], dict[str, np.ndarray]],
                 reference_at: Callable[[dict[str, np.ndarray]], np.ndarray] | None,
                 counts: tuple[int, ...] = CHECK_COUNTS, tolerance: float | None = None,
                 limit_text: str = "") -> dict[int, float]:
    """Run the graph at each candidate count; with a reference, return the max abs error per count.

    Raises ExportError if the graph fails at some count, returns the wrong shape, or (with a
    tolerance) differs from the reference by more than ``tolerance``.
    """
    from runtime.onnx_session import make_session

    sess = make_session(path, threads=1)
    out_name = sess.get_outputs()[0].name
    errors: dict[int, float] = {}
    for n in counts:
        feeds = feeds_at(n)
        try:
            got = sess.run([out_name], feeds)[0]
        except Exception as exc:  # onnxruntime raises its own exception types
            msg = str(exc).splitlines()[0][:200]
            raise ExportError(f"{path.name} fails with {n} candidates ({msg}): "
                              "the candidate count is not dynamic") from None
        want = next(v.shape for k, v in feeds.items() if k in ("z", "sample"))
        if got.shape != want:
            raise ExportError(f"{path.name} returned shape {got.shape} for candidates of shape {want}")
        if reference_at is not None:
            ref = reference_at(feeds)
            errors[n] = float(np.max(np.abs(got.astype(np.float64) - ref)))
            if tolerance is not None and not errors[n] <= tolerance:
                raise ExportError(f"{path.name} differs from torch by {errors[n]:.3g} at {n} candidates "
                                  f"(limit {tolerance:.3g}{limit_text})")
    return errors
