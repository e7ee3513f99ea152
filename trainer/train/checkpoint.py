"""Checkpoints: everything needed to resume training and to export a policy."""
from __future__ import annotations

import os
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


def load_checkpoint(path: str | os.PathLike) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "last.pt"
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{p} is not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "spec" not in state or "model" not in state:
        raise CheckpointError(f"{p} is not an imle-policy checkpoint")
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


def network_from_checkpoint(state: dict, use_ema: bool = True) -> PolicyNetwork:
    """Rebuild the network of a checkpoint (EMA weights by default, as the policy is deployed)."""
    spec = NetworkSpec.from_dict(state["spec"])
    net = build_network(spec, MinMax(**state["state_stats"]), MinMax(**state["action_stats"]))
    weights = state["ema"]["model"] if use_ema and state.get("ema") else state["model"]
    net.load_state_dict(weights)
    return net.eval()
