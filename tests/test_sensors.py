"""runtime.sensors: observation history, State mapping, cameras."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.sensors import (FRAME_SHAPE, LatestFrame, ObservationHistory, PiCamera, StandInCamera, StateMapper,
                             make_camera, resize_nearest)


def test_history_pads_with_first_observation_then_shifts():
    h = ObservationHistory(3, 2)
    assert not h.ready
    h.push([1, 1])
    assert h.states().tolist() == [[1, 1]] * 3
    h.push([2, 2])
    h.push([3, 3])
    h.push([4, 4])
    assert h.states().tolist() == [[2, 2], [3, 3], [4, 4]]
    out = h.states()
    out[0] = 99  # a copy: the planning thread may keep it
    assert h.states()[0, 0] == 2
    h.reset()
    h.push([7, 7])
    assert h.states().tolist() == [[7, 7]] * 3
    with pytest.raises(ValueError):
        h.push([1, 2, 3])


def test_history_with_images():
    h = ObservationHistory(2, 1, (4, 4, 3))
    with pytest.raises(ValueError):
        h.push([0.0])
    a, b = np.full((4, 4, 3), 1, np.uint8), np.full((4, 4, 3), 2, np.uint8)
    h.push([0.0], a)
    assert h.images().shape == (2, 4, 4, 3) and np.all(h.images() == 1)
    h.push([1.0], b)
    assert h.images()[0, 0, 0, 0] == 1 and h.images()[1, 0, 0, 0] == 2


def test_state_mapper_by_name_and_by_position():
    joints, extras = ("agent_x", "agent_y"), ("block_x", "block_y", "block_angle", "coverage")
    m = StateMapper(5, ["agent_x", "agent_y", "block_x", "block_y", "block_angle"], joints, extras)
    assert m.by_name
    pos, ext = np.array([1, 2], np.float32), np.array([3, 4, 5, 0.5], np.float32)
    assert m(pos, ext).tolist() == [1, 2, 3, 4, 5]
    assert m.progress(ext) == 0.5
    m = StateMapper(2, ["block_y", "agent_x"], joints, extras)
    assert m(pos, ext).tolist() == [4, 1]
    m = StateMapper(3, ["s0", "s1", "s2"], joints, extras)  # unknown names: first values in order
    assert not m.by_name and m(pos, ext).tolist() == [1, 2, 3]
    assert StateMapper(2, [], joints, ()).progress(np.zeros(0)) is None
    with pytest.raises(ValueError, match="reports only"):
        StateMapper(7, [], joints, extras)


def test_state_mapper_refuses_mismatched_counts_instead_of_shifting():
    joints, extras = ("agent_x", "agent_y"), ("block_x", "block_y", "block_angle", "coverage")
    for names in (["agent_x", "agent_y", "block_x", "block_y", "block_angle"], ["s0", "s1", "s2"]):
        m = StateMapper(len(names), names, joints, extras)
        with pytest.raises(ValueError, match="1 joint positions and 4 extras; the device declared 2 and 4"):
            m(np.array([1.0], np.float32), np.array([3, 4, 5, 0.5], np.float32))  # one joint short: not shifted
        with pytest.raises(ValueError, match="declared 2 and 4"):
            m(np.array([1.0, 2.0], np.float32), np.zeros(0, np.float32))
        assert m.progress(np.zeros(3, np.float32)) is None  # a short extras vector has no trustworthy coverage


def test_standin_camera_shape_and_determinism():
    cam = StandInCamera()
    f0, f1 = cam.read(), cam.read()
    assert f0.shape == FRAME_SHAPE == (96, 96, 3) and f0.dtype == np.uint8
    assert not np.array_equal(f0, f1)
    assert np.array_equal(StandInCamera().read(), f0)
    fixed = StandInCamera(frame_fn=lambda i: np.full(FRAME_SHAPE, i, np.uint8))
    assert fixed.read()[0, 0, 0] == 0 and fixed.read()[0, 0, 0] == 1
    with pytest.raises(ValueError):
        StandInCamera(frame_fn=lambda i: np.zeros((2, 2, 3), np.uint8)).read()


def test_resize_nearest_crops_to_aspect_and_resamples():
    frame = np.arange(96 * 128 * 3, dtype=np.uint32).reshape(96, 128, 3).astype(np.uint8)
    out = resize_nearest(frame, (96, 96))
    assert out.shape == (96, 96, 3)
    assert np.array_equal(out, frame[:, 16:112])  # centre crop of a 4:3 frame to 1:1
    tall = np.zeros((200, 100, 3), np.uint8)
    assert resize_nearest(tall, (96, 96)).shape == (96, 96, 3)


def test_latest_frame_never_blocks_and_updates():
    cam = LatestFrame(StandInCamera(fps=200.0))
    try:
        first = cam.latest()
        assert first.shape == FRAME_SHAPE
        import time
        time.sleep(0.05)
        assert cam.frames > 1 and cam.age() < 0.5
    finally:
        cam.close()


def test_picamera_off_pi_is_a_clear_error():
    try:
        import picamera2  # noqa: F401
        pytest.skip("picamera2 is installed here")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="picamera2"):
        PiCamera()
    assert isinstance(make_camera("standin"), StandInCamera)
    with pytest.raises(ValueError):
        make_camera("webcam")
