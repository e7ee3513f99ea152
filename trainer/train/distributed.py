"""Multi-process training with PyTorch's own engine: torchrun + DistributedDataParallel.

``torchrun`` (or ``imle-train --nproc N``) starts one process per GPU (or per CPU share) and sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; :func:`init_distributed` reads them and
joins the process group: NCCL when the processes train on CUDA devices, gloo on CPU. Without those
variables the run is a single process and nothing here does anything.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# eval and checkpoints run on rank 0 while the others wait in their next all-reduce: be patient
TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, EMA, metrics, evaluation and progress."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def env_from_environment() -> DistEnv:
    """The process's place in the run, from torchrun's variables (a single process without them)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world or not 0 <= local_rank < max(1, local_world):
        raise ValueError(f"RANK {rank} / LOCAL_RANK {local_rank} do not fit WORLD_SIZE {world} / "
                         f"LOCAL_WORLD_SIZE {local_world}")
    return DistEnv(rank=rank, world=world, local_rank=local_rank, local_world=local_world)


def process_device(name: str, env: DistEnv) -> torch.device:
    """This process's device: with several processes, ``cuda`` means cuda:LOCAL_RANK."""
    cuda = torch.cuda.is_available()
    if name.startswith("cuda") and not cuda:
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    if name == "auto":
        name = "cuda" if cuda else "cpu"
    if name.startswith("cuda") and env.enabled:
        if ":" in name:
            raise ValueError(f"--device {name} names one GPU, but {env.world} processes share the run; "
                             "use --device cuda (each process takes cuda:LOCAL_RANK)")
        if env.local_rank >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {env.local_rank} has no GPU: this machine has "
                             f"{torch.cuda.device_count()}; start at most that many processes per node")
        name = f"cuda:{env.local_rank}"
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def init_distributed(env: DistEnv, device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU); a no-op for a single process."""
    if not env.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend=backend, timeout=TIMEOUT, **kwargs)


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj, env: DistEnv):
    """Rank 0's ``obj`` on every rank (a checkpoint read once, so nodes need no shared filesystem)."""
    if not env.enabled:
        return obj
    box = [obj if env.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_across(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Mean of a tensor over the processes (a copy; the input is left alone)."""
    if not env.enabled:
        return t.clone()
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / env.world


def any_across(flag: torch.Tensor, env: DistEnv) -> bool:
    """True when any process's flag is set (a host sync: call it at logging intervals only)."""
    out = flag.detach().to(torch.int32).clone()
    if env.enabled:
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return bool(out.item())


def reduce_logged(values: torch.Tensor, names: list[str], env: DistEnv) -> torch.Tensor:
    """Logged scalars over the global batch: the minimum across processes for ``*_min`` names, the mean
    otherwise (exact for per-datapoint means when every process holds the same number of datapoints)."""
    if not env.enabled:
        return values.detach().clone()
    is_min = torch.tensor([n.endswith("_min") for n in names], device=values.device)
    mean = mean_across(values, env)
    low = values.detach().clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return torch.where(is_min, low, mean)
