"""Default recipes: the hyper-parameters ``imle-train --task NAME`` uses when no flag says otherwise.

A recipe is chosen by measurement on the project's reference CPU (2 cores; docs/benchmarks.md, "Policy
quality vs training budget") to fit about 30 minutes there; flags given on the command line override
each field. Tasks without a recipe (your own task files) get TrainConfig's generic defaults.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from trainer.objectives.rs_imle import RSIMLEConfig


@dataclass(frozen=True)
class Recipe:
    """The fields of a TrainConfig a task's default recipe sets (None = TrainConfig's default)."""
    net_preset: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    steps: int | None = None
    n_samples: int | None = None
    why: str = ""  # one line for --help and docs: what was measured

    def overrides(self) -> dict:
        out = {k: v for k, v in dataclasses.asdict(self).items()
               if v is not None and k not in ("n_samples", "why")}
        if self.n_samples is not None:
            out["rs_imle"] = RSIMLEConfig(n_samples=self.n_samples)
        return out


RECIPES: dict[str, Recipe] = {
    # Push-T state: training length, not network size, limits the policy (docs/benchmarks.md): the tiny
    # U-Net at lr 1e-3, batch 64, m = 10 for as many steps as ~30 min of 2 cores allow (~4.4 steps/s there).
    "pusht-state": Recipe(net_preset="tiny", lr=1e-3, batch_size=64, steps=7500, n_samples=10,
                          why="tiny U-Net, lr 1e-3, batch 64, m=10, 7500 steps: ~30 min on 2 CPU cores"),
    # the shipped franka-reach-around package's recipe (docs/franka.md): 94% success on franka-sim
    "franka-reach-around": Recipe(net_preset="tiny", batch_size=64, steps=3000,
                                  why="tiny U-Net, lr 1e-4, batch 64, m=20, 3000 steps: ~31 min on 1 CPU thread"),
}


def recipe_for(task_name: str) -> Recipe | None:
    return RECIPES.get(task_name)
