"""benchmarks/failure_modes.py: the ending classes, seed inputs and one-line refusals (replays are the benchmark's)."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "failure_modes.py"
spec = importlib.util.spec_from_file_location("failure_modes", _PATH)
fm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fm)


def _episode(block_end, block_step=0.0, steps=150):
    """[steps, 5] states: the agent circles, the block moves block_step px per step towards block_end."""
    t = np.arange(steps, dtype=float)
    s = np.zeros((steps, 5))
    s[:, 0], s[:, 1] = 200 + 30 * np.cos(t / 5), 200 + 30 * np.sin(t / 5)
    s[:, 2] = block_end[0] - block_step * (steps - 1 - t)
    s[:, 3] = block_end[1]
    return s


def test_an_episode_ending_at_a_wall_is_wall_whether_or_not_it_moves():
    assert fm.classify(_episode((30.0, 256.0)))["class"] == "wall"
    moving = fm.classify(_episode((500.0, 256.0), block_step=1.0))
    assert moving["class"] == "wall" and moving["block_to_wall_px"] == 12.0


def test_a_still_block_away_from_walls_is_stalled_and_a_moving_one_pushing():
    still = fm.classify(_episode((256.0, 256.0), block_step=0.05))  # 5 px in 100 steps
    assert still["class"] == "stalled" and still["block_moved_px"] == pytest.approx(4.95, abs=0.1)
    assert still["agent_path_px"] > 100  # the pusher moved: stalled means the block did not
    assert fm.classify(_episode((256.0, 256.0), block_step=0.5))["class"] == "pushing"


def test_only_the_last_100_steps_count():
    s = _episode((256.0, 256.0))
    s[:50, 2] -= np.linspace(100, 0, 50)  # a big push early, still for the last 100 steps
    assert fm.classify(s)["class"] == "stalled"


def test_a_block_pushed_out_of_the_workspace_counts_as_wall():
    out = fm.classify(_episode((-20.0, 256.0)))
    assert out["class"] == "wall" and out["block_to_wall_px"] == -20.0


@pytest.mark.parametrize("states", [np.zeros((1, 5)), np.zeros((10, 4)), np.zeros(10),
                                    np.full((10, 5), np.nan), np.array([[0, 0, np.inf, 0, 0]] * 5, float)])
def test_malformed_states_are_refused(states):
    with pytest.raises(ValueError, match="finite"):
        fm.classify(states)


def test_seeds_from_an_eval_summary(tmp_path):
    p = tmp_path / "summary.json"
    p.write_text(json.dumps({"episodes": [{"seed": 7, "max_reward": 0.1}, {"seed": 8, "max_reward": 0.9},
                                          {"seed": 9, "max_reward": 0.0}]}))
    assert fm.seeds_from(p, 0.5) == [7, 9] and fm.seeds_from(p, 0.0) == []


@pytest.mark.parametrize("text", ['{"episodes": [{"seed": 1}]}', '{"episodes": 3}', "[1, 2", "", '{"x": 1}'])
def test_seeds_from_refuses_what_is_not_a_summary(tmp_path, text):
    p = tmp_path / "summary.json"
    p.write_text(text)
    with pytest.raises(ValueError, match="not an imle-eval summary.json"):
        fm.seeds_from(p, 0.5)


def test_population_ranges():
    assert fm.parse_population("10:3, 20:2") == [10, 11, 12, 20, 21]
    for bad in ("10", "10:0", "a:3", "10:-1", "10:3:4"):
        with pytest.raises(ValueError, match="START:COUNT"):
            fm.parse_population(bad)


@pytest.mark.parametrize("argv, needle", [
    (["PKG"], "no episodes to replay"),
    (["PKG", "--seeds", "1,x"], "--seeds"),
    (["PKG", "--from", "MISSING"], "not an imle-eval summary.json"),
    (["PKG", "--seeds", "1", "--population", "1:5"], "--demos and --population go together"),
    (["PKG", "--seeds", "9", "--population", "1:5", "--demos", "D"], "does not hold the failing seeds"),
    (["PKG", "--seeds", "1"], "not a model package"),
    (["PKG", "--seeds", "-3"], "seeds are >= 0"),
    (["PKG", "--seeds", "1", "--population", "0:60000,60000:60000", "--demos", "D"], "more than 100000 seeds"),
])
def test_mistakes_are_one_line(argv, needle, capsys, tmp_path):
    argv = [str(tmp_path / "missing") if a == "MISSING" else str(tmp_path) if a in ("PKG", "D") else a for a in argv]
    assert fm.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


@pytest.fixture(scope="module")
def tiny_pusht_package(tmp_path_factory):
    pytest.importorskip("gym_pusht")
    fixtures_spec = importlib.util.spec_from_file_location("runtime_fixtures", _PATH.parents[1] / "hil_tests" /
                                                           "runtime_fixtures.py")
    fixtures = importlib.util.module_from_spec(fixtures_spec)
    fixtures_spec.loader.exec_module(fixtures)  # by path: hil_tests is not an installed package
    return fixtures.build_tiny_package(tmp_path_factory.mktemp("fm") / "pkg")


def test_a_replay_writes_the_classes_the_json_and_the_grid(tiny_pusht_package, tmp_path, capsys):
    pkg = tiny_pusht_package  # untrained: sits near the middle, never reaches the goal
    out = tmp_path / "fm"
    assert fm.main([str(pkg), "--seeds", "5,6", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert [e["seed"] for e in result["episodes"]] == [5, 6] and sum(result["counts"].values()) == 2
    for e in result["episodes"]:
        assert e["steps"] == 300 and e["class"] in ("wall", "stalled", "pushing") and len(e["final_block"]) == 3
    assert out.with_suffix(".png").stat().st_size > 0
    assert "of 2 episodes" in capsys.readouterr().out


def _refusal(argv, capsys) -> str:
    assert fm.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("failure_modes: error:") and "\n" not in err
    return err


def test_packages_it_cannot_read_and_bad_precisions_are_one_line(tiny_pusht_package, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny_pusht_package, other)
    raw = json.loads((other / "manifest.json").read_text())
    raw["obs"]["state_names"] = ["a", "b", "c", "d", "e"]
    spec_state = raw["task_spec"]["observation"]["state"]
    spec_state.update(names=["a", "b", "c", "d", "e"], use=["a", "b", "c", "d", "e"], angles=["e"])
    (other / "manifest.json").write_text(json.dumps(raw))
    err = _refusal([str(other), "--seeds", "1"], capsys)
    assert "obs.state_names" in err and "Push-T state packages only" in err
    assert "int8" in _refusal([str(tiny_pusht_package), "--seeds", "1", "--precision", "int8"], capsys)


def test_a_demo_buffer_that_is_not_push_t_is_refused_before_the_replays(tiny_pusht_package, tmp_path, capsys):
    from trainer.data import write_replay_buffer

    arm = {"state": np.zeros((10, 7), np.float32), "action": np.zeros((10, 7), np.float32)}
    write_replay_buffer(tmp_path / "arm.zarr", arm, np.array([5, 10]))
    err = _refusal([str(tiny_pusht_package), "--seeds", "1", "--population", "0:5", "--demos",
                    str(tmp_path / "arm.zarr"), "--out", str(tmp_path / "out")], capsys)
    assert "data/state is [10, 7]" in err and "5 columns" in err
    assert not (tmp_path / "out.json").exists()
    assert "replay buffer not found" in _refusal([str(tiny_pusht_package), "--seeds", "1", "--population", "0:5",
                                                  "--demos", str(tmp_path / "none.zarr")], capsys)


def test_each_start_falls_in_exactly_one_quartile(monkeypatch):
    class Env:  # starts at block x = 0, 10, 20, ... : distances to a demo start at x = 0 tie the quartile edges
        def reset(self, seed):
            return np.array([0, 0, 10.0 * seed, 0, 0]), {}

        def close(self):
            pass

    import trainer.evaluate.env as env_mod
    monkeypatch.setattr(env_mod, "make_env", lambda *a, **k: Env())
    cov = fm.demo_coverage(list(range(9)), {8}, np.zeros((1, 2)))
    assert sum(q["episodes"] for q in cov["quartiles"]) == 9 and sum(q["failed"] for q in cov["quartiles"]) == 1
    assert cov["mean_px_failed"] == 80.0 and cov["mean_px_other"] == 35.0
