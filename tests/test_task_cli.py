"""imle-task init / check / list / show, and imle-train refusing a task that does not match its data."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.task_spec import TaskSpec
from tests.arm7_fixtures import make_arm7_buffer, name_arm7_task
from tests.conftest import make_tiny_buffer
from trainer.task_cli import main as task_main


def one_line(text: str) -> str:
    assert "\n" not in text.strip() and "Traceback" not in text, text
    return text.strip()


@pytest.fixture
def arm7(tmp_path):
    path = tmp_path / "arm7.zarr"
    data, _ = make_arm7_buffer(path)
    return path, data


def test_init_writes_a_valid_starter_with_generic_names_ranges_and_hints(arm7, tmp_path, capsys):
    path, data = arm7
    out = tmp_path / "arm7.toml"
    assert task_main(["init", str(path), "--out", str(out)]) == 0
    text = out.read_text()
    spec = TaskSpec.from_toml(out)
    assert spec.name == "arm7" and spec.state.names == tuple(f"state_{i}" for i in range(7))
    assert spec.action.names == tuple(f"action_{i}" for i in range(7)) and spec.action.joints == spec.action.names
    assert np.allclose(spec.action.low, data["action"].min(0)) and np.allclose(spec.action.high, data["action"].max(0))
    assert spec.state.angles == () and "may be angles: state_6" in text  # the wrap joint is pointed out, not guessed
    assert "CHECK AND EDIT" in text and "name every column" in text
    # no silent overwrite
    assert task_main(["init", str(path), "--out", str(out)]) == 2
    assert "exists" in one_line(capsys.readouterr().err)
    named = TaskSpec.from_dict(TaskSpec.from_toml(out).to_dict())
    assert named == spec


def test_init_of_a_pusht_buffer_with_images(tmp_path, capsys):
    path = tmp_path / "p.zarr"
    make_tiny_buffer(path, n_episodes=2, with_image=True, lengths=[12, 10])
    assert task_main(["init", str(path)]) == 0
    text = capsys.readouterr().out
    import tomllib

    spec = TaskSpec.from_dict(tomllib.loads(text))
    assert spec.images[0].key == "img" and spec.images[0].shape == (96, 96, 3)
    assert len(spec.state.names) == 5 and len(spec.action.names) == 2


def test_check_accepts_a_matching_task_and_names_both_values_otherwise(arm7, tmp_path, capsys):
    path, _ = arm7
    out = tmp_path / "arm7.toml"
    assert task_main(["init", str(path), "--out", str(out)]) == 0
    out.write_text(name_arm7_task(out.read_text()))
    capsys.readouterr()
    assert task_main(["check", str(out), str(path)]) == 0
    text = capsys.readouterr().out
    assert "observes 7 of 7 columns" in text and "angles: joint7" in text and "target_joint7->joint7" in text
    assert task_main(["check", "pusht-state", str(path)]) == 2
    assert one_line(capsys.readouterr().err) == ("imle-task: error: task pusht-state: observation.state.names has 5 "
                                                 "names but data/state in arm7.zarr has 7 columns")
    bad = tmp_path / "bad.toml"
    bad.write_text(out.read_text().replace('key = "action"', 'key = "act"'))
    assert task_main(["check", str(bad), str(path)]) == 2
    assert one_line(capsys.readouterr().err) == ("imle-task: error: task arm7: action.key is 'act' but arm7.zarr has "
                                                 "no data/act (it has: action, state)")


def test_check_image_shape_and_column_count_mismatches(tmp_path, capsys):
    path = tmp_path / "p.zarr"
    make_tiny_buffer(path, n_episodes=2, with_image=True, lengths=[12, 10])
    assert task_main(["check", "pusht-image", str(path)]) == 0
    spec = TaskSpec.from_toml(__import__("trainer.tasks", fromlist=["x"]).builtin_path("pusht-image")).to_dict()
    spec["observation"]["images"][0]["shape"] = [84, 84, 3]
    spec["action"]["names"] = ["a", "b", "c"]
    spec["action"]["joints"] = ["a", "b", "c"]
    spec["action"]["low"], spec["action"]["high"] = [0, 0, 0], [1, 1, 1]
    from trainer.data.task_check import check_task_data
    from trainer.data import DatasetError

    with pytest.raises(DatasetError, match=r"action.names has 3 names but data/action in p.zarr has 2 columns"):
        check_task_data(TaskSpec.from_dict(spec), path)
    spec["action"].update(names=["a", "b"], joints=["a", "b"], low=[0, 0], high=[1, 1])
    with pytest.raises(DatasetError, match=r"observation.images\[0\].shape is \[84, 84, 3\] but data/img in p.zarr "
                                           r"has frames of \[96, 96, 3\]"):
        check_task_data(TaskSpec.from_dict(spec), path)


def test_hostile_inputs_are_one_line(tmp_path, capsys):
    cases = [["check", "pusht-state", str(tmp_path / "missing.zarr")],
             ["check", str(tmp_path / "missing.toml"), str(tmp_path)],
             ["check", "no-such-task", str(tmp_path)],
             ["init", str(tmp_path / "missing.zarr")],
             ["init", str(tmp_path)],  # a directory that is not a zarr group
             ["show", "nope"]]
    (tmp_path / "junk.toml").write_bytes(b"[task\nname=")
    cases.append(["check", str(tmp_path / "junk.toml"), str(tmp_path)])
    for argv in cases:
        assert task_main(argv) == 2, argv
        err = one_line(capsys.readouterr().err)
        assert err.startswith("imle-task: error: "), err


def test_init_refuses_non_finite_data_naming_the_episode(tmp_path, capsys):
    from trainer.data import write_replay_buffer

    state = np.zeros((10, 3), np.float32)
    state[7, 1] = np.nan
    write_replay_buffer(tmp_path / "n.zarr", {"state": state, "action": np.zeros((10, 2), np.float32)},
                        np.array([5, 10]))
    assert task_main(["init", str(tmp_path / "n.zarr")]) == 2
    assert "episode 1 (frame 7" in one_line(capsys.readouterr().err)


def test_list_and_show(capsys):
    assert task_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "pusht-state:" in out and "pusht-image:" in out
    assert task_main(["show", "pusht-state"]) == 0
    assert 'signal = "coverage"' in capsys.readouterr().out


def test_train_with_the_pusht_task_on_a_7d_buffer_fails_before_training(arm7, tmp_path, capsys):
    """The issue's silent failure: a 7-joint buffer trained as pusht-state trained on 5 columns."""
    from trainer.cli import train_main

    path, _ = arm7
    out = tmp_path / "run"
    rc = train_main(["--task", "pusht-state", "--data", str(path), "--steps", "2", "--preset", "tiny",
                     "--out", str(out), "--no-progress"])
    assert rc == 2
    assert one_line(capsys.readouterr().err) == ("imle-train: error: task pusht-state: observation.state.names has 5 "
                                                 "names but data/state in arm7.zarr has 7 columns")
    assert not (out / "last.pt").exists() and not (out / "config.json").exists()


def test_train_flags_are_validated_in_the_config(tiny_buffer, tmp_path, capsys):
    from trainer.cli import train_main
    from trainer.train.config import TrainConfig

    base = ["--task", "pusht-state", "--data", str(tiny_buffer[0]), "--out", str(tmp_path / "r"), "--no-progress"]
    for flag, value, msg in [("--steps", "0", "--steps must be a positive integer, got 0"),
                             ("--lr", "nan", "--lr must be a finite number > 0, got nan"),
                             ("--n-samples", "-1", "--n-samples must be a positive integer, got -1"),
                             ("--batch-size", "-3", "--batch-size must be a positive integer, got -3")]:
        assert train_main([*base, flag, value]) == 2
        assert one_line(capsys.readouterr().err) == f"imle-train: error: {msg}"
    with pytest.raises(ValueError, match="--preset must be one of tiny, small, paper, got huge"):
        TrainConfig(net_preset="huge")
    assert train_main([*base, "--task", str(tmp_path / "nope.toml")]) == 2
    assert "task file not found" in one_line(capsys.readouterr().err)
