"""benchmarks/render_pusht_images.py: Push-T frames drawn from recorded states exactly as evaluation observes
them, a buffer the trainer loads, and hostile buffers refused in one line (exit 2, no traceback)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_buffers import make_tiny_buffer

from trainer.data import load_replay_buffer, write_replay_buffer

pytest.importorskip("gym_pusht", reason="gym-pusht not installed: pip install -e '.[sim]'")
REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("render_pusht_images", REPO / "benchmarks" / "render_pusht_images.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses and the render pool's pickling look the module up by name
    spec.loader.exec_module(mod)
    return mod


rp = _load()
LENGTHS = [5, 4, 6]


@pytest.fixture
def tiny(tmp_path):
    data, ends = make_tiny_buffer(tmp_path / "s.zarr", lengths=LENGTHS, seed=3)
    return tmp_path / "s.zarr", data, ends


def _run(capsys, *argv) -> tuple[int, str]:
    code = rp.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return code, err


def _blue_centroid(frame: np.ndarray) -> np.ndarray:
    """The pusher (RoyalBlue in gym-pusht) in pixel coordinates (x, y)."""
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    ys, xs = np.nonzero((b > 180) & (r < 120) & (g < 160))
    return np.array([xs.mean(), ys.mean()])


def test_frames_equal_the_evaluation_observation_after_reset_to_state():
    from trainer.evaluate.env import make_env, reset_to_state, split_obs

    env = make_env((3, 96, 96))
    states = np.array([[100.0, 400.0, 256.0, 300.0, 0.0], [300.0, 120.0, 200.0, 260.0, 2.1],
                       [60.0, 60.0, 380.0, 380.0, 5.9]])
    for s in states:
        _, want = split_obs(reset_to_state(env, s))  # the evaluation's own placement and observation
        got = rp.render_state(env, s)
        assert got.shape == (96, 96, 3) and got.dtype == np.uint8
        assert np.array_equal(got, np.moveaxis(want, 0, -1))
    env.close()


def test_the_pusher_is_drawn_where_the_state_puts_it():
    env = rp._env(96)
    for ax, ay in [(100.0, 400.0), (420.0, 90.0)]:
        frame = rp.render_state(env, np.array([ax, ay, 256.0, 256.0, 0.5]))
        assert np.allclose(_blue_centroid(frame), np.array([ax, ay]) * 96 / 512, atol=1.0)


def test_rendered_buffer_loads_in_the_trainer_and_copies_states(tmp_path, tiny, capsys):
    src, data, ends = tiny
    code, err = _run(capsys, "--data", src, "--out", tmp_path / "r.zarr", "--no-progress")
    assert code == 0, err
    buf = load_replay_buffer(tmp_path / "r.zarr", keys=("state", "action", "img"))
    assert buf.data["img"].dtype == np.uint8 and buf.data["img"].shape == (sum(LENGTHS), 96, 96, 3)
    assert np.array_equal(buf.episode_ends, ends)
    assert np.array_equal(buf.data["state"], data["state"]) and np.array_equal(buf.data["action"], data["action"])
    env = rp._env(96)
    for i in (0, 7, sum(LENGTHS) - 1):
        assert np.array_equal(buf.data["img"][i], rp.render_state(env, data["state"][i].astype(np.float64)))
    assert not (tmp_path / "r.zarr.partial").exists()


def test_workers_and_limit(tmp_path, tiny, capsys, monkeypatch):
    src, data, _ = tiny
    monkeypatch.setattr(rp, "CHUNK", 4)  # several render tasks, finished out of order by the pool
    assert _run(capsys, "--data", src, "--out", tmp_path / "one.zarr", "--no-progress")[0] == 0
    assert _run(capsys, "--data", src, "--out", tmp_path / "two.zarr", "--workers", "2", "--no-progress")[0] == 0
    one = load_replay_buffer(tmp_path / "one.zarr", keys=("state", "action", "img"))
    two = load_replay_buffer(tmp_path / "two.zarr", keys=("state", "action", "img"))
    assert np.array_equal(one.data["img"], two.data["img"])
    # --limit: whole episodes only (5 + 4 <= 10 < 15), and at least the first one
    assert _run(capsys, "--data", src, "--out", tmp_path / "l.zarr", "--limit", "10", "--no-progress")[0] == 0
    lim = load_replay_buffer(tmp_path / "l.zarr", keys=("state", "action", "img"))
    assert list(lim.episode_ends) == [5, 9] and np.array_equal(lim.data["img"], one.data["img"][:9])
    assert _run(capsys, "--data", src, "--out", tmp_path / "l1.zarr", "--limit", "2", "--no-progress")[0] == 0
    assert list(load_replay_buffer(tmp_path / "l1.zarr", keys=("state",)).episode_ends) == [5]


def test_check_reports_zero_for_its_own_frames_and_sees_a_changed_pixel(tmp_path, tiny, capsys):
    src, data, ends = tiny
    assert _run(capsys, "--data", src, "--out", tmp_path / "r.zarr", "--no-progress")[0] == 0
    img = load_replay_buffer(tmp_path / "r.zarr", keys=("state", "action", "img")).data["img"]
    write_replay_buffer(tmp_path / "same.zarr", {**data, "img": img.astype(np.float32)}, ends)
    code, err = _run(capsys, "--data", tmp_path / "same.zarr", "--check", "6", "--report", tmp_path / "rep")
    assert code == 0, err
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["mean_abs_diff"] == 0.0 and rep["identical_frames"] == rep["frames_compared"] == 6
    assert (tmp_path / "rep.png").stat().st_size > 0
    changed = img.copy()
    changed[:, 0, 0] = 0  # one pixel of every frame (the white margin) made black
    write_replay_buffer(tmp_path / "chg.zarr", {**data, "img": changed}, ends)
    assert _run(capsys, "--data", tmp_path / "chg.zarr", "--check", "15", "--report", tmp_path / "rep2")[0] == 0
    rep2 = json.loads((tmp_path / "rep2.json").read_text())
    assert rep2["identical_frames"] == 0 and rep2["pixels_differing_fraction"] == pytest.approx(1 / 96 ** 2)


# ----------------------------------------------------------------------------- hostile inputs

def _buffer(path: Path, n: int = 9, state=None, action=True, ends=None) -> Path:
    state = np.tile([100.0, 100.0, 200.0, 200.0, 0.5], (n, 1)).astype(np.float32) if state is None else state
    data = {"state": state}
    if action:
        data["action"] = np.zeros((len(state), 2), np.float32)
    write_replay_buffer(path, data, np.array([4, n] if ends is None else ends))
    return path


def _refused(capsys, tmp_path, src, *more) -> str:
    out = tmp_path / "out.zarr"
    code, err = _run(capsys, "--data", src, "--out", out, "--no-progress", *more)
    assert code == 2
    assert err.startswith("render_pusht_images: error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert not out.exists()
    return err


def test_missing_keys_are_named(tmp_path, capsys):
    src = _buffer(tmp_path / "noact.zarr", action=False)
    assert "no data/action" in _refused(capsys, tmp_path, src)
    import zarr
    root = zarr.open_group(str(tmp_path / "nostate.zarr"), mode="w", zarr_format=2)
    root.create_array("data/action", data=np.zeros((9, 2), np.float32))
    root.create_array("meta/episode_ends", data=np.array([9]))
    err = _refused(capsys, tmp_path, tmp_path / "nostate.zarr")
    assert "no data/state" in err and "action" in err
    root = zarr.open_group(str(tmp_path / "nometa.zarr"), mode="w", zarr_format=2)
    root.create_array("data/state", data=np.zeros((9, 5), np.float32))
    assert "meta/episode_ends" in _refused(capsys, tmp_path, tmp_path / "nometa.zarr")
    assert "not found" in _refused(capsys, tmp_path, tmp_path / "absent.zarr")
    (tmp_path / "file.zarr").write_text("not a zarr")
    assert "not a zarr group" in _refused(capsys, tmp_path, tmp_path / "file.zarr")


@pytest.mark.parametrize("bad,word", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_states_name_episode_and_frame(tmp_path, capsys, bad, word):
    state = np.tile([100.0, 100.0, 200.0, 200.0, 0.5], (9, 1)).astype(np.float32)
    state[6, 4] = bad
    err = _refused(capsys, tmp_path, _buffer(tmp_path / "nan.zarr", state=state))
    assert "data/state" in err and f"({word})" in err and "episode 1" in err and "frame 6" in err


def test_overflowing_float64_state_is_refused(tmp_path, capsys):
    state = np.tile([100.0, 100.0, 200.0, 200.0, 0.5], (9, 1))
    state[2, 0] = 1e300
    err = _refused(capsys, tmp_path, _buffer(tmp_path / "big.zarr", state=state))
    assert "outside Push-T's workspace" in err and "frame 2" in err


@pytest.mark.parametrize("shape", [(9, 4), (9, 6), (9,), (9, 5, 1)])
def test_wrong_state_dims_are_refused(tmp_path, capsys, shape):
    err = _refused(capsys, tmp_path, _buffer(tmp_path / "dims.zarr", state=np.full(shape, 100.0, np.float32)))
    assert "data/state must be [frames, 5]" in err and str(list(shape)) in err


def test_truncated_and_out_of_workspace_states(tmp_path, capsys):
    err = _refused(capsys, tmp_path, _buffer(tmp_path / "short.zarr", ends=[4, 12]))
    assert "has 9 frames but meta/episode_ends says 12" in err
    state = np.tile([100.0, 100.0, 200.0, 200.0, 0.5], (9, 1)).astype(np.float32)
    state[3, 2] = -40.0
    err = _refused(capsys, tmp_path, _buffer(tmp_path / "ws.zarr", state=state))
    assert "frame 3" in err and "-40" in err and "[0, 512]" in err


def test_bad_arguments_are_one_line(tmp_path, tiny, capsys):
    src = tiny[0]
    (tmp_path / "out.zarr").mkdir()
    code, err = _run(capsys, "--data", src, "--out", tmp_path / "out.zarr")
    assert code == 2 and "exists" in err and len(err.splitlines()) == 1
    assert "exactly one of --out" in _refused(capsys, tmp_path / "x", src, "--check", "3")
    code, err = _run(capsys, "--data", src)
    assert code == 2 and "exactly one of --out" in err
    assert "--workers must be in 1..256, got 0" in _refused(capsys, tmp_path / "y", src, "--workers", "0")
    assert "--limit must be in" in _refused(capsys, tmp_path / "z", src, "--limit", "-1")
    code, err = _run(capsys, "--data", src, "--check", "3", "--report", tmp_path / "r")
    assert code == 2 and "no data/img to compare with" in err


def test_missing_gym_pusht_is_one_line(tmp_path, tiny, capsys, monkeypatch):
    monkeypatch.setattr(rp, "_ENV", None)
    monkeypatch.setitem(sys.modules, "gym_pusht", None)  # `import gym_pusht` raises ImportError
    err = _refused(capsys, tmp_path, tiny[0])
    assert "gym-pusht is not installed" in err
