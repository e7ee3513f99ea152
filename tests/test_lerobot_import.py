"""imle-import-lerobot: tiny LeRobotDatasets (v2.1 and v3.0) built here -> replay buffer + task file."""
import json

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
av = pytest.importorskip("av")
pytest.importorskip("zarr")

from runtime.task_spec import TaskSpec  # noqa: E402
from trainer.data import load_replay_buffer  # noqa: E402
from trainer.data.lerobot import main  # noqa: E402
from trainer.data.task_check import check_task_data  # noqa: E402

FPS = 10
LENGTHS = (4, 6)
STATE_NAMES = ["shoulder.pos", "elbow.pos", "gripper.pos"]
ACTION_NAMES = ["shoulder.pos", "elbow.pos", "gripper.pos"]
CAM = "observation.images.top"
H = W = 16


def ep_arrays(e, n):
    t = np.arange(n)
    state = np.stack([t * 0.1 + e, -t * 0.2, np.full(n, 0.5 * e)], 1).astype(np.float32)
    action = state + 0.05
    return state, action


def gray(k):
    return 20 + 12 * k  # frame k of a video file is a flat gray of this level


def write_video(path, n_frames):
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for k in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), gray(k), np.uint8), format="rgb24")
            frame.pts = k
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def table(episode, start_index, n, state=None, action=None):
    s, a = ep_arrays(episode, n)
    s = s if state is None else state
    a = a if action is None else action
    return pa.table({"observation.state": pa.array(s.tolist(), pa.list_(pa.float32())),
                     "action": pa.array(a.tolist(), pa.list_(pa.float32())),
                     "timestamp": pa.array(np.arange(n) / FPS, pa.float32()),
                     "frame_index": pa.array(np.arange(n)), "episode_index": pa.array([episode] * n),
                     "index": pa.array(start_index + np.arange(n))})


def info(version, **extra):
    feats = {"observation.state": {"dtype": "float32", "shape": [3], "names": STATE_NAMES},
             "action": {"dtype": "float32", "shape": [3], "names": {"motors": ACTION_NAMES}},
             CAM: {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"]}}
    d = {"codebase_version": version, "fps": FPS, "total_episodes": len(LENGTHS), "chunks_size": 1000,
         "features": feats}
    if version == "v2.1":
        d["data_path"] = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
        d["video_path"] = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    else:
        d["data_path"] = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        d["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    d.update(extra)
    return d


def build_v21(root):
    (root / "meta").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info("v2.1")))
    lines, start = [], 0
    for e, n in enumerate(LENGTHS):
        lines.append(json.dumps({"episode_index": e, "tasks": ["reach"], "length": n}))
        p = root / f"data/chunk-000/episode_{e:06d}.parquet"
        p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table(e, start, n), p)
        write_video(root / f"videos/chunk-000/{CAM}/episode_{e:06d}.mp4", n)
        start += n
    (root / "meta/episodes.jsonl").write_text("\n".join(lines) + "\n")
    return root


def build_v30(root):
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    (root / "meta/info.json").write_text(json.dumps(info("v3.0")))
    tables, rows, start = [], [], 0
    for e, n in enumerate(LENGTHS):
        tables.append(table(e, start, n))
        rows.append({"episode_index": e, "length": n, "data/chunk_index": 0, "data/file_index": 0,
                     "dataset_from_index": start, "dataset_to_index": start + n,
                     f"videos/{CAM}/chunk_index": 0, f"videos/{CAM}/file_index": 0,
                     f"videos/{CAM}/from_timestamp": start / FPS, f"videos/{CAM}/to_timestamp": (start + n) / FPS})
        start += n
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(pa.concat_tables(tables), root / "data/chunk-000/file-000.parquet")
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    write_video(root / f"videos/{CAM}/chunk-000/file-000.mp4", start)  # both episodes in one file
    return root


BUILDERS = {"v2.1": build_v21, "v3.0": build_v30}


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_import_state_action_names_period_and_episode_ends(tmp_path, version, capsys):
    ds = BUILDERS[version](tmp_path / "so100_reach")
    out, task = tmp_path / "b.zarr", tmp_path / "t.toml"
    assert main([str(ds), "--out", str(out), "--task-out", str(task)]) == 0
    rb = load_replay_buffer(out)
    assert rb.episode_ends.tolist() == [4, 10]
    want = [ep_arrays(e, n) for e, n in enumerate(LENGTHS)]
    np.testing.assert_array_equal(rb.data["state"], np.concatenate([w[0] for w in want]))
    np.testing.assert_array_equal(rb.data["action"], np.concatenate([w[1] for w in want]))
    spec = TaskSpec.from_toml(task)
    assert spec.name == "so100_reach" and spec.period_s == pytest.approx(0.1)
    assert spec.state.names == tuple(STATE_NAMES) and spec.action.names == tuple(ACTION_NAMES)
    assert spec.action.joints == tuple(ACTION_NAMES)
    np.testing.assert_allclose(spec.action.low, rb.data["action"].min(0), rtol=1e-6)
    check_task_data(spec, out)
    assert "images" not in capsys.readouterr().out  # no video decoded unless asked


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_import_video_frames_matched_by_timestamp(tmp_path, version):
    ds = BUILDERS[version](tmp_path / "ds")
    out, task = tmp_path / "b.zarr", tmp_path / "t.toml"
    assert main([str(ds), "--out", str(out), "--task-out", str(task), "--images", CAM, "--image-size", "8x8"]) == 0
    rb = load_replay_buffer(out, keys=("state", "action", "img"))
    img = rb.data["img"]
    assert img.shape == (10, 8, 8, 3)
    # v2.1: a file per episode (frame k of episode e is gray(k)); v3.0: one file, episode 1 starts at frame 4
    expect = [gray(k) for k in range(4)] + ([gray(k) for k in range(6)] if version == "v2.1" else
                                           [gray(4 + k) for k in range(6)])
    np.testing.assert_allclose(img.reshape(10, -1).mean(1), expect, atol=4)
    spec = TaskSpec.from_toml(task)
    assert spec.images[0].shape == (8, 8, 3)
    check_task_data(spec, out)


