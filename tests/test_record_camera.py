"""imle-record's camera (#21): frames paired with their State by capture time (FrameStream.frame_at),
a stale / frozen / missing frame ends the episode unstored (counted), --camera NAME --camera.FIELD as
in imle-run, and the review and final lines show the camera's fps and stale count."""
import re
import threading
import time
import tomllib

import numpy as np
import pytest

pytest.importorskip("zarr")

from firmware_bridge.protocol import Capabilities, CapabilityFlags, State  # noqa: E402
from runtime.cameras import FrameStream  # noqa: E402
from runtime.cameras.frame import Frame  # noqa: E402
from runtime.record.buffer import ReplayBufferWriter  # noqa: E402
from runtime.record.cli import _array_specs  # noqa: E402
from runtime.record.session import RecordConfig, Recorder  # noqa: E402
from runtime.record.sources import ScriptedSource  # noqa: E402
from runtime.task_spec import TaskSpec  # noqa: E402
from trainer.data import load_replay_buffer  # noqa: E402

SHAPE = (4, 6, 3)
TASK = """[task]
name = "reach_img"
period_s = 0.05

[horizons]
obs = 2
pred = 8
action = 4

[observation.state]
key = "state"
names = ["j1", "j2", "tick"]

[[observation.images]]
key = "img"
shape = [4, 6, 3]
camera = "top"

[action]
key = "action"
names = ["target_j1", "target_j2"]
joints = ["j1", "j2"]
low = [-1.0, -1.0]
high = [1.0, 1.0]
"""


class Arm:
    """A lock-step simulated arm; every State carries its count as the extra `tick` and wakes the camera."""

    def __init__(self):
        self.caps = Capabilities("fake", ("j1", "j2"), np.array([-1, -1], np.float32), np.array([1, 1], np.float32),
                                 np.array([0, 0], np.float32), extra_names=("tick",),
                                 flags=CapabilityFlags.SIMULATED | CapabilityFlags.LOCKSTEP)
        self.pos = np.zeros(2, np.float32)
        self.healthy, self.stats = True, None
        self.count, self.t = 0, time.monotonic()
        self.cond = threading.Condition()
        self.commands = []

    def _state(self):
        with self.cond:
            self.count += 1
            self.t = time.monotonic()
            self.cond.notify_all()
            return State(0, self.pos.copy(), extras=np.array([self.count], np.float32), seq=self.count,
                         rx_time=self.t)

    def connect(self):
        return self.caps

    def latest_state(self):
        return self._state()

    def wait_state(self, after_seq=None, timeout=1.0):
        return self._state()

    def send_command(self, targets, valid=True):
        self.pos = np.asarray(targets, np.float32).copy()
        self.commands.append(self.pos.copy())
        return 1

    def reset_plant(self, seed, initial_state=None, timeout=1.0, retries=3):
        self.pos = np.zeros(2, np.float32)
        return self._state()

    def step(self, targets, timeout=1.0):
        self.send_command(targets)
        return self._state()

    def estop(self, engage=True):
        return True

    def take_faults(self):
        return []

    def close(self):
        pass


class ArmCamera:
    """Draws one frame per State of the arm (pixel value = the State's tick), captured at its receive time,
    like the simulated camera. After `freeze_at` States it freezes: the driver repeats its last frame."""
    label, synthetic, shape = "arm-camera", False, SHAPE

    def __init__(self, arm, freeze_at=None):
        self.arm, self.freeze_at = arm, freeze_at
        self.seen, self.last, self.closed = -1, None, False  # frame 0: the scene before the first State

    def read(self):
        with self.arm.cond:
            while self.arm.count <= self.seen and not self.closed:
                self.arm.cond.wait(0.05)
            if self.closed:
                raise EOFError("closed")
            if self.freeze_at is not None and self.arm.count > self.freeze_at and self.last is not None:
                self.seen = self.arm.count
                return self.last  # a frozen driver: the same frame (sequence number) again
            self.seen = self.arm.count
            self.last = Frame(np.full(SHAPE, self.arm.count % 256, np.uint8), self.arm.t, self.arm.count)
            return self.last

    def close(self):
        self.closed = True


def _task():
    return TaskSpec.from_dict(tomllib.loads(TASK))


def _source():
    return ScriptedSource(lambda task, seed: (lambda obs: [0.01 * obs.step, 0.0]), "test")


def test_each_recorded_frame_is_the_frame_of_its_state():
    arm = Arm()
    stream = FrameStream(ArmCamera(arm), SHAPE)
    try:
        rec = Recorder(arm, arm.caps, _task(), RecordConfig(0.05, max_steps=6, lockstep=True), stream)
        res = rec.record_episode(_source(), 0, 0)
    finally:
        stream.close()
    assert res.ended == "max_steps" and res.steps == 6 and res.complete
    ticks = res.data["state"][:, 2].astype(int)
    assert len(set(ticks.tolist())) == 6  # a new State every tick...
    np.testing.assert_array_equal(res.data["img"][:, 0, 0, 0], ticks % 256)  # ...recorded with its own frame
    assert res.camera_stale == 0 and res.camera_problem == "" and np.isfinite(res.camera_fps)


