"""``imle-train --nproc N``: the same command on N processes of this machine, through torchrun's engine.

Equivalent to ``torchrun --standalone --nproc-per-node N -m trainer.cli <the other arguments>``, but
the exit code is rank 0's (2 bad input, 3 diverged, ...) rather than torchrun's 1 for any failure.
Several machines: run torchrun yourself with a c10d rendezvous (docs/training.md).
"""
from __future__ import annotations

import os
import sys
import uuid


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (the ranks must not launch again)."""
    out, skip = [], False
    for tok in argv:
        if skip:
            skip = False
        elif tok == "--nproc":
            skip = True
        elif not tok.startswith("--nproc="):
            out.append(tok)
    return out


def check_nproc(nproc: int) -> None:
    if nproc < 1:
        raise ValueError(f"--nproc must be a positive integer, got {nproc}")
    if os.environ.get("WORLD_SIZE") not in (None, ""):
        raise ValueError(f"--nproc {nproc} given inside a torchrun launch (WORLD_SIZE "
                         f"{os.environ['WORLD_SIZE']}); give one or the other")


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m trainer.cli argv`` on ``nproc`` local processes; rank 0's exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
    try:
        elastic_launch(config, sys.executable)("-m", "trainer.cli", *strip_nproc(argv))
    except ChildFailedError as exc:
        codes = {rank: f.exitcode for rank, f in exc.failures.items()}
        code = codes.get(0, next(iter(codes.values()), 1))
        return code if isinstance(code, int) and 0 < code < 256 else 1
    return 0
