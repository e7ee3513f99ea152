"""The camera path through the real loop and link: the simulated camera draws the emulated Push-T plant
(its own process, over a pty) from the States the robot reports, the loop pairs each State with its
frame, and a camera that freezes mid-run holds the robot and stops the run (exit 4, e-stop confirmed).
The policy is a small numpy stand-in that sees images (an ONNX image package is covered by the
imle-run test below when one can be exported)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("gym_pusht")
pytest.importorskip("PIL")

from runtime import robots  # noqa: E402
from runtime.cameras import CameraContext, SimulatedConfig, open_stream  # noqa: E402
from runtime.loop import ControlLoop, LoopConfig  # noqa: E402
from runtime.stats import summary_table  # noqa: E402
from runtime.task_spec import StateObs, Success, TaskAction, TaskHorizons, TaskSpec  # noqa: E402

OBS = ("agent_x", "agent_y", "block_x", "block_y", "block_angle")
BLUE = np.array([65, 105, 225])


class ImagePolicy:
    """Moves the pusher a few px per step; keeps what it was given to plan from."""
    obs_horizon, pred_horizon, action_horizon, action_dim, state_dim = 2, 8, 4, 2, 5

    def __init__(self, period: float) -> None:
        spec = TaskSpec("camera-hil", period, TaskHorizons(2, 8, 4), StateObs("state", OBS),
                        TaskAction("action", ("target_x", "target_y"), ("agent_x", "agent_y")),
                        success=Success("coverage", 0.95))
        self.manifest = SimpleNamespace(obs=SimpleNamespace(state_names=list(OBS), image_shape=[3, 96, 96]),
                                        action=SimpleNamespace(names=["target_x", "target_y"], low=[0.0, 0.0],
                                                               high=[512.0, 512.0]),
                                        control=SimpleNamespace(period_s=period), task_spec=spec.to_dict(),
                                        get_task_spec=lambda: spec)
        self.seed = 0
        self.last_plan_info: dict = {}
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []

    def plan(self, obs_state, obs_image=None):
        assert obs_image is not None and obs_image.shape == (2, 3, 96, 96) and obs_image.dtype == np.uint8
        self.seen.append((obs_state.copy(), obs_image.copy()))
        toward = np.sign(256.0 - obs_state[-1, :2])
        return (obs_state[-1, :2] + 3.0 * toward * np.arange(1, 9)[:, None]).astype(np.float32)

    def reset(self, seed=None):
        if seed is not None:
            self.seed = seed


def agent_drawn_at(img_chw: np.ndarray, x: float, y: float, tol_px: int = 3) -> bool:
    img = img_chw.transpose(1, 2, 0).astype(int)
    r, c = int(round(y / 512 * 96)), int(round(x / 512 * 96))
    patch = img[max(0, r - tol_px):r + tol_px + 1, max(0, c - tol_px):c + tol_px + 1].reshape(-1, 3)
    return bool((np.abs(patch - BLUE).sum(axis=1) < 60).any())


class Freezing:
    """Wraps a camera: after `after` frames it delivers nothing more (a camera that froze)."""

    def __init__(self, cam, after: int) -> None:
        self.cam, self.after, self.n = cam, after, 0
        self.label, self.synthetic = cam.label + " (freezes)", False

    def read(self):
        if self.n >= self.after:
            time.sleep(0.05)
            raise TimeoutError("no frame")  # a driver read timing out: counted as a read error
        self.n += 1
        return self.cam.read()

    def close(self) -> None:
        self.cam.close()


def run_loop(robot_spec: str, period: float, max_steps: int, freeze_after=None, **cfg):
    handle = robots.make_robot(robot_spec, period_s=period)
    stream = loop = None
    try:
        ctx = CameraContext((96, 96, 3), period, handle.lockstep, handle.robot, handle.capabilities)
        if freeze_after is None:
            stream = open_stream(SimulatedConfig(), ctx)
        else:
            from runtime.cameras import FrameStream
            stream = FrameStream(Freezing(SimulatedConfig().open(ctx), freeze_after), (96, 96, 3))
        policy = ImagePolicy(period)
        config = LoopConfig(episodes=1, base_seed=3, max_steps=max_steps, period_s=period, lockstep=handle.lockstep,
                            gc_freeze=False, **cfg)
        loop = ControlLoop(policy, handle.robot, config, handle.capabilities, stream)
        stats = loop.run()
        return stats, policy
    finally:
        if loop is not None:
            loop.close()
        if stream is not None:
            stream.close()
        handle.close()


def test_lockstep_frames_show_the_state_they_are_paired_with():
    stats, policy = run_loop("emulator-lockstep", 0.1, 24)
    assert stats.exit_code() == 0 and stats.counters.camera_holds == 0
    assert len(policy.seen) == 6
    for obs_state, obs_image in policy.seen:
        for t in range(2):  # both frames of the history show the pusher where that row's State put it
            assert agent_drawn_at(obs_image[t], *obs_state[t, :2], tol_px=1)
    cam = stats.summary()["camera"]
    assert cam["name"] == "simulated" and not cam["synthetic"] and cam["stale_holds"] == 0


def test_realtime_simulated_camera_over_the_emulator():
    stats, policy = run_loop("emulator", 0.05, 40)
    s = stats.summary()
    cam = s["camera"]
    assert stats.stop_reason == "" and stats.exit_code() in (0, 3), summary_table(s)
    assert cam["frames"] >= 20 and cam["fps"] > 10 and cam["frame_age_ms"]["n"] >= 40
    assert policy.seen and all(agent_drawn_at(img[-1], *st[-1, :2], tol_px=4) for st, img in policy.seen)
    assert "camera: simulated" in summary_table(s)


def test_realtime_camera_freezing_mid_run_holds_then_stops_exit_4():
    stats, policy = run_loop("emulator", 0.05, 400, freeze_after=20)
    s = stats.summary()
    assert stats.exit_code() == 4, summary_table(s)
    assert stats.stop_reason.startswith("camera: 5 ticks in a row without a usable frame (limit 5); last: camera "
                                        "frame 19 is ")
    assert stats.counters.camera_holds >= 5 and s["camera"]["stale_holds"] >= 5
    assert stats.estop["requested"] and stats.estop["confirmed"]  # the emulated device confirmed the e-stop
    assert s["camera"]["errors"] >= 1 and "no frame" in s["camera"]["last_error"]
    table = summary_table(s)
    assert "stale holds" in table and "STOPPED: camera: 5 ticks in a row" in table