def test_a_freezing_camera_discards_the_episode_and_leaves_the_buffer_intact(tmp_path):
    arm = Arm()
    cam = ArmCamera(arm)
    stream = FrameStream(cam, SHAPE)
    task = _task()
    out = tmp_path / "b.zarr"
    try:
        rec = Recorder(arm, arm.caps, task, RecordConfig(0.05, max_steps=5, lockstep=True,
                                                         camera_max_age_s=0.05), stream)
        first = rec.record_episode(_source(), 0, 0)
        assert first.complete
        with ReplayBufferWriter(out, _array_specs(task)) as w:
            w.append_episode(first.data, 0)
        cam.freeze_at = arm.count + 3  # the camera freezes three States into the next episode
        res = rec.record_episode(_source(), 1, 1)
    finally:
        stream.close()
    assert not res.complete and res.camera_stale == 1 and rec.camera_stale == 1
    # frozen: its last frame ages past the limit, or is used for more than max_repeat ticks, whichever is first
    assert re.match(r"camera (stale|repeated): camera frame \d+ (is \d+ ms old \(limit 50 ms\)|used for 4 ticks)",
                    res.ended), res.ended
    assert stream.bad.get("repeated", 0) >= 1  # the stream refused the driver's repeats
    # no frame from after the freeze was recorded as a new one: at most max_repeat uses of the last frame
    imgs = res.data["img"][:, 0, 0, 0]
    assert np.sum(imgs == imgs[-1]) <= 3
    rb = load_replay_buffer(out, keys=("state", "action", "img"))
    assert rb.episode_ends.tolist() == [5]
    np.testing.assert_array_equal(rb.data["img"], first.data["img"])


class LateCamera:
    """Frames whose capture times lie ahead of the monotonic clock (a camera on another clock)."""
    label, synthetic, shape = "late", False, SHAPE

    def __init__(self):
        self.i = 0

    def read(self):
        time.sleep(0.01)
        self.i += 1
        return Frame(np.zeros(SHAPE, np.uint8), time.monotonic() + 5.0, self.i)

    def close(self):
        pass


class StoppingCamera:
    """Three frames at 100 fps, then nothing (a camera that stopped)."""
    label, synthetic, shape = "stopping", False, SHAPE

    def __init__(self):
        self.i = 0

    def read(self):
        if self.i >= 3:
            raise EOFError("the recording ended after 3 frames")
        time.sleep(0.01)
        self.i += 1
        return Frame(np.full(SHAPE, self.i, np.uint8), time.monotonic(), self.i)

    def close(self):
        pass


@pytest.mark.parametrize("camera, lockstep, repeat, reason", [
    (LateCamera, True, 3, "camera future: camera frame "),
    (StoppingCamera, False, 3, "camera repeated: camera frame 3 used for 4 ticks in a row (limit 3)"),
    (StoppingCamera, False, 1000, "camera stale: camera frame 3 is "),
])
def test_a_frame_that_cannot_be_trusted_ends_the_episode_unstored(camera, lockstep, repeat, reason):
    arm = Arm()
    stream = FrameStream(camera(), SHAPE)
    try:
        rec = Recorder(arm, arm.caps, _task(), RecordConfig(0.02, max_steps=200, lockstep=lockstep,
                                                            camera_max_repeat=repeat), stream)
        res = rec.record_episode(_source(), 0, 0)
    finally:
        stream.close()
    assert res.ended.startswith(reason) and not res.complete
    assert res.camera_stale == 1 and rec.camera_by_reason == {reason.split()[1].rstrip(":"): 1}
    assert res.steps < 200
    if res.steps:
        assert set(res.data["img"][:, 0, 0, 0].tolist()) <= {1, 2, 3}  # only real frames were recorded


@pytest.mark.parametrize("field, value", [("camera_max_age_s", 0.0), ("camera_max_age_s", float("nan")),
                                          ("camera_max_age_s", 61.0), ("camera_max_repeat", 0)])
def test_camera_limits_out_of_range_are_refused(field, value):
    arm = Arm()
    with pytest.raises(ValueError, match="camera max (age|repeat) must be"):
        Recorder(arm, arm.caps, _task(), RecordConfig(0.05, **{field: value}), ArmCamera(arm))


# ----------------------------------------------------------------------------- the command line
DEMOS = __import__("pathlib").Path(__file__).resolve().parent / "record_demos.py"
PUSHT_IMAGE = (__import__("pathlib").Path(__file__).resolve().parents[1] / "trainer" / "tasks"
               / "pusht-image.toml").read_text()
IMG = (96, 96, 3)


def _cli(tmp_path, out, *extra, task=PUSHT_IMAGE):
    pytest.importorskip("serial")
    pytest.importorskip("gym_pusht")  # the emulated Push-T plant: the one with a camera
    from runtime.record.cli import main
    t = tmp_path / "task.toml"
    t.write_text(task)
    return main(["--task", str(t), "--out", str(out), "--robot", "emulator-lockstep",
                 "--source", f"scripted:{DEMOS}:reach", "--review", "auto", "--max-steps", "5", *extra])


