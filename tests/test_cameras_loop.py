"""The control loop with a camera: frames paired with States by time, stale/frozen/stopped/backwards/
malformed cameras hold the robot (counted) and stop the run with exit 4, the summary reports the camera."""
from __future__ import annotations

import numpy as np
import pytest

from camera_fakes import SHAPE, LiveCamera, ScriptedCamera
from runtime.cameras import FrameStream
from runtime.loop import LoopConfig
from runtime.stats import summary_table
from test_loop import FakePolicy, FakeRobot, run_episodes


class ImagePolicy(FakePolicy):
    def __init__(self):
        super().__init__()
        self.manifest.obs.image_shape = [3, 96, 96]
        self.images = []

    def plan(self, obs_state, obs_image=None):
        assert obs_image is not None and obs_image.shape == (2, 3, 96, 96) and obs_image.dtype == np.uint8
        self.images.append(obs_image.copy())
        return super().plan(obs_state)


def run(camera, lockstep=True, max_steps=40, **cfg):
    policy, robot = ImagePolicy(), FakeRobot(lockstep=lockstep)
    stream = FrameStream(camera, SHAPE)
    try:
        config = LoopConfig(max_steps=max_steps, lockstep=lockstep, gc_freeze=False, switch_interval_s=None, **cfg)
        stats = run_episodes(policy, robot, config, camera=stream)
    finally:
        stream.close()
    return stats, policy, robot


def test_fresh_frames_reach_the_policy_paired_with_states():
    stats, policy, _ = run(LiveCamera(fps=200.0), max_steps=16)
    s = stats.summary()
    cam = s["camera"]
    assert stats.exit_code() == 0 and stats.counters.camera_holds == 0
    assert cam["name"] == "live-fake" and not cam["synthetic"] and cam["frames"] >= 16 and cam["drops"] == 0
    assert cam["frame_age_ms"]["n"] == 17  # 16 steps + the last State
    assert cam["frame_age_ms"]["max"] <= cam["max_age_ms"]
    # every plan saw camera frames (value = frame number), newest last, never one frame fed forever
    newest = [int(img[-1, 0, 0, 0]) for img in policy.images]
    assert len(newest) == 4 and all(b > a for a, b in zip(newest, newest[1:]))
    assert "camera: live-fake" in summary_table(s) and "SYNTHETIC" not in summary_table(s)


def test_a_camera_that_freezes_holds_the_robot_then_stops_the_run():
    stats, policy, robot = run(LiveCamera(fps=200.0, freeze_after=12), max_steps=200, camera_max_stale=4)
    s = stats.summary()
    assert stats.exit_code() == 4 and s["outcome"] == "stopped early"
    assert stats.stop_reason.startswith("camera: 4 ticks in a row without a usable frame (limit 4); last: camera "
                                        "frame 11 is ")
    assert stats.counters.camera_holds == 4 and s["camera"]["stale_holds"] == 4
    assert s["camera"]["holds_by_reason"] == {"stale": 4}
    assert stats.estop["requested"] and stats.estop["confirmed"]
    rows = [r.source for r in stats.step_log.rows]
    assert rows[-3:] == ["camera-hold"] * 3  # held; the 4th stale tick stopped the run (e-stop)
    assert all(int(img[-1, 0, 0, 0]) <= 11 for img in policy.images)
    assert "stale holds 4 (stale 4)" in summary_table(s)


def test_a_hiccup_is_held_and_counted_and_the_run_completes_with_exit_3():
    # a 0.25 s gap against a 0.1 s max age: a few holds (a loaded machine may add some), never 10 in a row
    stats, _, _ = run(LiveCamera(fps=200.0, pause_at=10, pause_s=0.25), max_steps=40, camera_max_stale=10)
    assert stats.stop_reason == "" and stats.episodes[0].steps == 40
    assert stats.counters.camera_holds >= 1 and stats.exit_code() == 3
    assert stats.summary()["camera"]["holds_by_reason"].get("stale", 0) >= 1


@pytest.mark.parametrize("camera, reason", [
    (LiveCamera(fps=200.0, repeat_after=10), "repeated"),           # same sequence number: frozen driver
    (LiveCamera(fps=200.0, backwards_after=10), "time went back"),  # timestamps jump back
])
def test_frozen_or_backwards_cameras_are_refused_then_stop_the_run(camera, reason):
    stats, _, _ = run(camera, max_steps=200)
    s = stats.summary()
    assert stats.exit_code() == 4 and stats.stop_reason.startswith("camera: 5 ticks in a row")
    assert s["camera"]["bad_frames"].get(reason, 0) >= 1


def test_a_camera_that_stops_stops_the_run():
    from runtime.cameras.frame import Frame
    import time
    frames = [lambda i=i: Frame(np.full(SHAPE, i, np.uint8), time.monotonic(), i) for i in range(8)]
    stats, _, _ = run(ScriptedCamera(frames, gap_s=0.005), max_steps=200)
    assert stats.exit_code() == 4 and "camera" in stats.stop_reason
    assert stats.summary()["camera"]["stopped"] == "script ended"
    assert "stopped: script ended" in summary_table(stats.summary())


def test_realtime_freeze_holds_and_stops_and_reports_ages():
    stats, _, robot = run(LiveCamera(fps=200.0, freeze_after=30), lockstep=False, max_steps=400,
                          camera_max_age_s=0.05)
    s = stats.summary()
    assert stats.exit_code() == 4 and stats.stop_reason.startswith("camera: 5 ticks in a row")
    assert s["camera"]["frame_age_ms"]["n"] > 5 and s["camera"]["frame_age_ms"]["p50"] < 50
    assert stats.counters.camera_holds >= 5


def test_synthetic_camera_is_named_loudly():
    from runtime.cameras.synthetic import SyntheticCamera
    stats, _, _ = run(SyntheticCamera(SHAPE, fps=200.0), max_steps=8)
    table = summary_table(stats.summary())
    assert stats.summary()["camera"]["synthetic"] is True
    assert "camera: synthetic -- SYNTHETIC FRAMES, NOT A CAMERA" in table


def test_a_legacy_source_with_wrong_frames_is_held_not_a_traceback():
    class Hostile:  # only latest(): the FrameSource of runtime.sensors, giving a wrong shape
        def latest(self):
            return np.zeros((10, 10, 3), np.uint8)

    policy, robot = ImagePolicy(), FakeRobot(lockstep=True)
    stats = run_episodes(policy, robot, LoopConfig(max_steps=50, lockstep=True), camera=Hostile())
    assert stats.exit_code() == 4 and "frame shape is [10, 10, 3], the policy sees [96, 96, 3]" in stats.stop_reason
    assert policy.images == []
