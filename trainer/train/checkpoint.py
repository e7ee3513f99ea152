"""Checkpoints: everything needed to resume training and to export a policy."""
from __future__ import annotations

import math
import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from trainer.data.normalize import MinMax
from trainer.models.policy_net import NetworkSpec, PolicyNetwork, build_network


class CheckpointError(ValueError):
    """A user-facing problem with a checkpoint file."""


def save_checkpoint(path: Path, state: dict) -> None:
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written checkpoint


def _numpy_scalar_globals() -> list:
    """What pickling a numpy float or int needs (older checkpoints could hold one, e.g. a best score):
    safe to allow, they only rebuild a number from a dtype and its bytes."""
    import numpy as np

    if int(np.__version__.split(".")[0]) >= 2:
        from numpy._core.multiarray import scalar
    else:
        from numpy.core.multiarray import scalar
    return [scalar, np.dtype,
            *(type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_))]


# keys every checkpoint has, and what they must be (export and resume read them)
REQUIRED = {"spec": dict, "model": dict, "state_stats": dict, "action_stats": dict, "config": dict}


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``: tensors and plain containers, strings
    and numbers only. A pickle that would build any other object (and so could run code) is refused
    with one line, before anything in it is executed."""
    p = Path(path)
    if p.is_dir():
        p = p / "last.pt"
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if not p.is_file():
        raise CheckpointError(f"{p} is not a file")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols on stderr: our one line says it
            state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CheckpointError(f"{p} holds objects other than tensors and plain values ({found.group(1)}); "
                                  "refused without loading it "
                                  "(checkpoints are loaded with weights_only=True)") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        detail = " ".join(detail.group(1).split())[:120] if detail else "unpickling failed"
        raise CheckpointError(f"{p} is not a readable checkpoint ({detail}; loaded with weights_only=True, "
                              "nothing in it was run)") from None
    except Exception as exc:
        first = " ".join(str(exc).split())[:120]
        raise CheckpointError(f"{p} is not a readable checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(state, dict) or "spec" not in state or "model" not in state:
        raise CheckpointError(f"{p} is not an imle-policy checkpoint")
    for key, kind in REQUIRED.items():
        if not isinstance(state.get(key), kind):
            raise CheckpointError(f"{p}: checkpoint field '{key}' is {type(state.get(key)).__name__}, "
                                  f"expected {kind.__name__}")
    for part in ("model", "ema"):
        weights = state.get(part)
        if part == "ema":
            weights = weights.get("model") if isinstance(weights, dict) else None
        for name, t in (weights or {}).items():
            if not isinstance(t, torch.Tensor):
                raise CheckpointError(f"{p}: checkpoint field '{part}' entry '{name}' is not a tensor")
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise CheckpointError(f"{p}: checkpoint field '{part}' tensor '{name}' holds NaN or inf")
    state["path"] = str(p)
    return state


SLIM_NOTE = "model holds the EMA weights; optimiser dropped (not resumable)"


def slim_checkpoint(src: str | os.PathLike, dst: str | os.PathLike | None = None) -> dict:
    """Write a checkpoint that only exports: the EMA weights as ``model``, no optimiser or EMA state
    (about a third of the size: small enough to carry home from a GPU machine). In place by default."""
    state = load_checkpoint(src)
    path = Path(state.pop("path"))
    if not state.get("slim"):
        ema = state.pop("ema", None)
        if ema:
            state["model"] = ema["model"]
        for k in ("optimizer", "scheduler"):
            state.pop(k, None)
        state["slim"] = SLIM_NOTE
    save_checkpoint(Path(dst) if dst is not None else path, state)
    return state


MAX_SPEC_INT = 8192  # any width, dimension or horizon in a network spec (the paper U-Net's widest is 1024)


def _check_spec(spec: NetworkSpec, where: str) -> None:
    """Refuse a spec whose sizes would make building the network exhaust memory before any check."""
    sizes = {"state_dim": spec.state_dim, "action_dim": spec.action_dim, "obs_horizon": spec.obs_horizon,
             "pred_horizon": spec.pred_horizon,
             **{f"unet.down_dims[{i}]": d for i, d in enumerate(spec.unet.down_dims)}}
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SPEC_INT:
            raise CheckpointError(f"{where}: checkpoint field 'spec.{name}' is {value!r}; must be an integer in "
                                  f"1..{MAX_SPEC_INT}")
    if not 1 <= len(spec.unet.down_dims) <= 8:
        raise CheckpointError(f"{where}: checkpoint field 'spec.unet.down_dims' has {len(spec.unet.down_dims)} "
                              "levels; must be 1..8")


def network_from_checkpoint(state: dict, use_ema: bool = True) -> PolicyNetwork:
    """Rebuild the network of a checkpoint (EMA weights by default, as the policy is deployed).
    A spec, statistics or weights that do not fit together are a one-line CheckpointError."""
    where = state.get("path", "checkpoint")
    try:
        spec = NetworkSpec.from_dict(state["spec"])
        _check_spec(spec, where)
        for part, dim in (("state_stats", spec.state_dim), ("action_stats", spec.action_dim)):
            for end in ("min", "max"):
                values = state[part][end]
                if len(values) != dim or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                    raise CheckpointError(f"{where}: checkpoint field '{part}.{end}' must hold {dim} finite numbers "
                                          f"(spec), got {str(values)[:80]}")
        net = build_network(spec, MinMax(**state["state_stats"]), MinMax(**state["action_stats"]))
        weights = state["ema"]["model"] if use_ema and state.get("ema") else state["model"]
        net.load_state_dict(weights)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        text = " ".join(str(exc).split())
        raise CheckpointError(f"{where}: the checkpoint does not describe a network this code can build "
                              f"({type(exc).__name__}: {text[:160]})") from None
    return net.eval()
