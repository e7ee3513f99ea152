"""onnxruntime sessions tuned for a robot's small CPU.

Spinning is off: a spinning intra-op pool keeps cores busy between plans and steals them from the
control loop and the sensors. Inter-op parallelism is 1 (our graphs are a chain of convolutions).
"""
from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def session_options(threads: int = 1) -> ort.SessionOptions:
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3  # warnings about unused initialisers etc. are noise on a robot
    return so


# device -> onnxruntime execution providers, in preference order (the CPU provider runs what the
# accelerator's provider does not support)
DEVICES = {"cpu": ["CPUExecutionProvider"],
           "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],  # Jetson / desktop GPU: onnxruntime-gpu
           "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}


def providers_for(device: str) -> list[str]:
    """The providers for ``device``; ValueError naming what is missing when this onnxruntime lacks them."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    wanted = DEVICES[device]
    available = ort.get_available_providers()
    if wanted[0] not in available:
        raise ValueError(f"device {device!r} needs onnxruntime's {wanted[0]}, which this onnxruntime "
                         f"({ort.__version__}) does not have (available: {', '.join(available)}); "
                         "install onnxruntime-gpu (or NVIDIA's wheel on a Jetson), or use the CPU")
    return [p for p in wanted if p in available]


def make_session(path: str | Path, threads: int = 1, optimized_model_path: str | Path | None = None,
                 device: str = "cpu") -> ort.InferenceSession:
    """A session for ``path`` on ``device`` (cpu | cuda | tensorrt); ``optimized_model_path`` saves the
    optimised graph (to inspect fusions)."""
    providers = providers_for(device)
    so = session_options(threads)
    if optimized_model_path is not None:
        so.optimized_model_filepath = str(optimized_model_path)
    ort.set_default_logger_severity(3)
    return ort.InferenceSession(str(path), sess_options=so, providers=providers)
