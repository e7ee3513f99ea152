"""The generic N-joint plant: joints and limits from a manifest or task file, servo dynamics, and the
emulator over a pty on a robot-only install (gym-pusht made unimportable)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.emulator.device import DeviceConfig, DeviceCore
from firmware_bridge.emulator.plants import (JointPlant, JointPlantConfig, LayoutError, build_plant,
                                             choose_plant, read_layout)
from firmware_bridge.emulator.plants.layout import layout_from_manifest, layout_from_task
from firmware_bridge.protocol import (Ack, AckResult, Capabilities, Fault, FaultCode, FrameDecoder, Hello,
                                      JointCommand, Reset, State, StatusFlags, encode_frame)

REPO = Path(__file__).resolve().parents[2]
JOINTS = tuple(f"joint{i}" for i in range(1, 8))
LOW = [-2.9, -1.7, -2.9, -3.0, -2.9, -0.0, -2.9]
HIGH = [2.9, 1.7, 2.9, -0.1, 2.9, 3.7, 2.9]


def task7(**changes) -> dict:
    """A 7-joint task, shaped like TaskSpec.to_dict() (contract #17)."""
    d = {"task": {"name": "arm7", "period_s": 0.05}, "horizons": {"obs": 2, "pred": 16, "action": 8},
         "observation": {"state": {"key": "state", "names": list(JOINTS), "use": list(JOINTS),
                                   "angles": ["joint7"]}},
         "action": {"key": "action", "names": [f"target{i}" for i in range(1, 8)], "joints": list(JOINTS)}}
    for path, value in changes.items():
        cur = d
        keys = path.split("__")
        for k in keys[:-1]:
            cur = cur.setdefault(k, {})
        cur[keys[-1]] = value
    return d


def manifest7(**task_changes) -> dict:
    return {"format": "imle-policy-package", "task": "arm7",
            "obs": {"state_dim": 7, "state_names": list(JOINTS)},
            "action": {"dim": 7, "names": [f"target{i}" for i in range(1, 8)], "low": LOW, "high": HIGH},
            "control": {"period_s": 0.05}, "task_spec": task7(**task_changes)}


# ----------------------------------------------------------------- where the joints come from
def test_manifest_task_spec_gives_joints_limits_and_period() -> None:
    layout = layout_from_manifest(manifest7(), "m.json")
    assert layout.joint_names == JOINTS and layout.lower == tuple(LOW) and layout.upper == tuple(HIGH)
    assert layout.period_s == 0.05 and layout.observed == JOINTS and layout.unserved() == ()
    # The task's own action limits win over the package's range (they are the task's).
    narrowed = layout_from_manifest(manifest7(action__low=[-1.0] * 7, action__high=[1.0] * 7), "m.json")
    assert narrowed.lower == (-1.0,) * 7 and narrowed.upper == (1.0,) * 7


def test_older_manifest_without_task_spec_uses_action_names() -> None:
    m = manifest7()
    del m["task_spec"]
    layout = layout_from_manifest(m, "m.json")
    assert layout.joint_names == tuple(f"target{i}" for i in range(1, 8))
    assert layout.unserved() == JOINTS    # observations by other names: the joints plant will refuse
    with pytest.raises(LayoutError, match="observations joint1, .*joint7 are not joints"):
        JointPlantConfig.from_layout(layout)


def test_task_file_and_package_dir(tmp_path: Path) -> None:
    toml = tmp_path / "arm7.toml"
    toml.write_text(textwrap.dedent(f"""
        [task]
        name = "arm7"
        period_s = 0.02
        [observation.state]
        key = "state"
        names = {json.dumps(list(JOINTS))}
        [action]
        key = "action"
        names = {json.dumps(list(JOINTS))}
        low = {json.dumps(LOW)}
        high = {json.dumps(HIGH)}
        """))
    layout = read_layout(str(toml))
    assert layout.joint_names == JOINTS and layout.period_s == 0.02 and layout.lower == tuple(LOW)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "manifest.json").write_text(json.dumps(manifest7()))
    assert read_layout(str(tmp_path / "pkg")).joint_names == JOINTS


