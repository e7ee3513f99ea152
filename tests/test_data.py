"""Replay-buffer reading, episode subsets, windows with edge padding, normalisation."""
import numpy as np
import pytest

from trainer.data import (DataConfig, DatasetError, MinMax, build_windows, load_dataset, load_replay_buffer,
                          select_episodes, write_replay_buffer)


def test_windows_pad_with_episode_edges(tmp_path):
    # two episodes with recognisable values: frame value = its flat index
    n = 12
    values = np.arange(n, dtype=np.float32)[:, None].repeat(5, 1)
    write_replay_buffer(tmp_path / "b.zarr", {"state": values, "action": values[:, :2]}, np.array([5, 12]))
    buf = load_replay_buffer(tmp_path / "b.zarr")
    win = build_windows(buf, np.array([0, 1]), obs_horizon=2, pred_horizon=4, action_horizon=2)
    ep0 = win.frames[win.episodes == 0]
    # first window starts To-1 = 1 frame before the episode: padded with frame 0
    assert ep0[0].tolist() == [0, 0, 1, 2]
    # last window ends Ta-1 = 1 frame after the episode's end: padded with frame 4
    assert ep0[-1].tolist() == [2, 3, 4, 4]
    # windows never cross into the other episode
    assert ep0.max() <= 4 and win.frames[win.episodes == 1].min() >= 5
    # count: length - Tp + pad_before + pad_after + 1
    assert len(ep0) == 5 - 4 + 1 + 1 + 1


def test_short_episode_gives_one_padded_window(tmp_path):
    values = np.ones((2, 5), np.float32)
    write_replay_buffer(tmp_path / "b.zarr", {"state": values, "action": values[:, :2]}, np.array([2]))
    win = build_windows(load_replay_buffer(tmp_path / "b.zarr"), np.array([0]), 2, 16, 8)
    assert win.frames.shape == (1, 16) and win.frames.tolist()[0] == [0] * 2 + [1] * 14


def test_normalisation_round_trip_and_range():
    rng = np.random.default_rng(0)
    x = rng.uniform([-3, 10, 5], [7, 20, 5], size=(100, 3)).astype(np.float32)  # last dim constant
    stats = MinMax.fit(x)
    y = stats.normalize(x)
    assert y[:, :2].min() >= -1 - 1e-6 and y[:, :2].max() <= 1 + 1e-6
    assert np.allclose(y[:, :2].min(0), -1, atol=1e-5) and np.allclose(y[:, :2].max(0), 1, atol=1e-5)
    assert np.allclose(y[:, 2], 0)  # constant dimension maps to 0, no division by zero
    assert np.allclose(stats.unnormalize(y), x, atol=1e-4)


def test_subsets_are_reproducible_and_nested():
    a = select_episodes(206, fraction=0.1, seed=3)
    assert np.array_equal(a, select_episodes(206, fraction=0.1, seed=3))
    assert len(a) == 21
    b = select_episodes(206, fraction=0.25, seed=3)
    assert set(a) <= set(b)
    assert not np.array_equal(a, select_episodes(206, fraction=0.1, seed=4))
    assert len(select_episodes(206, count=5)) == 5


def test_statistics_come_from_the_subset_used(tiny_buffer):
    path, data, ends = tiny_buffer
    ds = load_dataset(DataConfig(path=str(path), episodes=2, subset_seed=1))
    starts = np.r_[0, ends[:-1]]
    used = np.concatenate([np.arange(starts[e], ends[e]) for e in ds.episodes])
    assert np.allclose(ds.action_stats.min, data["action"][used].min(0))
    assert np.allclose(ds.state_stats.max, data["state"][used].max(0))
    batch = ds.batch(np.array([0, 1, 2]))
    assert batch["obs_state"].shape == (3, 2, 5) and batch["action"].shape == (3, 16, 2)


def test_image_batches_are_channel_first_uint8(tmp_path):
    from tiny_buffers import make_tiny_buffer

    make_tiny_buffer(tmp_path / "img.zarr", n_episodes=2, with_image=True)
    ds = load_dataset(DataConfig(path=str(tmp_path / "img.zarr"), state_dims=(0, 1), use_image=True))
    b = ds.batch(np.array([0, 5]))
    assert b["obs_image"].shape == (2, 2, 3, 96, 96) and b["obs_image"].dtype == np.uint8
    assert ds.image_shape == (3, 96, 96)


@pytest.mark.parametrize("make_bad,message", [
    (lambda p: None, "not found"),
    (lambda p: write_replay_buffer(p, {"state": np.zeros((4, 5), np.float32)}, np.array([4])), "no data/action"),
    (lambda p: write_replay_buffer(p, {"state": np.zeros((4, 5)), "action": np.zeros((4, 2))}, np.array([3, 2])),
     "strictly increasing"),
])
def test_bad_input_gives_a_one_line_error(tmp_path, make_bad, message):
    path = tmp_path / "bad.zarr"
    make_bad(path)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset(DataConfig(path=str(path)))
    assert "\n" not in str(err.value)


def test_empty_or_oversized_subset_is_an_error():
    with pytest.raises(DatasetError, match="empty"):
        select_episodes(10, count=0)
    with pytest.raises(DatasetError, match="only 10"):
        select_episodes(10, count=11)
    with pytest.raises(DatasetError, match="fraction"):
        select_episodes(10, fraction=0.0)
