"""`imle-hil record --camera simulated|synthetic` (#21): the camera an image package's trace is recorded
with (RunSettings.camera, kept in the trace); refused with one line for a state package, an unknown
camera or an unreadable package."""
from __future__ import annotations

from pathlib import Path

import pytest

from runtime import hil_cli, hil_run
from runtime.signing import ENV_ALLOW_UNSIGNED, ENV_TRUSTED_KEYS

REPO = Path(__file__).resolve().parents[1]
STATE_PKG = REPO / "exported_models" / "pusht-state-imle"


@pytest.fixture(autouse=True)
def _unsigned_ok(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_TRUSTED_KEYS, str(tmp_path / "no-keys"))
    monkeypatch.setenv(ENV_ALLOW_UNSIGNED, "1")


@pytest.fixture
def captured(monkeypatch):
    """record_run replaced: the settings it was given, and a one-line stop (nothing is run)."""
    seen = []

    def fake(package, settings):
        seen.append(settings)
        raise hil_run.RunError("stopped by the test")
    monkeypatch.setattr(hil_run, "record_run", fake)
    return seen


@pytest.fixture(scope="module")
def image_package(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from tiny_image_package import tiny_image_package
    return tiny_image_package(tmp_path_factory.mktemp("pkg"))


def record(pkg, out, *extra):
    return hil_cli.main(["record", str(pkg), "--robot", "emulator-lockstep", "--out", str(out), *extra])


@pytest.mark.parametrize("extra, err", [
    (("--camera", "synthetic"), "--camera synthetic: package pusht-state-imle sees no camera (a state policy); "
                                "drop --camera"),
    (("--camera", "simulated"), "--camera simulated: package pusht-state-imle sees no camera"),
    (("--camera", "picamera2"), "--camera picamera2: use simulated or synthetic"),
    (("--camera", ""), "--camera : use simulated or synthetic"),
])
def test_state_packages_and_unknown_cameras_are_refused_before_anything_runs(tmp_path, capsys, captured, extra, err):
    assert record(STATE_PKG, tmp_path / "t.npz", *extra) == 2
    text = capsys.readouterr().err
    assert err in text and text.count("\n") == 1 and "Traceback" not in text
    assert captured == [] and not (tmp_path / "t.npz").exists()


def test_a_state_package_without_camera_still_records(tmp_path, capsys, captured):
    assert record(STATE_PKG, tmp_path / "t.npz") == 2  # the fake run stops it, after the settings were made
    assert len(captured) == 1 and "stopped by the test" in capsys.readouterr().err


def test_an_unreadable_package_given_a_camera_is_one_line(tmp_path, capsys, captured):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "manifest.json").write_text('{"format": ')
    assert record(tmp_path / "pkg", tmp_path / "t.npz", "--camera", "synthetic") == 2
    text = capsys.readouterr().err
    assert text.startswith(f"imle-hil: error: cannot load {tmp_path / 'pkg'}: ") and text.count("\n") == 1
    assert captured == []


def test_an_image_package_defaults_to_the_simulated_camera_and_takes_synthetic(image_package, tmp_path, captured):
    assert record(image_package, tmp_path / "a.npz") == 2
    assert record(image_package, tmp_path / "b.npz", "--camera", "synthetic") == 2
    assert record(image_package, tmp_path / "c.npz", "--camera", "simulated") == 2
    assert [s.camera for s in captured] == ["simulated", "synthetic", "simulated"]


def test_a_synthetic_camera_trace_is_recorded_and_checked_with_that_camera(image_package, tmp_path, capsys):
    pytest.importorskip("gym_pusht")
    from runtime.hil_trace import load_trace
    out = tmp_path / "trace.npz"
    assert record(image_package, out, "--camera", "synthetic", "--max-steps", "8") == 0, capsys.readouterr().err
    trace = load_trace(out)
    assert trace.meta["settings"]["camera"] == "synthetic"
    assert hil_cli.main(["check", str(image_package), str(out)]) == 0, capsys.readouterr().err
    assert "ok: 8 steps" in capsys.readouterr().out
