"""runtime.task_spec: task files as hostile input, the manifest's task section, and Push-T task files that
reproduce the training inputs of the hard-coded presets they replace, bit for bit."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from runtime.task_spec import MAX_HORIZON, TaskSpec, TaskSpecError
from trainer.tasks import builtin_names, builtin_path, resolve_task


def one_line(text: str) -> str:
    assert "\n" not in text.strip() and "Traceback" not in text, text
    return text.strip()


def base() -> dict:
    return TaskSpec.from_toml(builtin_path("pusht-state")).to_dict()


def refuse(d, pattern: str) -> str:
    with pytest.raises(TaskSpecError, match=pattern) as err:
        TaskSpec.from_dict(d)
    return one_line(str(err.value))


def edited(path: str, value) -> dict:
    d = base()
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return d


# ---------------------------------------------------------------------------- round trips and views
def test_builtin_tasks_load_and_round_trip():
    assert set(builtin_names()) >= {"pusht-state", "pusht-image"}
    for name in builtin_names():
        spec = resolve_task(name)
        assert spec.name == name
        assert TaskSpec.from_dict(spec.to_dict()) == spec
        assert TaskSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec  # the manifest's path
    s = resolve_task("pusht-state")
    assert s.state.columns == (0, 1, 2, 3, 4) and s.state.angle_dims == (4,)
    assert s.action.joints == ("agent_x", "agent_y") and s.success.signal == "coverage" and s.success.threshold == 0.95
    im = resolve_task("pusht-image")
    assert im.state.columns == (0, 1) and im.images[0].shape == (96, 96, 3)


def test_defaults_use_all_columns_and_joints_are_the_action_names():
    d = base()
    del d["observation"]["state"]["use"], d["action"]["joints"], d["action"]["low"], d["action"]["high"], d["success"]
    s = TaskSpec.from_dict(d)
    assert s.state.use == s.state.names and s.action.joints == s.action.names
    assert s.action.low is None and s.success is None
    assert "success" not in s.to_dict() and "low" not in s.to_dict()["action"]


def test_reordered_use_maps_to_columns_and_angle_dims_follow_use():
    d = edited("observation.state.use", ["block_angle", "agent_x"])
    s = TaskSpec.from_dict(d)
    assert s.state.columns == (4, 0) and s.state.angle_dims == (0,)


def test_resolve_task_by_path_and_unknown_name(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text(builtin_path("pusht-state").read_text().replace('name = "pusht-state"', 'name = "mine"'))
    assert resolve_task(str(p)).name == "mine"
    with pytest.raises(TaskSpecError, match="unknown task 'pusht-stat'.*pusht-image, pusht-state"):
        resolve_task("pusht-stat")
    with pytest.raises(TaskSpecError, match="task file not found"):
        resolve_task(str(tmp_path / "nope.toml"))


# ---------------------------------------------------------------------------- hostile task files
def test_truncated_and_garbage_toml_files_are_one_line(tmp_path):
    text = builtin_path("pusht-state").read_bytes()
    cases = {"truncated": text[: len(text) // 3], "cut_in_string": text[: text.index(b'"agent_y') + 4],
             "empty": b"", "binary": bytes(range(256)) * 4, "not_utf8": b'[task]\nname = "\xff"\n',
             "deep": b"a = " + b"[" * 5000 + b"]" * 5000}
    for name, data in cases.items():
        p = tmp_path / f"{name}.toml"
        p.write_bytes(data)
        with pytest.raises(TaskSpecError) as err:
            TaskSpec.from_toml(p)
        msg = one_line(str(err.value))
        assert str(p) in msg, msg
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * ((1 << 20) + 10))
    with pytest.raises(TaskSpecError, match="larger than"):
        TaskSpec.from_toml(big)
    with pytest.raises(TaskSpecError, match="is a directory"):
        TaskSpec.from_toml(tmp_path)


@pytest.mark.parametrize("path, value, pattern", [
    ("task.colour", "red", r"task field 'task.colour' is not known \(allowed in task: name, period_s\)"),
    ("horizons.obs", KeyError, r"'horizons.obs' is missing"),
    ("success.operator", ">=", r"'success.operator' is not known"),
    ("task.name", "pusht state", r"'task.name' is 'pusht state'; use letters"),
    ("task.name", 7, r"'task.name' must be a string, got 7"),
    ("task.period_s", "0.1", r"'task.period_s' must be a number, got '0.1'"),
    ("task.period_s", True, r"'task.period_s' must be a number, got True"),
    ("task.period_s", math.nan, r"'task.period_s' is nan; must be finite"),
    ("task.period_s", math.inf, r"'task.period_s' is inf; must be finite"),
    ("task.period_s", 0.0, r"'task.period_s' is 0.0; must be in \[0.001, 10.0\] s"),
    ("task.period_s", 10 ** 400, r"'task.period_s' is .*out of float range"),
    ("horizons.obs", 2.0, r"'horizons.obs' must be an integer, got 2.0"),
    ("horizons.obs", True, r"'horizons.obs' must be an integer, got True"),
    ("horizons.obs", 0, r"'horizons.obs' is 0; must be in 1..1024"),
    ("horizons.pred", 10 ** 12, r"'horizons.pred' is 1000000000000; must be in 2..1024"),
    ("horizons.pred", 1, r"'horizons.pred' is 1; must be in 2..1024"),
    ("horizons.action", 16, r"'horizons.action' is 16; must be in 1..15"),
    ("observation.state.names", [], r"'observation.state.names' has 0 names"),
    ("observation.state.names", "agent_x", r"'observation.state.names' must be a list of names"),
    ("observation.state.names", ["a", "b", "a"], r"'observation.state.names\[2\]' 'a' appears twice"),
    ("observation.state.names", ["ok", None], r"'observation.state.names\[1\]' must be a string, got None"),
    ("observation.state.names", ["x" * 300], r"'observation.state.names\[0\]' must have 1..256 characters"),
    ("observation.state.names", [f"s{i}" for i in range(2000)], r"'observation.state.names' has 2000 names"),
    ("observation.state.names", ["a,b"], r"names\[0\]' is 'a,b'"),
    ("observation.state.use", ["agent_x", "wrist"], r"'observation.state.use\[1\]' 'wrist' is not in "
                                                   r"observation.state.names \(agent_x, agent_y"),
    ("observation.state.use", [], r"'observation.state.use' has 0 names"),
    ("observation.state.angles", ["block_x", "block_x"], r"'observation.state.angles\[1\]' 'block_x' appears twice"),
    ("observation.state.key", "data/state", r"'observation.state.key' is 'data/state'"),
    ("observation.state.key", "action", r"'action.key' 'action' is also observation.state.key"),
    ("action.joints", ["agent_x"], r"'action.joints' has 1 joints for 2 action.names"),
    ("action.low", [0.0, math.nan], r"'action.low\[1\]' is nan; must be finite"),
    ("action.high", [512.0, math.inf], r"'action.high\[1\]' is inf; must be finite"),
    ("action.high", [512.0, 0.0], r"'action.low\[1\]' \(0.0\) must be below action.high\[1\] \(0.0\)"),
    ("action.high", [512.0], r"'action.high' has 1 values for 2 action.names"),
    ("action.high", KeyError, r"'action.high' is missing: give both low and high"),
    ("action.low", ["0", 1], r"'action.low\[0\]' must be a number, got '0'"),
    ("success.threshold", math.nan, r"'success.threshold' is nan; must be finite"),
    ("success.signal", "", r"'success.signal' must have 1..256 characters, got 0"),
    ("success", 0.95, r"'success' must be a table, got 0.95"),
    ("observation.images", {"key": "img"}, r"'observation.images' must be a list of tables"),
    ("observation", [], r"'observation' must be a table"),
])
def test_hostile_fields_are_refused_naming_the_field(path, value, pattern):
    refuse(edited(path, value), pattern)


def test_angles_must_be_observed_columns():
    d = base()
    d["observation"]["state"]["use"] = ["agent_x", "agent_y"]  # block_angle still in angles, no longer observed
    refuse(d, r"'observation.state.angles\[0\]' 'block_angle' is not in observation.state.use \(agent_x, agent_y\)")


def test_hostile_images():
    def with_image(**kw):
        d = base()
        d["observation"]["images"] = [{"key": "img", "shape": [96, 96, 3], "camera": "top", **kw}]
        return d

    assert TaskSpec.from_dict(with_image()).images[0].shape == (96, 96, 3)
    refuse(with_image(shape=[96, 96]), r"'observation.images.shape' must be \[H, W, C\], got \[96, 96\]")
    refuse(with_image(shape=[96, 10 ** 6, 3]), r"'observation.images.shape\[1\]' is 1000000; must be in 1..4096")
    refuse(with_image(shape=[96, 96, 7]), r"'observation.images.shape\[2\]' is 7; must be in 1..4")
    refuse(with_image(channel_order="CMYK"), r"'observation.images.channel_order' is 'CMYK'")
    refuse(with_image(lens="wide"), r"'observation.images\[0\].lens' is not known")
    refuse(with_image(key="state"), r"'observation.images\[0\].key' 'state' is also observation.state.key")
    d = with_image()
    d["observation"]["images"].append({"key": "img2", "shape": [8, 8, 3], "camera": "top"})
    refuse(d, r"'observation.images\[1\].camera' 'top' appears twice")
    d["observation"]["images"] = [{"key": f"i{i}", "shape": [8, 8, 3], "camera": f"c{i}"} for i in range(50)]
    refuse(d, r"'observation.images' has 50 entries; at most 8")


def test_top_level_shape_and_adversarial_values():
    refuse([], r"the task file must be a table")
    refuse({}, r"task table \[task\] is missing")
    d = base()
    d["extra"] = {}
    refuse(d, r"task field 'extra' is not known")
    d = base()
    d["observation"]["state"]["names"] = [["nested"]]
    refuse(d, r"names\[0\]' must be a string")
    assert MAX_HORIZON == 1024


# ---------------------------------------------------------------------------- the manifest's task section
def _manifest_dict(tmp_path) -> dict:
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "exported_models/pusht-state-imle"
    return json.loads((root / "manifest.json").read_text())


def test_manifest_task_section_parses_checks_agreement_and_derives_for_old_packages(tmp_path):
    from runtime.package import Manifest, PackageError

    d = _manifest_dict(tmp_path)
    d["task_spec"] = resolve_task("pusht-state").to_dict()
    m = Manifest.from_dict(d)
    assert m.get_task_spec().success.signal == "coverage"
    old = copy.deepcopy(d)
    del old["task_spec"]
    t = Manifest.from_dict(old).get_task_spec()
    assert t.success is None and t.state.use == tuple(d["obs"]["state_names"]) and t.state.angles == ()
    assert t.action.joints == tuple(d["action"]["names"]) and t.period_s == d["control"]["period_s"]
    for mutate, pattern in [
        (lambda x: x["task_spec"]["observation"]["state"].update(use=["agent_x"], angles=[]),
         r"'task_spec.observation.state.use' is \['agent_x'\] but obs.state_names is \['agent_x'"),
        (lambda x: x["task_spec"]["task"].update(period_s=0.05), r"'task_spec.task.period_s' is 0.05 but "
                                                                 r"control.period_s is 0.1"),
        (lambda x: x["task_spec"]["horizons"].update(action=4), r"'task_spec.horizons' is \[2, 16, 4\]"),
        (lambda x: x["task_spec"]["success"].update(threshold=math.inf),
         r"manifest field 'task_spec': task field 'success.threshold' is inf"),
        (lambda x: x.update(task_spec=[1, 2]), r"manifest field 'task_spec' must be a dict"),
    ]:
        bad = copy.deepcopy(d)
        mutate(bad)
        with pytest.raises(PackageError, match=pattern) as err:
            Manifest.from_dict(bad)
        one_line(str(err.value))


# ---------------------------------------------------------------------------- Push-T: same inputs as before
# The hard-coded presets that the task files replace, as they were (trainer/train/config.py before #17):
OLD_PUSHT_STATE = dict(state_dims=(0, 1, 2, 3, 4), use_image=False, obs_horizon=2, pred_horizon=16, action_horizon=8)
OLD_PUSHT_STATE_ANGLES = (4,)
OLD_PUSHT_IMAGE = dict(state_dims=(0, 1), use_image=True, obs_horizon=2, pred_horizon=16, action_horizon=8)
OLD_PUSHT_IMAGE_ANGLES = ()
OLD_NAMES = ("agent_x", "agent_y", "block_x", "block_y", "block_angle")


def _old_inputs(path, fields: dict) -> dict:
    """Today's pipeline, written out: columns, Diffusion-Policy windows, min-max statistics of the used frames."""
    import zarr

    root = zarr.open_group(str(path), mode="r")
    ends = np.asarray(root["meta/episode_ends"][:], np.int64)
    state = np.asarray(root["data/state"][:], np.float32)[:, list(fields["state_dims"])]
    action = np.asarray(root["data/action"][:], np.float32)
    to, tp, ta = fields["obs_horizon"], fields["pred_horizon"], fields["action_horizon"]
    frames = []
    for ep in range(len(ends)):
        start = 0 if ep == 0 else int(ends[ep - 1])
        length = int(ends[ep]) - start
        first, last = -(to - 1), max(length - tp + ta - 1, -(to - 1))
        for s in range(first, last + 1):
            frames.append(start + np.clip(np.arange(s, s + tp), 0, length - 1))
    frames = np.asarray(frames, np.int64)
    used = np.unique(frames)

    def stats(x):
        lo, hi = x[used].astype(np.float64).min(0), x[used].astype(np.float64).max(0)
        span = np.where(hi - lo < 1e-8, 2.0, hi - lo)
        scale = 2.0 / span
        offset = np.where(hi - lo < 1e-8, -lo * scale, -1.0 - lo * scale)
        return lo, hi, scale.astype(np.float32), offset.astype(np.float32)

    out = {"frames": frames, "obs_state": state[frames[:, :to]], "action": action[frames],
           "state_stats": stats(state), "action_stats": stats(action)}
    if fields["use_image"]:
        img = np.clip(np.asarray(root["data/img"][:]), 0, 255).astype(np.uint8)
        out["obs_image"] = np.moveaxis(img[frames[:, :to]], -1, 2)
    return out


