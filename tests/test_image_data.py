"""Image frames from replay buffers: uint8 decoded block by block, and hostile image buffers refused in one line."""
from __future__ import annotations

import numpy as np
import pytest
from tiny_buffers import make_tiny_buffer

from trainer.data import DataConfig, DatasetError, load_dataset, load_replay_buffer, write_replay_buffer
from trainer.data.images import read_images

ENDS = np.array([5, 9, 14])


def _buffer(tmp_path, img, state=None, name="b.zarr"):
    n = len(img)
    state = np.zeros((n, 5), np.float32) if state is None else state
    write_replay_buffer(tmp_path / name, {"state": state, "action": np.zeros((n, 2), np.float32), "img": img},
                        np.array([n // 3, 2 * n // 3, n]))
    return tmp_path / name


def test_float_frames_become_the_same_uint8_pixels_in_any_block_size():
    rng = np.random.default_rng(0)
    frames = rng.uniform(0, 255, size=(14, 8, 8, 3)).astype(np.float32)
    before = frames.copy()
    for block in (1, 3, 100):
        out = read_images(frames, 14, "data/img", ENDS, block=block)
        assert out.dtype == np.uint8 and out.shape == (14, 8, 8, 3)
        assert np.array_equal(out, frames.astype(np.uint8))
    assert np.array_equal(frames, before)  # the caller's array is not changed


def test_uint8_frames_are_kept_and_only_episode_frames_read():
    frames = np.arange(16 * 4 * 4 * 3, dtype=np.int64).reshape(16, 4, 4, 3) % 256
    out = read_images(frames.astype(np.uint8), 14, "data/img", ENDS, block=4)
    assert out.shape[0] == 14 and np.array_equal(out, frames[:14].astype(np.uint8))


def test_pusht_shaped_buffer_loads_as_uint8(tmp_path):
    data, _ = make_tiny_buffer(tmp_path / "i.zarr", n_episodes=2, with_image=True, lengths=[6, 5])
    buf = load_replay_buffer(tmp_path / "i.zarr", keys=("state", "action", "img"))
    assert buf.data["img"].dtype == np.uint8
    assert np.array_equal(buf.data["img"], data["img"].astype(np.uint8))


@pytest.mark.parametrize("img, message", [
    (np.zeros((12, 8, 8), np.float32), r"data/img .* must be \[frames, H, W, 3\] .*got \[12, 8, 8\]"),
    (np.zeros((12, 8, 8, 4), np.float32), r"data/img .* must be \[frames, H, W, 3\] .*got \[12, 8, 8, 4\]"),
    (np.zeros((12, 3, 8, 8), np.float32), r"got \[12, 3, 8, 8\]"),  # channels first
    (np.zeros((12, 8, 8, 3), np.int16), r"data/img .* has dtype int16; image frames must be uint8 or float"),
    (np.full((12, 8, 8, 3), 300.0, np.float32), r"frame 0 has pixel values outside 0\.\.255 \(min 300, max 300"),
    (np.full((12, 8, 8, 3), 0.5, np.float32), r"every pixel value is in 0\.\.1 \(max 0\.5\); frames must be 0\.\.255"),
])
def test_hostile_image_arrays_are_one_line_errors(tmp_path, img, message):
    path = _buffer(tmp_path, img)
    with pytest.raises(DatasetError, match=message) as err:
        load_replay_buffer(path, keys=("state", "action", "img"))
    assert "\n" not in str(err.value)


def test_negative_pixels_name_the_frame():
    frames = np.full((14, 4, 4, 3), 9.0, np.float32)
    frames[11, 0, 0, 0] = -1
    with pytest.raises(DatasetError, match=r"frame 11 has pixel values outside 0\.\.255 \(min -1"):
        read_images(frames, 14, "data/img", ENDS, block=4)


def test_nan_frame_in_a_later_block_names_its_episode_and_frame():
    frames = np.full((14, 4, 4, 3), 9.0, np.float32)
    frames[10, 1, 1, 2] = np.nan
    with pytest.raises(DatasetError, match=r"data/img: non-finite value \(nan\) in episode 2 \(frame 10, step 1 "):
        read_images(frames, 14, "data/img", ENDS, block=4)


def test_truncated_image_array_is_refused(tmp_path):
    path = _buffer(tmp_path, np.zeros((12, 8, 8, 3), np.uint8))
    import zarr

    root = zarr.open_group(str(path), mode="a")
    root["data/img"].resize((7, 8, 8, 3))  # fewer frames than meta/episode_ends
    with pytest.raises(DatasetError, match=r"data/img has 7 frames but episode_ends says 12"):
        load_replay_buffer(path, keys=("state", "action", "img"))
    with pytest.raises(DatasetError, match=r"data/img .* has 7 frames but meta/episode_ends says 12"):
        read_images(root["data/img"], 12, "data/img", np.array([4, 8, 12]), path)


def test_corrupt_image_chunk_is_one_line(tmp_path):
    path = _buffer(tmp_path, np.full((12, 8, 8, 3), 7, np.uint8))
    import zarr

    arr = zarr.open_group(str(path), mode="r")["data/img"]
    chunk = next(p for p in (path / "data/img").iterdir() if not p.name.startswith("."))
    chunk.write_bytes(chunk.read_bytes()[:10])  # a truncated (compressed) chunk file
    with pytest.raises(DatasetError, match=r"data/img.*: frames 0\.\.11 cannot be read \(") as err:
        read_images(arr, 12, "data/img", np.array([4, 8, 12]), path)
    assert "\n" not in str(err.value)


def test_nan_in_states_of_an_image_buffer_is_refused(tmp_path):
    state = np.zeros((12, 5), np.float32)
    state[6, 1] = np.nan
    path = _buffer(tmp_path, np.zeros((12, 8, 8, 3), np.uint8), state=state)
    with pytest.raises(DatasetError, match=r"data/state: non-finite value \(nan\) in episode 1 \(frame 6, step 2"):
        load_dataset(DataConfig(path=str(path), state_dims=(0, 1), use_image=True))
