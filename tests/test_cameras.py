"""runtime.cameras: the registry and its options, frame checks, FrameStream, FrameMonitor, and each
source (picamera2 and PyAV through stand-ins with their APIs, recorded files, simulated, synthetic)."""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import pytest

from camera_fakes import (SHAPE, FakeContainer, FakeVideoFrame, LiveCamera, ScriptedCamera, install_fake_picamera2,
                          pixels)
from runtime import cameras
from runtime.cameras import (CameraContext, CameraSpecError, Frame, FrameMonitor, FrameStream, build_camera_settings,
                             frame_problem, open_stream)
from runtime.cameras.frame import FrameError
from runtime.cameras.recorded import EndOfFrames, RecordedConfig
from runtime.cameras.v4l2 import V4L2Camera, V4L2Config

CTX = CameraContext(SHAPE, period_s=0.1)


def wait_for(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return False


# ----------------------------------------------------------------------------- registry and options
def test_registry_has_every_source_and_options_come_from_fields():
    assert set(cameras.REGISTRY) == {"picamera2", "v4l2", "simulated", "recorded", "synthetic"}
    p = argparse.ArgumentParser()
    cameras.add_camera_arguments(p)
    args = p.parse_args(["--camera", "v4l2", "--camera.device", "/dev/video2", "--camera.fps", "15"])
    s = build_camera_settings(args.camera, cameras.camera_cli_values(args))
    assert isinstance(s, V4L2Config) and s.device == "/dev/video2" and s.fps == 15.0
    assert s.options() == {"video_size": "640x480", "framerate": "15"}
    assert isinstance(build_camera_settings("picamera", {}), cameras.Picamera2Config)  # the old name
    assert build_camera_settings("standin", {}).SYNTHETIC


@pytest.mark.parametrize("name, options, message", [
    ("webcam", {}, "unknown camera 'webcam': use one of picamera2, v4l2, simulated, recorded, synthetic"),
    ("v4l2", {"path": "x.npz"}, "--camera.path does not apply to a v4l2 camera (its fields: device, width"),
    ("v4l2", {"fps": "nan"}, "camera.fps must be a finite number > 0 and at most 1000, got nan"),
    ("v4l2", {"fps": "-1"}, "camera.fps must be a finite number > 0"),
    ("v4l2", {"width": "1e9"}, "--camera.width takes an integer, got '1e9'"),
    ("v4l2", {"width": "99999"}, "camera.width must be in 2..8192, got 99999"),
    ("v4l2", {"device": "video0"}, "camera.device must be a device path under /dev/, got 'video0'"),
    ("v4l2", {"clock": "gps"}, "camera.clock must be one of ffmpeg, arrival, got 'gps'"),
    ("picamera2", {"clock": "utc"}, "camera.clock must be one of monotonic, boottime, got 'utc'"),
    ("recorded", {"loop": "maybe"}, "--camera.loop takes true or false, got 'maybe'"),
    ("recorded", {"speed": "inf"}, "camera.speed must be a finite number > 0"),
    ("simulated", {"supersample": "0"}, "camera.supersample must be in 1..8, got 0"),
    ("synthetic", {"fps": "x" * 2000}, "value of 2000 characters is too long"),
])
def test_bad_camera_names_and_values_are_one_line(name, options, message):
    with pytest.raises(CameraSpecError) as e:
        build_camera_settings(name, options)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_camera_option_is_named_before_parsing():
    msg = cameras.unknown_camera_options(["pkg", "--camera", "v4l2", "--camera.devcie=/dev/video0"])
    assert msg.startswith("unknown camera option --camera.devcie (camera fields: ")
    assert cameras.unknown_camera_options(["--camera.fps", "3"]) is None


# ----------------------------------------------------------------------------- frame checks
@pytest.mark.parametrize("frame, message", [
    (np.zeros(SHAPE, np.uint8), "the camera gave a ndarray, not a Frame"),
    (Frame(np.zeros((96, 95, 3), np.uint8), 1.0, 0), "frame shape is [96, 95, 3], the policy sees [96, 96, 3]"),
    (Frame(np.zeros((96, 96), np.uint8), 1.0, 0), "frame shape is [96, 96]"),
    (Frame(np.zeros(SHAPE, np.float32), 1.0, 0), "frame pixels are float32, expected uint8"),
    (Frame([[0]], 1.0, 0), "frame pixels are a list, not an array"),
    (Frame(np.zeros(SHAPE, np.uint8), math.nan, 0), "frame timestamp is nan, not a finite number"),
    (Frame(np.zeros(SHAPE, np.uint8), math.inf, 0), "frame timestamp is inf"),
    (Frame(np.zeros(SHAPE, np.uint8), "now", 0), "frame timestamp is 'now'"),
    (Frame(np.zeros(SHAPE, np.uint8), True, 0), "frame timestamp is True"),
    (Frame(np.zeros(SHAPE, np.uint8), 1.0, 1.5), "frame sequence number is 1.5, not an integer"),
])
def test_frame_problems(frame, message):
    assert frame_problem(frame, SHAPE).startswith(message)
    assert frame_problem(Frame(np.zeros(SHAPE, np.uint8), 1.0, 0), SHAPE) is None


def test_bgr_to_rgb_and_refusals():
    from runtime.cameras.frame import bgr_to_rgb
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 10  # blue
    bgr[..., 2] = 200  # red
    rgb = bgr_to_rgb(bgr)
    assert rgb[0, 0].tolist() == [200, 0, 10]
    xbgr = np.concatenate([bgr, np.full((2, 2, 1), 255, np.uint8)], axis=2)  # XRGB8888: B, G, R, X
    assert bgr_to_rgb(xbgr)[0, 0].tolist() == [200, 0, 10]
    with pytest.raises(FrameError, match=r"\[2, 2, 2\] uint8"):
        bgr_to_rgb(np.zeros((2, 2, 2), np.uint8))


# ----------------------------------------------------------------------------- FrameStream
def test_stream_refuses_bad_frames_counts_drops_and_pairs_by_time():
    good = [Frame(pixels(i), 10.0 + i, i) for i in range(3)]
    items = [
        good[0],
        Frame(np.zeros((10, 10, 3), np.uint8), 10.5, 1),   # wrong shape
        Frame(np.zeros(SHAPE, np.float64), 10.5, 1),       # wrong dtype
        Frame(pixels(9), math.nan, 1),                     # non-finite timestamp
        good[1],
        Frame(pixels(9), 11.5, 1),                         # repeated sequence number (a frozen camera)
        Frame(pixels(9), 10.9, 2),                         # time went backwards
        RuntimeError("usb hiccup"),                        # a read error: counted, read again
        Frame(pixels(5), 15.0, 5),                         # frames 2..4 dropped by the source
    ]
    s = FrameStream(ScriptedCamera(items), SHAPE)
    try:
        assert wait_for(lambda: s.stopped)
        assert s.frames == 3 and s.drops == 3 and s.errors == 1
        assert s.bad == {"malformed": 3, "repeated": 1, "time went back": 1}
        assert s.frame_at(10.99).seq == 0 and s.frame_at(11.0).seq == 1 and s.frame_at(100.0).seq == 5
        assert s.frame_at(9.0) is None  # nothing captured at or before that time
        d = s.as_dict()
        assert d["stopped"] == "script ended" and d["name"] == "scripted" and not d["synthetic"]
        assert d["fps"] == pytest.approx(2 / 5.0)
    finally:
        s.close()


def test_stream_without_a_usable_first_frame_is_one_line():
    with pytest.raises(CameraSpecError) as e:
        FrameStream(ScriptedCamera([Frame(np.zeros((1, 1, 3), np.uint8), 1.0, 0)]), SHAPE, first_frame_timeout_s=1.0)
    assert "gave no usable frame within 1 s (script ended)" in str(e.value)
    with pytest.raises(RuntimeError):  # also a RuntimeError, for code written against runtime.sensors
        FrameStream(ScriptedCamera([], then_freeze=True), SHAPE, first_frame_timeout_s=0.05)


# ----------------------------------------------------------------------------- FrameMonitor
def test_monitor_holds_stale_future_repeated_missing_and_malformed():
    m = FrameMonitor(max_age_s=0.2, max_repeat=2, max_stale=3, shape=SHAPE)
    f = Frame(pixels(0), 100.0, 7)
    assert m.check(f, 100.1)                    # 100 ms old: fine
    assert m.check(f, 100.15)                   # used twice: still allowed
    assert not m.check(f, 100.16)               # a third time: held
    assert "camera frame 7 used for 3 ticks in a row (limit 2)" == m.last_error
    assert not m.check(Frame(pixels(1), 100.0, 8), 100.5)
    assert m.last_error == "camera frame 8 is 500 ms old (limit 200 ms)"
    assert not m.exhausted
    assert not m.check(Frame(pixels(2), 101.0, 9), 100.5)
    assert "dated 500 ms in the future" in m.last_error
    assert m.exhausted and m.stop_reason().startswith("camera: 3 ticks in a row without a usable frame (limit 3)")
    assert m.check(Frame(pixels(3), 100.6, 10), 100.6) and m.in_row == 0 and not m.exhausted
    assert not m.check(None, 100.7) and m.by_reason["missing"] == 1
    assert not m.check(Frame(np.zeros((2, 2, 3), np.uint8), 100.7, 11), 100.7)
    assert m.by_reason == {"repeated": 1, "stale": 1, "future": 1, "missing": 1, "malformed": 1} and m.holds == 5
    assert m.as_dict()["stale_holds"] == 5 and len(m.ages_s) == 6  # a malformed frame has no age


def test_default_max_age_is_two_periods_with_a_floor():
    assert cameras.default_max_age(0.1) == pytest.approx(0.2)
    assert cameras.default_max_age(0.001) == pytest.approx(0.1)


# ----------------------------------------------------------------------------- recorded
def write_npz(path, n=4, shape=SHAPE, stamps=None, **extra):
    frames = np.stack([pixels(i, shape) for i in range(n)]) if n else np.zeros((0, *shape), np.uint8)
    stamps = np.arange(n) * 0.01 + 5.0 if stamps is None else stamps
    np.savez(path, frames=frames, timestamps=stamps, **extra)
    return path


def test_recorded_replays_frames_at_their_rate_then_stops(tmp_path):
    path = write_npz(tmp_path / "f.npz", n=4)
    cam = RecordedConfig(path=str(path)).open(CTX)
    got = [cam.read() for _ in range(4)]
    assert [f.seq for f in got] == [0, 1, 2, 3]
    assert all(np.array_equal(f.pixels, pixels(i)) for i, f in enumerate(got))
    assert np.allclose(np.diff([f.t_capture for f in got]), 0.01)  # the recorded spacing, on the monotonic clock
    with pytest.raises(EndOfFrames, match="the recording ended after 4 frames"):
        cam.read()
    looped = RecordedConfig(path=str(path), loop=True, speed=100.0).open(CTX)
    seqs = [looped.read().seq for _ in range(6)]
    assert seqs == [0, 1, 2, 3, 4, 5]


def test_recorded_other_size_is_refused_unless_resize(tmp_path):
    path = write_npz(tmp_path / "big.npz", n=2, shape=(120, 160, 3))
    with pytest.raises(CameraSpecError, match=r"recorded frames are 120x160, the policy sees 96x96 \(--camera.resize"):
        RecordedConfig(path=str(path)).open(CTX)
    assert RecordedConfig(path=str(path), resize=True).open(CTX).read().pixels.shape == SHAPE


@pytest.mark.parametrize("make, message", [
    (lambda p: write_npz(p, n=3, stamps=np.arange(4.0)), "3 frames but 4 timestamps"),
    (lambda p: write_npz(p, n=3, stamps=np.array([0.0, math.nan, 2.0])), "timestamp 1 is nan"),
    (lambda p: write_npz(p, n=3, stamps=np.array([0.0, math.inf, 2.0])), "timestamp 1 is inf"),
    (lambda p: write_npz(p, n=3, stamps=np.array([0.0, 2.0, 1.0])), "timestamps must increase: timestamp 2 is 1"),
    (lambda p: write_npz(p, n=3, stamps=np.array([0.0, 0.0, 1.0])), "timestamps must increase"),
    (lambda p: write_npz(p, n=0), "0 frames (must be 1..10000000)"),
    (lambda p: np.savez(p, frames=np.zeros((2, 96, 96, 3), np.float32), timestamps=np.arange(2.0)),
     "frames must be uint8, got float32"),
    (lambda p: np.savez(p, frames=np.zeros((2, 96, 96), np.uint8), timestamps=np.arange(2.0)),
     "frames must be [N, H, W, 3], got [2, 96, 96]"),
    (lambda p: np.savez(p, frames=np.zeros((2, 96, 96, 3), np.uint8), timestamps=np.array(["a", "b"])),
     "timestamps must be a 1-D array of numbers"),
    (lambda p: np.savez(p, frames=np.zeros((2, 96, 96, 3), np.uint8)), "no array 'timestamps' (it has: frames)"),
    (lambda p: np.savez(p, frames=np.array([{"x": 1}], dtype=object), timestamps=np.arange(1.0)),
     "cannot read it (ValueError"),
])
def test_hostile_recordings_are_one_line(tmp_path, make, message):
    path = tmp_path / "h.npz"
    make(path)
    with pytest.raises(CameraSpecError) as e:
        RecordedConfig(path=str(path)).open(CTX)
    assert message in str(e.value) and "\n" not in str(e.value) and str(path) in str(e.value)


def test_truncated_recording_and_wrong_paths_are_one_line(tmp_path):
    path = write_npz(tmp_path / "t.npz", n=4)
    data = path.read_bytes()
    for cut in (len(data) // 2, 30, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(CameraSpecError) as e:
            RecordedConfig(path=str(path)).open(CTX)
        assert "cannot read it" in str(e.value) and "\n" not in str(e.value)
    for bad, msg in ((tmp_path / "none.npz", "no such file"), (tmp_path, "expected a .npz or .zarr file")):
        with pytest.raises(CameraSpecError, match=msg):
            RecordedConfig(path=str(bad)).open(CTX)
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(CameraSpecError, match="not a regular file"):
        RecordedConfig(path=str(tmp_path / "dir.npz")).open(CTX)


def test_recorded_zarr(tmp_path):
    zarr = pytest.importorskip("zarr")
    g = zarr.open(str(tmp_path / "f.zarr"), mode="w")
    g["frames"] = np.stack([pixels(i) for i in range(3)])
    g["timestamps"] = np.array([1.0, 1.02, 1.04])
    cam = RecordedConfig(path=str(tmp_path / "f.zarr")).open(CTX)
    assert [int(cam.read().pixels[0, 0, 0]) for _ in range(3)] == [0, 1, 2]
    g2 = zarr.open(str(tmp_path / "g.zarr"), mode="w")
    g2["frames"] = np.stack([pixels(i) for i in range(3)])
    g2["timestamps"] = np.array([1.0, 1.02])
    with pytest.raises(CameraSpecError, match="3 frames but 2 timestamps"):
        RecordedConfig(path=str(tmp_path / "g.zarr")).open(CTX)


# ----------------------------------------------------------------------------- picamera2 (stand-in module)
def bgr_frame(r: int, g: int, b: int, shape=SHAPE) -> np.ndarray:
    a = np.zeros(shape, np.uint8)
    a[..., 0], a[..., 1], a[..., 2] = b, g, r  # RGB888 is B, G, R in memory
    return a


def test_picamera2_configures_from_the_manifest_and_gives_rgb_with_sensor_timestamps(monkeypatch):
    t0 = time.monotonic_ns()
    script = [(bgr_frame(200, 100, 10), {"SensorTimestamp": t0}),
              (bgr_frame(1, 2, 3), {"SensorTimestamp": t0 + 33_333_333}),
              (bgr_frame(4, 5, 6), {"SensorTimestamp": t0 + 100_000_000})]  # two frames dropped
    fake = install_fake_picamera2(monkeypatch, script)
    cam = build_camera_settings("picamera2", {"fps": "30"}).open(CTX)
    pc = fake.instances[0]
    assert pc.configured["main"] == {"size": (96, 96), "format": "RGB888"}
    assert pc.configured["controls"] == {"FrameDurationLimits": (33333, 33333)} and pc.started
    frames = [cam.read() for _ in range(3)]
    assert frames[0].pixels[0, 0].tolist() == [200, 100, 10]  # red first: the channels were reversed
    assert frames[1].pixels[5, 5].tolist() == [1, 2, 3] and frames[0].pixels.flags.c_contiguous
    assert frames[0].t_capture == pytest.approx(t0 / 1e9) and frames[1].t_capture - frames[0].t_capture == \
        pytest.approx(0.0333333, abs=1e-6)
    assert [f.seq for f in frames] == [0, 1, 3]
    assert pc.released == 3
    cam.close()
    assert pc.stopped and pc.closed


def test_picamera2_other_isp_size_is_fitted_and_metadata_is_checked(monkeypatch):
    t0 = time.monotonic_ns()
    script = [(np.zeros((96, 128, 4), np.uint8), {"SensorTimestamp": t0}),   # XRGB8888-like 4:3 frame
              (bgr_frame(1, 2, 3), {}),                                       # no SensorTimestamp
              (bgr_frame(1, 2, 3), {"SensorTimestamp": -5}),
              (None, {"SensorTimestamp": t0 + 1})]                            # make_array fails
    fake = install_fake_picamera2(monkeypatch, script)
    cam = build_camera_settings("picamera2", {"capture_width": "128", "capture_height": "96"}).open(CTX)
    assert fake.instances[0].configured["main"]["size"] == (128, 96)
    assert cam.read().pixels.shape == SHAPE
    with pytest.raises(FrameError, match="SensorTimestamp None, not a positive integer"):
        cam.read()
    with pytest.raises(FrameError, match="SensorTimestamp -5"):
        cam.read()
    with pytest.raises(RuntimeError, match="buffer lost"):
        cam.read()
    assert fake.instances[0].released == 4  # every request went back to libcamera, failed ones too


def test_picamera2_through_the_stream_and_the_old_name(monkeypatch):
    t0 = time.monotonic_ns()
    install_fake_picamera2(monkeypatch, [(bgr_frame(9, 8, 7), {"SensorTimestamp": t0 + i * 33_333_333})
                                         for i in range(5)])
    s = open_stream(build_camera_settings("picamera", {}), CTX)
    try:
        assert wait_for(lambda: s.frames == 5)
        assert s.latest_frame().pixels[0, 0].tolist() == [9, 8, 7] and s.label == "picamera2:0" and s.drops == 0
    finally:
        s.close()
    from runtime.sensors import PiCamera
    install_fake_picamera2(monkeypatch, [(bgr_frame(9, 8, 7), {"SensorTimestamp": t0})])
    assert PiCamera().read().pixels[0, 0].tolist() == [9, 8, 7]


def test_picamera2_missing_or_failing_is_one_line(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as off a Pi
    with pytest.raises(CameraSpecError, match="picamera2 is not available"):
        build_camera_settings("picamera2", {}).open(CTX)
    fake = install_fake_picamera2(monkeypatch, [])

    def boom(self, config):
        raise RuntimeError("Camera in Configured state trying acquire()\nrequiring state Available")
    monkeypatch.setattr(fake, "configure", boom)
    with pytest.raises(CameraSpecError) as e:
        build_camera_settings("picamera2", {}).open(CTX)
    assert "cannot start picamera2 camera 0 at 96x96 RGB888: Camera in Configured" in str(e.value)
    assert "\n" not in str(e.value) and fake.instances[-1].closed


# ----------------------------------------------------------------------------- v4l2 (stand-in PyAV container)
def test_v4l2_decodes_rgb_converts_wallclock_timestamps_and_counts_drops():
    wall = time.time()
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[..., 0] = 250  # red
    frames = [FakeVideoFrame(rgb, wall), FakeVideoFrame(rgb, wall + 1 / 30), FakeVideoFrame(rgb, wall + 4 / 30)]
    seen = {}

    def opener(device, options):
        seen.update(device=device, options=options)
        return FakeContainer(frames)
    cfg = V4L2Config(device="/dev/video3", input_format="mjpeg")
    cam = V4L2Camera(SHAPE, cfg, open_fn=opener)
    assert seen == {"device": "/dev/video3", "options": {"video_size": "640x480", "framerate": "30",
                                                         "input_format": "mjpeg"}}
    got = [cam.read() for _ in range(3)]
    assert got[0].pixels.shape == SHAPE and got[0].pixels[0, 0].tolist() == [250, 0, 0]
    assert abs(got[0].t_capture - time.monotonic()) < 1.0  # wall clock put back on the monotonic clock
    assert [f.seq for f in got] == [0, 1, 4]
    with pytest.raises(EOFError, match="stopped delivering"):
        cam.read()
    cam.close()


def test_v4l2_without_timestamps_and_failures_are_one_line():
    rgb = np.zeros((48, 64, 3), np.uint8)
    cam = V4L2Camera(SHAPE, V4L2Config(), open_fn=lambda d, o: FakeContainer([FakeVideoFrame(rgb, None)]))
    with pytest.raises(FrameError, match="no usable timestamp \\(None\\); use --camera.clock arrival"):
        cam.read()
    arr = V4L2Camera(SHAPE, V4L2Config(clock="arrival"),
                     open_fn=lambda d, o: FakeContainer([FakeVideoFrame(rgb, math.nan)]))
    assert arr.read().pixels.shape == SHAPE
    gray = V4L2Camera(SHAPE, V4L2Config(clock="arrival"),
                      open_fn=lambda d, o: FakeContainer([FakeVideoFrame(np.zeros((4, 4), np.uint8), 1.0)]))
    with pytest.raises(FrameError, match=r"decoded frame has shape \[4, 4\]"):
        gray.read()

    def fail(device, options):
        raise OSError(2, "No such file or directory: '/dev/video9'")
    with pytest.raises(CameraSpecError) as e:
        V4L2Camera(SHAPE, V4L2Config(device="/dev/video9"), open_fn=fail)
    assert str(e.value).startswith("cannot open /dev/video9 (video_size=640x480, framerate=30): ")


def test_v4l2_real_device_opens_through_pyav():
    pytest.importorskip("av")
    if not os.path.exists("/dev/video0"):
        pytest.skip("no /dev/video0 on this machine")
    s = open_stream(V4L2Config(), CTX, first_frame_timeout_s=5.0)
    try:
        assert s.latest_frame().pixels.shape == SHAPE
    finally:
        s.close()


def test_v4l2_missing_device_through_pyav_is_one_line():
    pytest.importorskip("av")
    with pytest.raises(CameraSpecError) as e:
        V4L2Config(device="/dev/imle-no-such-camera").open(CTX)
    assert e.value.args[0].startswith("cannot open /dev/imle-no-such-camera") and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- simulated and synthetic
class _Robot:
    def __init__(self, caps):
        from firmware_bridge.protocol import State
        self.State = State
        self.capabilities = caps
        self.pos = [100.0, 100.0]
        self.n = 0

    def latest_state(self):
        self.n += 1
        return self.State(0, np.array(self.pos, np.float32), np.array([256, 256, 0.5, 0.1], np.float32),
                          seq=self.n, rx_time=time.monotonic())

    def wait_state(self, after_seq=None, timeout=1.0):
        return self.latest_state()


def test_simulated_camera_draws_what_the_robot_reports():
    pytest.importorskip("PIL")
    from test_loop import pusht_caps
    robot = _Robot(pusht_caps())
    cam = build_camera_settings("simulated", {"fps": "1000"}).open(
        CameraContext(SHAPE, 0.1, robot=robot, capabilities=robot.capabilities))
    a = cam.read()
    robot.pos = [400.0, 400.0]
    b = cam.read()
    assert a.pixels.shape == SHAPE and a.pixels.dtype == np.uint8 and (a.seq, b.seq) == (0, 1)
    assert not np.array_equal(a.pixels, b.pixels)  # the pusher moved in the picture
    blue = np.array([65, 105, 225])
    def has_agent_near(img, x, y):
        r, c = int(y / 512 * 96), int(x / 512 * 96)
        patch = img[max(0, r - 2):r + 3, max(0, c - 2):c + 3].reshape(-1, 3).astype(int)
        return (np.abs(patch - blue).sum(axis=1) < 60).any()
    assert has_agent_near(a.pixels, 100, 100) and has_agent_near(b.pixels, 400, 400)
    assert not has_agent_near(b.pixels, 100, 100)


def test_simulated_camera_refuses_a_robot_without_the_plant():
    from test_loop import pusht_caps
    caps = pusht_caps(joints=("j0", "j1"), extras=())
    with pytest.raises(CameraSpecError) as e:
        build_camera_settings("simulated", {}).open(CameraContext(SHAPE, robot=_Robot(caps), capabilities=caps))
    assert str(e.value) == ("the simulated camera draws the Push-T plant; the robot does not report agent_x, agent_y, "
                            "block_x, block_y, block_angle (joints: j0, j1; extras: none)")
    with pytest.raises(CameraSpecError, match="needs a connected robot"):
        build_camera_settings("simulated", {}).open(CTX)


def test_synthetic_is_labelled_synthetic():
    s = open_stream(build_camera_settings("synthetic", {"fps": "200"}), CTX)
    try:
        assert s.synthetic and s.as_dict()["synthetic"] and s.latest_frame().pixels.shape == SHAPE
    finally:
        s.close()


def test_live_camera_stream_sees_freeze_repeat_and_backwards_time():
    for cam, key in ((LiveCamera(repeat_after=2), "repeated"), (LiveCamera(backwards_after=2), "time went back")):
        s = FrameStream(cam, SHAPE)
        try:
            assert wait_for(lambda: s.bad.get(key, 0) >= 3)
            assert s.frames == 2
        finally:
            s.close()