@pytest.mark.parametrize("d, match", [
    (task7(observation__state__use=["joint1", "joint2", "gripper"]), "observations gripper are not joints"),
    (task7(observation__images=[{"key": "wrist", "shape": [96, 96, 3]}]), "observes images \\(wrist\\)"),
    (task7(success={"signal": "grasped", "threshold": 0.5}), "success signal 'grasped' is not a joint"),
    (task7(action__joints=["joint1"] * 7), "duplicate joint names \\['joint1'\\]"),
    (task7(action__joints=list(JOINTS[:6])), "action.joints has 6 names, action.names 7"),
    (task7(action__low=[0.0] * 7, action__high=[0.0] * 7), "joint1 limits \\[0.0, 0.0\\]"),
    (task7(action__low=[float("nan")] * 7, action__high=[1.0] * 7), "limits \\[nan, 1.0\\]"),
    (task7(action__low=[-1e400] * 7, action__high=[1.0] * 7), "limits \\[-inf, 1.0\\]"),
    (task7(action__low=[0.0] * 6, action__high=[1.0] * 7), "7 joints but 6 lower"),
    (task7(action__low=[0.0] * 7), "both lower and upper"),
    (task7(action__low="0", action__high=[1.0] * 7), "action.low must be a list, got '0'"),
    (task7(action__low=[True] * 7, action__high=[1.0] * 7), "action.low must be a list of numbers"),
    (task7(action__joints=[1, 2]), "action.joints must be a list of strings"),
    (task7(action__joints=[""] * 7), "joint name '' must be a non-empty string"),
    (task7(action__joints=[f"j{i}" for i in range(40)], action__names=[f"j{i}" for i in range(40)]),
     "1..32 joints, got 40"),
    (task7(action__joints=["x" * 200 + str(i) for i in range(7)], observation__state__use=[],
           observation__state__names=[]), "Capabilities payload"),
    (task7(task__period_s=float("inf")), "period_s must be in \\(0, 60\\]"),
    (task7(task__period_s="fast"), "task.period_s must be a number"),
    ({"action": {}}, "no action.names"),
    ([], "a task must be a table"),
])
def test_hostile_tasks_are_one_line_refusals(d, match) -> None:
    with pytest.raises(LayoutError, match=match) as info:
        layout = layout_from_task(d, "t.toml", (tuple(LOW), tuple(HIGH)))
        JointPlant(JointPlantConfig.from_layout(layout))
    assert "\n" not in str(info.value) and str(info.value).startswith("t.toml: ")


