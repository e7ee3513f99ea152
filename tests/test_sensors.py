"""runtime.sensors: observation history, State mapping, cameras."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.sensors import (FRAME_SHAPE, LatestFrame, ObservationHistory, PiCamera, StandInCamera, StateMapper,
                             make_camera, resize_nearest)
from runtime.binding import MappingError


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


JOINTS, EXTRAS = ("agent_x", "agent_y"), ("block_x", "block_y", "block_angle", "coverage")
PUSHT_OBS = ["agent_x", "agent_y", "block_x", "block_y", "block_angle"]


def test_state_mapper_by_name_and_progress_signal():
    m = StateMapper(PUSHT_OBS, JOINTS, EXTRAS, progress_name="coverage")
    pos, ext = np.array([1, 2], np.float32), np.array([3, 4, 5, 0.5], np.float32)
    assert m(pos, ext).tolist() == [1, 2, 3, 4, 5]
    assert m.progress(pos, ext) == 0.5
    m = StateMapper(["block_y", "agent_x"], JOINTS, EXTRAS, progress_name="agent_y")  # any reported name
    assert m(pos, ext).tolist() == [4, 1] and m.progress(pos, ext) == 2.0
    assert StateMapper(["agent_x"], JOINTS, ()).progress(pos, np.zeros(0)) is None  # the task declares none


def test_state_mapper_refuses_unknown_names_with_both_lists_never_by_position():
    # The robot reports 6 values, the policy observes 3 under other names: no positional fallback.
    with pytest.raises(MappingError) as e:
        StateMapper(["s0", "agent_x", "s2"], JOINTS, EXTRAS)
    msg = str(e.value)
    assert "\n" not in msg and "the policy observes s0, s2 which the robot does not report" in msg
    assert "policy observes: s0, agent_x, s2" in msg
    assert "robot reports: agent_x, agent_y, block_x, block_y, block_angle, coverage" in msg and "--obs-map" in msg
    with pytest.raises(MappingError, match="success signal 'reward' is not reported by the robot"):
        StateMapper(PUSHT_OBS, JOINTS, EXTRAS, progress_name="reward")
    with pytest.raises(MappingError, match="reports 'agent_x' twice"):
        StateMapper(["agent_x"], JOINTS, ("agent_x",))


def test_state_mapper_explicit_operator_mapping():
    robot_extras = ("bx", "by", "theta", "cov")
    obs_map = {"block_x": "bx", "block_y": "by", "block_angle": "theta", "coverage": "cov"}
    m = StateMapper(PUSHT_OBS, JOINTS, robot_extras, obs_map, progress_name="coverage")
    pos, ext = np.array([1, 2], np.float32), np.array([3, 4, 5, 0.75], np.float32)
    assert m(pos, ext).tolist() == [1, 2, 3, 4, 5] and m.progress(pos, ext) == 0.75
    assert m.sources == ("agent_x", "agent_y", "bx", "by", "theta")
    with pytest.raises(MappingError, match="obs map: 'nope' is not something the policy observes"):
        StateMapper(PUSHT_OBS, JOINTS, robot_extras, {**obs_map, "nope": "bx"}, progress_name="coverage")
    with pytest.raises(MappingError, match="obs map: 'zz' is not reported by the robot"):
        StateMapper(PUSHT_OBS, JOINTS, robot_extras, {**obs_map, "block_x": "zz"}, progress_name="coverage")


def test_state_mapper_refuses_mismatched_counts_instead_of_shifting():
    m = StateMapper(PUSHT_OBS, JOINTS, EXTRAS, progress_name="coverage")
    with pytest.raises(ValueError, match="1 joint positions and 4 extras; the device declared 2 and 4"):
        m(np.array([1.0], np.float32), np.array([3, 4, 5, 0.5], np.float32))  # one joint short: not shifted
    with pytest.raises(ValueError, match="declared 2 and 4"):
        m(np.array([1.0, 2.0], np.float32), np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="declared 2 and 4"):  # a short State has no trustworthy progress
        m.progress(np.array([1.0, 2.0], np.float32), np.zeros(3, np.float32))


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
