"""imle-run's camera options: an image package needs an explicit camera, every camera mistake is one
line with exit 2 before the robot is driven (the policy is a stand-in; no robot is connected)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from runtime import cli


def fake_policy(image_shape):
    return SimpleNamespace(manifest=SimpleNamespace(obs=SimpleNamespace(image_shape=image_shape),
                                                    control=SimpleNamespace(period_s=0.1)))


@pytest.fixture
def run_main(monkeypatch, tmp_path, capsys):
    connected = []

    def go(argv, image_shape=(3, 96, 96)):
        monkeypatch.setattr(cli, "_load_policy", lambda args: fake_policy(image_shape))
        from runtime import robots
        monkeypatch.setattr(robots, "make_robot", lambda *a, **k: connected.append(a) or pytest.fail("connected"))
        code = cli.main([str(tmp_path / "pkg"), "--robot", "emulator", *argv])
        err = capsys.readouterr().err.strip()
        return code, err
    yield go
    assert connected == []  # no camera mistake ever reaches the robot


@pytest.mark.parametrize("argv, shape, message", [
    ([], (3, 96, 96), "package pkg sees a camera (3x96x96 frames): give --camera NAME (picamera2, v4l2, simulated, "
                      "recorded, synthetic); --camera synthetic runs it on fake frames"),
    (["--camera", "webcam"], (3, 96, 96), "unknown camera 'webcam': use one of picamera2, v4l2, simulated"),
    (["--camera", "v4l2", "--camera.loop", "true"], (3, 96, 96), "--camera.loop does not apply to a v4l2 camera"),
    (["--camera", "v4l2", "--camera.fps", "0"], (3, 96, 96), "camera.fps must be a finite number > 0"),
    (["--camera.fps", "30"], (3, 96, 96), "package pkg sees a camera"),
    (["--camera", "synthetic", "--camera-max-age", "nan"], (3, 96, 96),
     "--camera-max-age must be a number of seconds in (0, 60], got nan"),
    (["--camera", "synthetic", "--camera-max-age", "-1"], (3, 96, 96), "--camera-max-age must be"),
    (["--camera", "synthetic", "--camera-max-stale", "0"], (3, 96, 96),
     "--camera-max-stale must be an integer in 1..1000000, got 0"),
    (["--camera", "simulated"], None, "--camera simulated: package pkg sees no camera (a state policy); drop the "
                                      "camera options"),
    (["--camera.device", "/dev/video0"], None, "--camera.device: package pkg sees no camera"),
])
def test_camera_mistakes_are_one_line_exit_2(run_main, argv, shape, message):
    code, err = run_main(argv, shape)
    assert code == 2 and err.count("\n") == 0
    assert err.startswith("imle-run: error: ") and message in err


def test_unknown_camera_option_is_refused_before_anything(capsys):
    assert cli.main(["pkg", "--camera.devcie", "/dev/video0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imle-run: error: unknown camera option --camera.devcie (camera fields: ") and "\n" not in err


def test_help_lists_the_sources_and_their_fields():
    text = cli.build_parser().format_help()
    for flag in ("--camera NAME", "--camera.device", "--camera.path", "--camera.fps", "--camera-max-age",
                 "--camera-max-stale", "--camera-max-repeat"):
        assert flag in text