def _mutate_info(ds, **changes):
    p = ds / "meta/info.json"
    d = json.loads(p.read_text())
    d.update(changes)
    p.write_text(json.dumps(d))


def _rewrite_episode(ds, version, **kw):
    if version == "v2.1":
        pq.write_table(table(1, 4, 6, **kw), ds / "data/chunk-000/episode_000001.parquet")
    else:
        pq.write_table(pa.concat_tables([table(0, 0, 4), table(1, 4, 6, **kw)]), ds / "data/chunk-000/file-000.parquet")


HOSTILE = {
    "unknown version": (lambda ds, v: _mutate_info(ds, codebase_version="v9.9"), "codebase_version 'v9.9' is not"),
    "traversal": (lambda ds, v: _mutate_info(ds, data_path="../../{episode_index}.parquet" if v == "v2.1"
                                             else "../{chunk_index}/x.parquet"), "points outside the dataset"),
    "attribute in template": (lambda ds, v: _mutate_info(ds, data_path="{episode_index.__class__}" if v == "v2.1"
                                                         else "{chunk_index.__class__}"), "allowed:"),
    "unknown template field": (lambda ds, v: _mutate_info(ds, data_path="data/{secret}.parquet"), "uses {secret}"),
    "fps nan": (lambda ds, v: (ds / "meta/info.json").write_text(
        (ds / "meta/info.json").read_text().replace('"fps": 10', '"fps": NaN')), "fps must be a number"),
    "missing info": (lambda ds, v: (ds / "meta/info.json").unlink(), "missing"),
    "info not json": (lambda ds, v: (ds / "meta/info.json").write_text("{"), "not JSON"),
    "total mismatch": (lambda ds, v: _mutate_info(ds, total_episodes=5), "total_episodes 5"),
    "missing data file": (lambda ds, v: next((ds / "data").rglob("*.parquet")).unlink(), "missing"),
    "nan in state": (lambda ds, v: _rewrite_episode(ds, v, state=np.full((6, 3), np.nan, np.float32)),
                     "non-finite value in row 0"),
    "short rows": (lambda ds, v: _rewrite_episode(ds, v, action=np.zeros((6, 2), np.float32)),
                   "rows of 2 values; the feature has 3"),
    "no state feature": (lambda ds, v: _mutate_info(ds, features={"action": {"dtype": "float32", "shape": [3]}}),
                         "no feature 'observation.state'"),
}


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_datasets_are_one_line_errors_and_write_nothing(tmp_path, version, case, capsys):
    ds = BUILDERS[version](tmp_path / "ds")
    mutate, err = HOSTILE[case]
    mutate(ds, version)
    out = tmp_path / "b.zarr"
    assert main([str(ds), "--out", str(out), "--task-out", str(tmp_path / "t.toml")]) == 2
    e = capsys.readouterr().err
    assert err in e and len(e.strip().splitlines()) == 1 and "Traceback" not in e
    assert not out.exists() and not (tmp_path / "t.toml").exists()


def test_length_mismatch_and_missing_video_and_bad_names(tmp_path, capsys):
    ds = build_v21(tmp_path / "a")
    (ds / "meta/episodes.jsonl").write_text((ds / "meta/episodes.jsonl").read_text().replace('"length": 6',
                                                                                             '"length": 7'))
    assert main([str(ds), "--out", str(tmp_path / "a.zarr")]) == 2
    assert "has 6 rows; meta/episodes.jsonl says 7" in capsys.readouterr().err
    ds = build_v30(tmp_path / "b")
    next((ds / "videos").rglob("*.mp4")).unlink()
    assert main([str(ds), "--out", str(tmp_path / "b.zarr"), "--images", CAM]) == 2
    assert "missing video" in capsys.readouterr().err
    assert main([str(ds), "--out", str(tmp_path / "b.zarr"), "--images", "observation.state"]) == 2
    assert f"cameras: {CAM}" in capsys.readouterr().err
    ds = build_v21(tmp_path / "c")
    feats = info("v2.1")["features"]
    feats["observation.state"]["names"] = ["a b", "c", "d"]
    _mutate_info(ds, features=feats)
    assert main([str(ds), "--out", str(tmp_path / "c.zarr"), "--task-out", str(tmp_path / "c.toml")]) == 0
    assert "'a b' is not a valid name): named state_0..state_2" in capsys.readouterr().err
    assert TaskSpec.from_toml(tmp_path / "c.toml").state.names == ("state_0", "state_1", "state_2")
    assert main([str(ds), "--out", str(tmp_path / "c.zarr")]) == 2  # exists, no --force
    assert "exists (use --force" in capsys.readouterr().err
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "n.zarr")]) == 2
    assert "LeRobot dataset not found" in capsys.readouterr().err
