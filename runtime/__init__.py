"""On-robot runtime: numpy + onnxruntime (+ firmware_bridge). Never imports torch.

``from runtime import Policy, load_package, PackageError, PlanError``. The names are loaded lazily so
that ``import runtime.samplers`` (which the trainer uses) does not pull in onnxruntime.
"""
from __future__ import annotations

_EXPORTS = {
    "Policy": "runtime.policy", "PlanError": "runtime.policy",
    "load_package": "runtime.package", "Package": "runtime.package", "PackageError": "runtime.package",
    "Manifest": "runtime.package",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