@pytest.mark.parametrize("content, match", [
    (b"{", "not a JSON manifest"), (b"\xff\xfe", "not a JSON manifest"), (b"[1]", "must be a JSON object"),
    (b"[" * 100000 + b"]" * 100000, "not a JSON manifest"), (b'{"action": {"names": "a"}}', "must be a list"),
    (b"{}", "neither task_spec nor action.names"),
])
def test_hostile_manifest_files(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_bytes(content)
    with pytest.raises(LayoutError, match=match) as info:
        read_layout(str(path))
    assert "\n" not in str(info.value)


def test_missing_and_oversized_files(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(LayoutError, match="cannot read manifest .*No such file"):
        read_layout(str(tmp_path / "nope"))
    big = tmp_path / "big.toml"
    big.write_text("x = 1\n")
    monkeypatch.setattr("firmware_bridge.emulator.plants.layout.MAX_FILE_BYTES", 3)
    with pytest.raises(LayoutError, match="too large for a task file"):
        read_layout(str(big))
    (tmp_path / "bad.toml").write_text("[task\n")
    monkeypatch.undo()
    with pytest.raises(LayoutError, match="not a TOML task file"):
        read_layout(str(tmp_path / "bad.toml"))


def test_no_limits_anywhere_is_refused_unless_given() -> None:
    layout = layout_from_task(task7(), "t.toml")
    with pytest.raises(LayoutError, match="no joint limits .*--lower/--upper"):
        JointPlantConfig.from_layout(layout)
    cfg = JointPlantConfig.from_layout(layout, lower=(-1.0,), upper=(1.0,))
    assert cfg.lower == (-1.0,) * 7 and cfg.control_dt == 0.05


def test_plant_choice() -> None:
    pusht = layout_from_task({"action": {"names": ["target_x", "target_y"], "joints": ["agent_x", "agent_y"]},
                              "observation": {"state": {"names": ["agent_x", "agent_y", "block_x"]}},
                              "success": {"signal": "coverage"}}, "p.toml")
    arm = layout_from_task(task7(), "t.toml")
    assert choose_plant("auto", arm) == "joints" and choose_plant("joints", pusht) == "joints"
    assert choose_plant("auto", None) == "pusht"
    with pytest.raises(LayoutError, match="joint1, .* are not Push-T's .*--plant joints"):
        choose_plant("pusht", arm)
    with pytest.raises(LayoutError, match="--plant must be one of"):
        choose_plant("franka", arm)
    gym = pytest.importorskip("gym_pusht")
    assert gym and choose_plant("auto", pusht) == "pusht"


# ----------------------------------------------------------------- servo dynamics
def plant7(**options) -> JointPlant:
    options.setdefault("lower", tuple(LOW))
    options.setdefault("upper", tuple(HIGH))
    return build_plant("joints", None, options.pop("seed", 0), joint_names=JOINTS, **options)


def test_servo_respects_velocity_and_acceleration_limits() -> None:
    vmax = np.array([1.0, 0.5, 2.0, 1.0, 0.3, 1.5, 2.5])
    amax = np.array([4.0, 2.0, 10.0, 1.0, 3.0, 6.0, 20.0])
    plant = plant7(max_velocity=tuple(vmax), max_accel=tuple(amax), latency_s=0.015)
    rng = np.random.default_rng(5)
    pos = [plant.pos.copy()]
    for _ in range(60):
        target = rng.uniform(LOW, HIGH)
        for _ in range(rng.integers(1, 80)):   # targets change mid-motion, reversals included
            plant.substep(target)
            pos.append(plant.pos.copy())
    pos = np.array(pos)
    v = np.diff(pos, axis=0) / plant.physics_dt
    a = np.diff(v, axis=0) / plant.physics_dt
    assert np.all(np.abs(v) <= vmax * (1 + 1e-9)) and np.all(np.abs(a) <= amax * (1 + 1e-6))
    assert np.all(pos >= np.array(LOW) - 1e-12) and np.all(pos <= np.array(HIGH) + 1e-12)
    assert np.any(np.isclose(np.abs(v), vmax)), "never reached full speed: the test would not notice a slow servo"
    for _ in range(2000):                       # and it settles on the last target
        plant.substep(target)
    assert np.allclose(plant.pos, target, atol=1e-9)


def test_latency_delays_a_command() -> None:
    plant = plant7(latency_s=0.05, physics_dt=0.005)
    start = plant.pos.copy()
    target = start + 0.1
    for _ in range(10):                          # 50 ms: not yet
        plant.substep(target)
    assert np.array_equal(plant.pos, start)
    plant.substep(target)
    assert np.all(plant.pos > start)


def test_noise_is_seeded_and_reset_is_reproducible() -> None:
    a, b = plant7(noise=(0.01,), seed=3), plant7(noise=(0.01,), seed=3)
    assert np.array_equal(a.pos, b.pos)
    readings = np.array([a.positions() for _ in range(2000)])
    assert np.array_equal(readings, np.array([b.positions() for _ in range(2000)]))
    assert np.allclose(readings.std(axis=0), 0.01, rtol=0.1) and np.allclose(readings.mean(axis=0), a.pos, atol=2e-3)
    quiet = plant7(seed=3)
    assert np.array_equal(quiet.positions(), quiet.positions())
    span = np.array(HIGH) - np.array(LOW)
    starts = []
    for seed in range(20):
        quiet.reset(seed)
        starts.append(quiet.pos.copy())
        assert np.all(quiet.pos >= np.array(LOW) + 0.1 * span - 1e-12)
        assert np.all(quiet.pos <= np.array(HIGH) - 0.1 * span + 1e-12)
    quiet.reset(7)
    assert np.array_equal(quiet.pos, starts[7]) and len({tuple(s) for s in starts}) == 20


@pytest.mark.parametrize("state, match", [
    ([0.0] * 6, "needs 7 joint positions"), ([float("nan")] + [0.0] * 6, "must be finite"),
    ([0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0], "joint4 = 5 is outside \\[-3, -0.1\\]")])
def test_reset_to_a_bad_state_is_refused(state, match) -> None:
    plant = plant7()
    before = plant.pos.copy()
    with pytest.raises(ValueError, match=match):
        plant.reset(0, state)
    assert np.array_equal(plant.pos, before)


@pytest.mark.parametrize("options, match", [
    ({"max_velocity": (0.0,)}, "max_velocity of joint joint1 must be a finite number > 0"),
    ({"max_accel": (1.0, 2.0)}, "max_accel needs 1 or 7 values, got 2"),
    ({"noise": (-1.0,)}, "noise of joint joint1 must be a finite number >= 0"),
    ({"latency_s": float("nan")}, "latency_s must be a finite number"),
    ({"latency_s": 11.0}, "latency_s must be"), ({"physics_dt": 0.5, "control_dt": 0.1}, "physics_dt must be"),
    ({"physics_dt": 0.05, "control_dt": 0.01}, "physics_dt 0.05 must not exceed control_dt 0.01"),
])
def test_bad_dynamics_options(options, match) -> None:
    with pytest.raises(LayoutError, match=match):
        plant7(**options)


# ----------------------------------------------------------------- the device core with the joints plant
class JointBench:
    def __init__(self, mode: str = "lockstep", **options) -> None:
        self.now = 50.0
        self.frames: list = []
        self.decoder = FrameDecoder()
        self.core = DeviceCore(DeviceConfig(mode, 0), plant7(**options), self._tx, self.now)
        self.seq = 0

    def _tx(self, data: bytes) -> bool:
        self.frames += self.decoder.feed(data)
        return True

    def send(self, msg) -> int:
        seq, self.seq = self.seq, self.seq + 1
        self.core.receive(encode_frame(msg, seq), self.now)
        return seq

    def take(self, cls) -> list:
        got = [f.message for f in self.frames if isinstance(f.message, cls)]
        self.frames = [f for f in self.frames if not isinstance(f.message, cls)]
        return got


def test_device_core_serves_the_joints_plant() -> None:
    bench = JointBench(max_velocity=(1.0,), max_accel=(4.0,), control_dt=0.05)
    bench.send(Hello(nonce=9, session_token=1))
    (caps,) = bench.take(Capabilities)
    assert caps.joint_names == JOINTS and caps.extra_names == () and caps.lockstep
    assert caps.firmware_version.endswith("(joints)")
    assert np.allclose(caps.lower, LOW) and np.allclose(caps.upper, HIGH)
    assert np.allclose(caps.max_velocity, 1.0) and np.allclose(caps.max_step, 2 * 1.0 * 0.05)
    (st,) = bench.take(State)
    assert st.extras.shape == (0,) and len(st.positions) == 7
    seq = bench.send(Reset(0, [0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0]))
    assert bench.take(Ack)[0].result == AckResult.OK
    here = bench.take(State)[-1].positions
    target = here + np.float32(0.09)
    for _ in range(10):
        seq = bench.send(JointCommand(target))
        (st,) = bench.take(State)
        assert st.ack_seq == seq
    assert np.allclose(st.positions, target, atol=1e-5)
    bench.send(JointCommand(target + np.float32(0.2)))         # more than max_step (0.1): refused
    assert [f.code for f in bench.take(Fault)] == [FaultCode.IMPLAUSIBLE]
    bench.send(Reset(0, [9.0] * 7))                            # outside the limits: refused
    assert bench.take(Ack)[0].result == AckResult.REJECTED


def test_hostile_states_with_the_joints_plant() -> None:
    bench = JointBench()
    bench.send(Hello(nonce=9, session_token=1))
    bench.take(State)
    bench.core.send_hostile_states("short", 1)
    bench.send(JointCommand(bench.core.plant.positions()))
    assert len(bench.take(State)[0].positions) == 6
    bench.core.send_hostile_states("noextras", 1)              # no extras to drop: still a valid-looking State
    bench.send(JointCommand(bench.core.plant.positions()))
    st = bench.take(State)[0]
    assert len(st.positions) == 7 and not st.has(StatusFlags.FAULT)


# ----------------------------------------------------------------- robot-only install, over a pty
BLOCKER = '''
import sys
class _Block:
    """The `robot` install: no gym-pusht, no torch."""
    BLOCKED = ("gym_pusht", "pymunk", "pygame", "torch", "gymnasium")
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ImportError(f"{name} is not installed (robot-only install)")
        return None
sys.meta_path.insert(0, _Block())
'''

DRIVE = '''
import json, sys
import numpy as np
from firmware_bridge.emulator import EmulatorError, start_emulator
from firmware_bridge.serial_link import SerialLink

pkg, pusht_pkg = sys.argv[1], sys.argv[2]
out = {}
try:
    start_emulator("lockstep", plant_from=pusht_pkg, startup_timeout=20)
except EmulatorError as exc:
    out["pusht_refusal"] = str(exc)
with start_emulator("lockstep", plant_from=pkg, seed=4, startup_timeout=20) as emu:
    with SerialLink(emu.port, state_timeout_s=3.0, handshake_timeout_s=3.0) as link:
        caps = link.connect()
        out["names"] = list(caps.joint_names)
        out["lower"], out["upper"] = caps.lower.tolist(), caps.upper.tolist()
        out["max_velocity"], out["max_step"] = caps.max_velocity.tolist(), caps.max_step.tolist()
        start = link.reset_plant(4)
        out["start"] = start.positions.tolist()
        goal = np.clip(start.positions + np.float32([0.9, -0.9, 0.5, -0.5, 0.3, 0.7, -1.2]), caps.lower, caps.upper)
        pos = [start.positions.astype(np.float64)]
        step = caps.max_step * np.float32(0.99)
        for _ in range(60):
            cmd = pos[-1] + np.clip(goal - pos[-1], -step, step)
            pos.append(link.step(np.float32(cmd)).positions.astype(np.float64))
        out["positions"] = np.array(pos).tolist()
        out["goal"] = goal.tolist()
    out["log"] = emu.log()
out["modules"] = sorted(m for m in ("gym_pusht", "torch", "pymunk") if m in sys.modules)
print(json.dumps(out))
'''


@pytest.mark.slow
def test_seven_joint_emulator_on_a_robot_only_install(tmp_path: Path) -> None:
    pytest.importorskip("serial")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    (tmp_path / "arm7").mkdir()
    (tmp_path / "arm7" / "manifest.json").write_text(json.dumps(manifest7()))
    (tmp_path / "pusht").mkdir()   # a Push-T package: without gym-pusht the joints plant cannot serve the block
    (tmp_path / "pusht" / "manifest.json").write_text(json.dumps({
        "task": "pusht-state", "obs": {"state_names": ["agent_x", "agent_y", "block_x", "block_y", "block_angle"]},
        "action": {"names": ["target_x", "target_y"], "low": [0, 0], "high": [512, 512]},
        "control": {"period_s": 0.1},
        "task_spec": {"task": {"name": "pusht-state", "period_s": 0.1},
                      "observation": {"state": {"names": ["agent_x", "agent_y", "block_x", "block_y", "block_angle"]}},
                      "action": {"names": ["target_x", "target_y"], "joints": ["agent_x", "agent_y"]},
                      "success": {"signal": "coverage", "threshold": 0.95}}}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(REPO)]))
    proc = subprocess.run([sys.executable, "-c", DRIVE, str(tmp_path / "arm7"), str(tmp_path / "pusht")],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["modules"] == []
    assert "observations block_x, block_y, block_angle are not joints" in out["pusht_refusal"]
    assert "the Push-T plant needs gym-pusht" in out["pusht_refusal"]
    assert out["names"] == list(JOINTS)
    assert np.allclose(out["lower"], LOW) and np.allclose(out["upper"], HIGH)
    vmax, period = np.array(out["max_velocity"]), 0.05
    pos = np.array(out["positions"])
    v = np.diff(pos, axis=0) / period                          # mean velocity over each control period
    assert np.all(np.abs(v) <= vmax * (1 + 1e-4))
    amax = vmax / 0.25                                         # the documented default: full speed in 0.25 s
    assert np.all(np.abs(np.diff(v, axis=0)) <= amax * period * (1 + 1e-3) + 1e-4)
    assert np.allclose(pos[-1], out["goal"], atol=1e-4)        # it got there
    assert np.all(np.abs(pos[1] - pos[0]) < np.abs(np.array(out["goal"]) - pos[0]))  # not in one jump
    assert "joints plant from" in out["log"]