@pytest.mark.parametrize("task, old, old_angles", [("pusht-state", OLD_PUSHT_STATE, OLD_PUSHT_STATE_ANGLES),
                                                    ("pusht-image", OLD_PUSHT_IMAGE, OLD_PUSHT_IMAGE_ANGLES)])
def test_pusht_task_files_reproduce_the_old_training_inputs_bit_for_bit(tmp_path, task, old, old_angles):
    from tests.conftest import make_tiny_buffer
    from trainer.data import DataConfig, load_dataset
    from trainer.export import tasks as export_tasks
    from trainer.train.config import task_preset

    path = tmp_path / "tiny.zarr"
    make_tiny_buffer(path, n_episodes=4, with_image=old["use_image"], lengths=[21, 9, 33, 17])
    cfg = task_preset(task)
    assert cfg.angle_dims == old_angles
    for k, v in old.items():
        assert getattr(cfg.data, k) == v, k
    new = load_dataset(DataConfig(**{**cfg.data.__dict__, "path": str(path)}))
    legacy = load_dataset(DataConfig(path=str(path), **old))
    ref = _old_inputs(path, old)
    idx = np.arange(len(new))
    nb, lb = new.batch(idx), legacy.batch(idx)
    assert np.array_equal(new.windows.frames, ref["frames"]) and np.array_equal(legacy.windows.frames, ref["frames"])
    for key in nb:
        assert nb[key].dtype == lb[key].dtype and np.array_equal(nb[key], lb[key]), key
        assert np.array_equal(nb[key], ref[key]), key
    for part in ("state_stats", "action_stats"):
        lo, hi, scale, offset = ref[part]
        for ds in (new, legacy):
            st = getattr(ds, part)
            assert st.min == lo.tolist() and st.max == hi.tolist()
            assert np.array_equal(st.scale, scale) and np.array_equal(st.offset, offset)
    # names, period and channel order of the old exporter tables
    spec = cfg.spec()
    assert spec.state.names == OLD_NAMES and spec.action.names == ("target_x", "target_y") and spec.period_s == 0.1
    assert spec.state.use == tuple(OLD_NAMES[i] for i in old["state_dims"])
    if spec.images:
        assert spec.images[0].channel_order == "RGB" and spec.images[0].key == "img"
    # an old checkpoint (config without task_spec) exports with the same task
    legacy_cfg = {"task": task, "data": {**old}, "angle_dims": list(old_angles)}
    shape = (3, 96, 96) if old["use_image"] else None
    assert export_tasks.task_from_checkpoint({"config": legacy_cfg}, len(old["state_dims"]), 2, 2, 16, shape) == spec


def test_the_network_sees_the_angle_as_sin_cos_as_before():
    """The angle encoding is the network's (angle_dims): the task file must give the same dims."""
    from trainer.train.config import task_preset

    assert task_preset("pusht-state").angle_dims == OLD_PUSHT_STATE_ANGLES
    assert task_preset("pusht-image").angle_dims == OLD_PUSHT_IMAGE_ANGLES
    assert task_preset("pusht-image").batch_size == 64  # the image default; pusht-state's is its recipe's