def test_cli_records_with_a_registry_camera_then_a_stopping_one_discards_and_keeps_the_buffer(tmp_path, capsys):
    out = tmp_path / "d.zarr"
    assert _cli(tmp_path, out, "--camera", "synthetic", "--camera.fps", "100") == 0
    cap = capsys.readouterr()
    assert "SYNTHETIC FRAMES, NOT A CAMERA" in cap.err
    review = [ln for ln in cap.out.splitlines() if ln.startswith("episode 0:")][0]
    assert ", camera " in review and " fps, stale 0" in review and "-> kept" in review
    assert "; camera synthetic: " in cap.out and "stale 0" in cap.out
    before = load_replay_buffer(out, keys=("state", "action", "img"))
    assert before.data["img"].shape == (5, *IMG) and before.data["img"].any()
    # a recorded camera with three frames at 30 fps: it stops within the next episode, which is discarded
    frames = tmp_path / "f.npz"
    np.savez(frames, frames=np.full((3, *IMG), 7, np.uint8), timestamps=np.arange(3) / 30.0)
    assert _cli(tmp_path, out, "--camera", "recorded", "--camera.path", str(frames), "--max-steps", "40") == 4
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if "discarded after" in ln]
    assert len(lines) == 1 and lines[0].endswith("not stored")
    assert re.search(r"camera (stale|repeated): camera frame 2 (is \d+ ms old|used for 4 ticks)", lines[0]), lines[0]
    assert "the camera stopped (the recording ended after 3 frames); recording ends" in cap.err
    assert "Traceback" not in cap.err
    assert re.search(r"stale 1 \((stale|repeated) 1; 1 episodes discarded\)", cap.out), cap.out
    after = load_replay_buffer(out, keys=("state", "action", "img"))
    assert after.episode_ends.tolist() == [5]
    np.testing.assert_array_equal(after.data["img"], before.data["img"])


@pytest.mark.parametrize("extra, err", [
    (("--camera", "nope"), "unknown camera 'nope': use one of picamera2, v4l2, simulated, recorded, synthetic"),
    (("--camera", "synthetic", "--camera.bogus", "1"), "unknown camera option --camera.bogus"),
    (("--camera", "synthetic", "--camera.fps", "nan"), "camera.fps"),
    (("--camera", "synthetic", "--camera.device", "/dev/video0"), "--camera.device does not apply to a synthetic"),
    (("--camera", "synthetic", "--camera-max-age", "inf"), "--camera-max-age must be a number of seconds"),
    (("--camera", "synthetic", "--camera-max-repeat", "0"), "--camera-max-repeat must be an integer"),
    ((), "records an image (img): give --camera NAME"),
])
def test_cli_camera_mistakes_are_one_line(tmp_path, capsys, extra, err):
    assert _cli(tmp_path, tmp_path / "d.zarr", *extra) == 2
    text = capsys.readouterr().err
    assert err in text and "Traceback" not in text and len(text.strip().splitlines()) == 1


def test_cli_a_state_task_refuses_a_camera_and_a_bad_recording_is_one_line(tmp_path, capsys):
    state_task = PUSHT_IMAGE[:PUSHT_IMAGE.index("[[observation.images]]")] + PUSHT_IMAGE[PUSHT_IMAGE.index("[action]"):]
    assert _cli(tmp_path, tmp_path / "s.zarr", "--camera", "synthetic", task=state_task) == 2
    assert "--camera synthetic: task pusht-image records no image; drop the camera options" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert _cli(tmp_path, tmp_path / "d.zarr", "--camera", "recorded", "--camera.path", str(bad)) == 2
    text = capsys.readouterr().err
    assert f"--camera.path {bad}: cannot read it" in text and "Traceback" not in text
    small = tmp_path / "small.npz"
    np.savez(small, frames=np.zeros((3, 5, 6, 3), np.uint8), timestamps=np.arange(3) / 30.0)
    assert _cli(tmp_path, tmp_path / "d.zarr", "--camera", "recorded", "--camera.path", str(small)) == 2
    text = capsys.readouterr().err
    assert "recorded frames are 5x6, the policy sees 96x96 (--camera.resize true" in text and "Traceback" not in text


def test_cli_simulated_camera_records_the_plant_it_draws(tmp_path, capsys):
    out = tmp_path / "sim.zarr"
    assert _cli(tmp_path, out, "--camera", "simulated") == 0
    cap = capsys.readouterr()
    assert "camera: simulated" in cap.err and "SYNTHETIC" not in cap.err
    assert re.search(r"episode 0: .*, camera \d+\.\d fps, stale 0 -> kept", cap.out), cap.out
    rb = load_replay_buffer(out, keys=("state", "action", "img"))
    img = rb.data["img"]
    assert img.shape == (5, *IMG) and len({im.tobytes() for im in img}) > 1  # the plant, drawn as it moved
