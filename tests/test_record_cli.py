"""imle-record end to end: the generic joint emulator, scripted sources, review, interruption, hostile input."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("serial")

from runtime.record.cli import main  # noqa: E402
from runtime.record.sources import EpisodeStart, KeyboardJog, Observation, SourceError, make_source  # noqa: E402
from runtime.task_spec import TaskSpec  # noqa: E402
from trainer.data import load_replay_buffer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMOS = REPO / "tests" / "record_demos.py"
TASK = """[task]
name = "reach3"
period_s = 0.05

[horizons]
obs = 2
pred = 8
action = 4

[observation.state]
key = "state"
names = ["j1", "j2", "j3"]

[action]
key = "action"
names = ["target_j1", "target_j2", "target_j3"]
joints = ["j1", "j2", "j3"]
low = [-1.0, -1.0, -1.0]
high = [1.0, 1.0, 1.0]
"""


@pytest.fixture
def task_file(tmp_path):
    p = tmp_path / "reach3.toml"
    p.write_text(TASK)
    return p


def record(task_file, out, *extra, source="reach"):
    return main(["--task", str(task_file), "--out", str(out), "--robot", "emulator-lockstep",
                 "--source", f"scripted:{DEMOS}:{source}", "--review", "auto", *extra])


def test_three_scripted_episodes_from_the_joint_emulator_pass_the_task_check(tmp_path, task_file, capsys):
    out = tmp_path / "demos.zarr"
    assert record(task_file, out, "--episodes", "3", "--seed", "5") == 0
    from trainer.task_cli import main as task_main
    assert task_main(["check", str(task_file), str(out)]) == 0
    assert "3 episodes, 60 frames" in capsys.readouterr().out
    rb = load_replay_buffer(out)
    assert rb.episode_ends.tolist() == [20, 40, 60]
    s, a = rb.data["state"], rb.data["action"]
    assert s.shape == (60, 3) and a.shape == (60, 3)
    assert np.all(np.abs(a) <= 1.0)
    step = 2 * 0.5 * 2.0 * 0.05  # the joint plant's max_step: 2 x max_velocity (0.5 ranges/s x 2) x period
    for i in range(3):
        ep_a = a[20 * i:20 * (i + 1)]
        ep_s = s[20 * i:20 * (i + 1)]
        # the first command steps from the measured start; every later one from the previous command
        assert np.all(np.abs(np.diff(ep_a, axis=0)) <= step + 1e-6)
        assert np.all(np.abs(ep_a[0] - ep_s[0]) <= step + 1e-6)
        goal = np.random.default_rng(5 + i).uniform(-0.5, 0.5, 3).astype(np.float32)
        np.testing.assert_allclose(ep_a[-1], goal, atol=1e-6)  # the demonstration reached its goal command
        assert np.abs(ep_s[-1] - goal).max() < np.abs(ep_s[0] - goal).max()  # and the arm moved towards it
    from runtime.record.buffer import ReplayBufferWriter
    with ReplayBufferWriter(out) as w:
        assert w.seeds().tolist() == [5, 6, 7]


def test_review_prompt_discards_and_rerecords_then_discard_last(tmp_path, task_file, capsys):
    out = tmp_path / "demos.zarr"
    answers = iter(["what", "d", "k", "k"])
    code = main(["--task", str(task_file), "--out", str(out), "--robot", "emulator-lockstep",
                 "--source", f"scripted:{DEMOS}:reach", "--review", "ask", "--episodes", "2"],
                ask=lambda prompt: next(answers))
    assert code == 0
    from runtime.record.buffer import ReplayBufferWriter
    with ReplayBufferWriter(out) as w:
        assert w.seeds().tolist() == [1, 2]  # attempt 0 (seed 0) was discarded and re-recorded
    assert main(["--out", str(out), "--discard-last"]) == 0
    assert load_replay_buffer(out).episode_ends.tolist() == [20]
    assert main(["--out", str(out), "--discard-last"]) == 0
    capsys.readouterr()
    assert main(["--out", str(out), "--discard-last"]) == 2
    assert "no episode to discard" in capsys.readouterr().err
    # quit at the prompt: nothing more stored, exit 0
    assert main(["--task", str(task_file), "--out", str(out), "--robot", "emulator-lockstep", "--source",
                 f"scripted:{DEMOS}:reach", "--review", "ask"], ask=lambda p: "q") == 0
    with ReplayBufferWriter(out) as w:
        assert w.n_episodes == 0


@pytest.mark.parametrize("source, err", [
    ("wrong_length", "the source returned 1 values at step 0; the task's action has 3"),
    ("raises", "failed at step 0: RuntimeError: planner exploded second line"),
    ("nan_at_3", "non-finite action at step 3"),
    ("not_callable", "must return a callable"),
])
def test_a_bad_source_aborts_without_storing_and_estops(tmp_path, task_file, capsys, source, err):
    out = tmp_path / "demos.zarr"
    assert record(task_file, out, "--episodes", "2", source=source) == 4
    e = capsys.readouterr().err
    assert err in e and "Traceback" not in e
    assert all(len(line) < 400 for line in e.splitlines())
    from runtime.record.buffer import ReplayBufferWriter
    with ReplayBufferWriter(out) as w:
        assert w.n_episodes == 0


@pytest.mark.parametrize("args, err", [
    (["--source", "scripted:nosuchmodule_xyz:f"], "cannot import scripted source nosuchmodule_xyz: "
                                                  "ModuleNotFoundError"),
    (["--source", f"scripted:{DEMOS}:nosuch"], "has no function 'nosuch'"),
    (["--source", "scripted:/nonexistent/x.py:f"], "scripted source file not found"),
    (["--source", "scripted:"], "takes scripted:MODULE:FUNCTION"),
    (["--source", "joystick"], "unknown --source 'joystick'"),
    (["--task", "/nonexistent.toml"], "task file not found"),
    (["--robot", "emulator", "--robot.colour", "red"], "unknown robot option --robot.colour"),
    (["--robot", "franka:"], "bad --robot spec"),
    (["--episodes", "0"], "must be >= 1"),
])
def test_mistakes_are_one_line_errors_before_any_robot(tmp_path, task_file, capsys, args, err):
    base = {"--task": str(task_file), "--source": f"scripted:{DEMOS}:reach", "--robot": "emulator-lockstep"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    argv = ["--out", str(tmp_path / "d.zarr"), "--review", "auto"] + [x for kv in base.items() for x in kv]
    assert main(argv) == 2
    e = capsys.readouterr().err
    assert err in e and len(e.strip().splitlines()) == 1


def test_a_buffer_of_another_task_or_layout_is_refused(tmp_path, task_file, capsys):
    out = tmp_path / "demos.zarr"
    assert record(task_file, out) == 0
    other = tmp_path / "other.toml"
    other.write_text(TASK.replace("period_s = 0.05", "period_s = 0.1"))
    capsys.readouterr()
    assert record(other, out) == 2
    assert "recorded with task.period_s = 0.05; this task has 0.1" in capsys.readouterr().err
    assert record(task_file, out, "--discard-last") == 2
    assert "--discard-last works on the buffer alone" in capsys.readouterr().err
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "file").write_text("x")
    assert record(task_file, junk) == 2
    assert "not a zarr replay buffer" in capsys.readouterr().err


def test_an_image_task_needs_a_camera(tmp_path, capsys):
    t = tmp_path / "img.toml"
    text = TASK.replace("[action]", '[[observation.images]]\nkey = "img"\nshape = [8, 8, 3]\ncamera = "top"\n\n'
                        '[action]')
    t.write_text(text)
    assert record(t, tmp_path / "d.zarr") == 2
    assert "records an image (img): give --camera" in capsys.readouterr().err


def test_keyboard_jog_moves_the_picked_joint_and_ends_on_q():
    spec = TaskSpec.from_dict(__import__("tomllib").loads(TASK))
    first = Observation(0, 0.0, ("j1", "j2", "j3"), np.array([0.1, 0.2, 0.3], np.float32))
    src = KeyboardJog(keys="2++-]+x9")
    src.begin(EpisodeStart(0, 0, spec, first))
    a = src.act(first)  # all keys are read at once: joint 2 +1 +1 -1 step, step doubled, +1 (x, 9 ignored)
    np.testing.assert_allclose(a, [0.1, 0.2 + 0.02 + 0.04, 0.3], atol=1e-6)
    np.testing.assert_allclose(src.act(first), a)  # no key: hold the target
    src.press("q")
    assert src.act(first) is None  # q ends the demonstration
    with pytest.raises(SourceError, match="needs a terminal"):
        if sys.stdin.isatty():
            raise SourceError("needs a terminal")  # cannot test the refusal on a terminal
        make_source("keyboard")


def _spawn(task_file, out, marker, stall_seed, episodes):
    env = dict(os.environ, IMLE_TEST_MARKER=str(marker), IMLE_TEST_STALL_SEED=str(stall_seed),
               PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "runtime.record.cli", "--task", str(task_file), "--out", str(out),
                             "--robot", "emulator-lockstep", "--source", f"scripted:{DEMOS}:stall", "--review", "auto",
                             "--episodes", str(episodes)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for(marker, proc):
    for _ in range(600):
        if marker.exists() or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_a_recorder_killed_mid_episode_leaves_the_stored_episodes_intact(tmp_path, task_file, how):
    out = tmp_path / "demos.zarr"
    marker = tmp_path / "marker"
    proc = _spawn(task_file, out, marker, stall_seed=2, episodes=5)
    _wait_for(marker, proc)  # episodes 0 and 1 are stored; episode 2 is at step 5
    if how == "SIGKILL":
        proc.kill()
        proc.communicate()
    else:
        proc.send_signal(signal.SIGINT)
        Path(str(marker) + ".stop").write_text("")  # let the stalled source return
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "e-stop engaged (confirmed); the episode in progress was not stored" in err
    rb = load_replay_buffer(out)
    assert rb.episode_ends.tolist() == [20, 40]
    # and the next session appends after them (rows of the killed episode, if any, are trimmed)
    marker.unlink()
    Path(str(marker) + ".stop").unlink(missing_ok=True)
    proc = _spawn(task_file, out, marker, stall_seed=-1, episodes=1)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert load_replay_buffer(out).episode_ends.tolist() == [20, 40, 60]


BLOCKED_RUN = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "trainer", "zarr"):
            raise ImportError(f"blocked import of {name}")
sys.meta_path.insert(0, Block())
from runtime.record.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_recording_needs_no_zarr_torch_or_trainer(tmp_path, task_file):
    """The robot install (no zarr, no torch) records: the buffer writer is numpy only."""
    out = tmp_path / "demos.zarr"
    r = subprocess.run([sys.executable, "-c", BLOCKED_RUN, "--task", str(task_file), "--out", str(out), "--robot",
                        "emulator-lockstep", "--source", f"scripted:{DEMOS}:reach", "--review", "auto"],
                       env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert load_replay_buffer(out).episode_ends.tolist() == [20]


class FakeArm:
    """A lock-step simulated 2-joint robot in-process: the target is reached in one step."""

    def __init__(self):
        from firmware_bridge.protocol import Capabilities, CapabilityFlags
        self.caps = Capabilities("fake", ("j1", "j2"), np.array([-1, -1], np.float32), np.array([1, 1], np.float32),
                                 np.array([0, 0], np.float32),
                                 flags=CapabilityFlags.SIMULATED | CapabilityFlags.LOCKSTEP)
        self.pos = np.zeros(2, np.float32)
        self.healthy, self.stats, self.estops = True, None, 0

    def _state(self):
        from firmware_bridge.protocol import State
        return State(0, self.pos.copy(), seq=1, rx_time=time.monotonic())

    def connect(self):
        return self.caps

    def latest_state(self):
        return self._state()

    def wait_state(self, after_seq=None, timeout=1.0):
        return self._state()

    def send_command(self, targets, valid=True):
        self.pos = np.asarray(targets, np.float32).copy()
        return 1

    def reset_plant(self, seed, initial_state=None, timeout=1.0, retries=3):
        self.pos = np.array([0.1 * seed, -0.1], np.float32)
        return self._state()

    def step(self, targets, timeout=1.0):
        self.send_command(targets)
        return self._state()

    def estop(self, engage=True):
        self.estops += 1
        return True

    def take_faults(self):
        return []

    def close(self):
        pass


def test_camera_frames_are_recorded_with_their_tick(tmp_path):
    from runtime.record.buffer import ReplayBufferWriter
    from runtime.record.cli import _array_specs
    from runtime.record.session import RecordConfig, Recorder
    from runtime.record.sources import ScriptedSource
    text = TASK.replace('"j1", "j2", "j3"', '"j1", "j2"').replace('"target_j1", "target_j2", "target_j3"',
                                                                  '"target_j1", "target_j2"')
    text = text.replace("[-1.0, -1.0, -1.0]", "[-1.0, -1.0]").replace("[1.0, 1.0, 1.0]", "[1.0, 1.0]")
    image = '[[observation.images]]\nkey = "img"\nshape = [4, 6, 3]\ncamera = "top"\n\n'
    text = text.replace("[action]", image + "[action]")
    spec = TaskSpec.from_dict(__import__("tomllib").loads(text))

    class Camera:  # frame value = how many times it was read: one read per recorded tick
        n = 0

        def latest(self):
            Camera.n += 1
            return np.full((4, 6, 3), Camera.n, np.uint8)

    arm = FakeArm()
    rec = Recorder(arm, arm.caps, spec, RecordConfig(0.05, max_steps=5, lockstep=True), Camera())
    src = ScriptedSource(lambda task, seed: (lambda obs: [obs.image[0, 0, 0] / 100.0, 0.0]), "test")
    res = rec.record_episode(src, 0, 0)  # starts at j1 = 0: every command within the 0.2 default step
    assert res.ended == "max_steps" and res.steps == 5
    assert res.data["img"][:, 0, 0, 0].tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(res.data["state"][1:, 0], res.data["action"][:-1, 0])  # the state after each command
    np.testing.assert_allclose(res.data["action"][:, 0], np.arange(1, 6) / 100.0, atol=1e-6)
    with ReplayBufferWriter(tmp_path / "b.zarr", _array_specs(spec)) as w:
        w.append_episode(res.data, 3)
    rb = load_replay_buffer(tmp_path / "b.zarr", keys=("state", "action", "img"))
    np.testing.assert_array_equal(rb.data["img"], res.data["img"])
    # a camera whose frames do not have the task's shape is refused (one line), not recorded
    Camera.latest = lambda self: np.zeros((5, 6, 3), np.uint8)
    with pytest.raises(ValueError, match=r"frames of \[5, 6, 3\]; task observation.images\[0\].shape is \[4, 6, 3\]"):
        rec.record_episode(src, 1, 4)
