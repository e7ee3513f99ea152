"""Default recipes: a built-in task's measured hyper-parameters, each overridable by one flag."""
from __future__ import annotations

import pytest

from trainer.cli import build_parser, config_from_args
from trainer.train.recipes import RECIPES


def _cfg(*argv: str):
    return config_from_args(build_parser().parse_args(list(argv)))


def test_pusht_state_without_flags_trains_the_recipe():
    r = RECIPES["pusht-state"]
    cfg = _cfg("--task", "pusht-state")
    assert (cfg.net_preset, cfg.lr, cfg.batch_size, cfg.steps) == (r.net_preset, r.lr, r.batch_size, r.steps)
    assert cfg.rs_imle.n_samples == r.n_samples


def test_a_flag_overrides_one_field_and_keeps_the_rest():
    r = RECIPES["pusht-state"]
    cfg = _cfg("--task", "pusht-state", "--steps", "123", "--epsilon", "0.05")
    assert cfg.steps == 123 and cfg.rs_imle.epsilon == 0.05
    # --epsilon alone must not reset the recipe's m to RSIMLEConfig's generic default
    assert cfg.rs_imle.n_samples == r.n_samples and cfg.lr == r.lr and cfg.net_preset == r.net_preset


def test_a_task_file_without_a_recipe_gets_the_generic_defaults(tmp_path):
    from trainer.train.config import TrainConfig

    src = (pytest.importorskip("trainer.tasks").__path__[0] + "/pusht-state.toml")
    text = open(src).read().replace('name = "pusht-state"', 'name = "my-pusht"')
    task = tmp_path / "my.toml"
    task.write_text(text)
    cfg = _cfg("--task", str(task))
    generic = TrainConfig()
    assert (cfg.net_preset, cfg.lr, cfg.steps) == (generic.net_preset, generic.lr, generic.steps)
    assert cfg.batch_size == 128


def test_help_lists_every_recipe():
    text = build_parser().format_help()
    for name, r in RECIPES.items():
        assert f"{name}: {r.why}" in text


def test_recipes_build_valid_configs():
    from trainer.train.config import task_preset

    for name in RECIPES:
        cfg = task_preset(name)  # TrainConfig validates every field
        assert cfg.task == name
