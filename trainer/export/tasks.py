"""The task of a checkpoint, for its package's manifest.

Checkpoints trained from a task file carry the task (``config.task_spec``). Older ones carry only the
task's name and the observed columns: a built-in task whose observed columns and angles agree is
used with the checkpoint's horizons; otherwise the task is derived from what the checkpoint knows
(generic ``state_<i>`` / ``action_<i>`` names, no success signal), never guessed.
"""
from __future__ import annotations

import dataclasses

from runtime.task_spec import StateObs, TaskAction, TaskHorizons, TaskSpec, TaskSpecError
from trainer.tasks import builtin_names, builtin_path

LEGACY_PERIOD_S = 0.1  # what every package was exported with before tasks were files


def task_from_checkpoint(state: dict, state_dim: int, action_dim: int, obs_horizon: int, pred_horizon: int,
                         image_shape: tuple[int, int, int] | None) -> TaskSpec:
    """The TaskSpec to write into the manifest of ``state`` (a load_checkpoint dict)."""
    config = state.get("config", {}) or {}
    if config.get("task_spec") is not None:
        return TaskSpec.from_dict(config["task_spec"])
    data = config.get("data", {}) or {}
    dims = tuple(int(i) for i in data.get("state_dims", range(state_dim)))
    angles = tuple(int(i) for i in config.get("angle_dims", ()))
    action_horizon = int(data.get("action_horizon", 8))
    name = str(config.get("task", "unknown"))
    if name in builtin_names():
        spec = TaskSpec.from_toml(builtin_path(name))
        if (spec.state.columns == dims and spec.state.angle_dims == angles and len(spec.action.names) == action_dim
                and bool(spec.images) == (image_shape is not None)):
            # the columns are the built-in task's; horizons are the checkpoint's own (they could be set apart)
            return dataclasses.replace(spec, horizons=TaskHorizons(obs_horizon, pred_horizon, action_horizon))
    n_cols = max(dims) + 1 if dims else state_dim
    names = tuple(f"state_{i}" for i in range(n_cols))
    use = tuple(names[i] for i in dims)
    images = ()
    if image_shape is not None:
        from runtime.task_spec import ImageObs

        c, h, w = image_shape
        images = (ImageObs(str(data.get("image_key", "img")), (h, w, c), "camera"),)
    try:
        return TaskSpec(name=_safe_name(name), period_s=LEGACY_PERIOD_S,
                        horizons=TaskHorizons(obs_horizon, pred_horizon, action_horizon),
                        state=StateObs(str(data.get("state_key", "state")), names, use,
                                       tuple(use[i] for i in angles if 0 <= i < len(use))),
                        action=TaskAction(str(data.get("action_key", "action")),
                                          tuple(f"action_{i}" for i in range(action_dim))),
                        images=images, success=None)
    except TaskSpecError as exc:
        raise TaskSpecError(f"the checkpoint has no task_spec and none can be derived from its config ({exc})") \
            from None


def _safe_name(name: str) -> str:
    from runtime.task_spec import _NAME

    return name if _NAME.fullmatch(name) and len(name) <= 256 else "unknown"

