"""benchmarks/fault_campaign.py cannot rot: its measurement on hand-made logs, its argument checks, and
(slow) two rows run for real against the emulator with --quick."""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_campaign():
    spec = importlib.util.spec_from_file_location("fault_campaign", REPO / "benchmarks" / "fault_campaign.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_campaign"] = module
    spec.loader.exec_module(module)
    return module


fc = load_campaign()


def write_steps(path: Path, commands: list) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["episode", "step", "source", "command_target_x", "command_target_y"])
        for i, c in enumerate(commands):
            w.writerow([0, i, "plan" if c else "link-hold", *(c if c else ("", ""))])


def write_log(path: Path, targets: list, valid: bool = True) -> None:
    with open(path, "w") as fh:
        for i, t in enumerate(targets):
            fh.write(json.dumps({"seq": i, "valid": valid, "t": 0.1 * i, "targets": t}) + "\n")


def test_measure_counts_sent_applied_and_foreign(tmp_path):
    a, b, c = [256.0, 256.0], [260.5, 250.25], [461.0, 250.25]
    write_steps(tmp_path / "steps.csv", [a, None, b])       # a link-hold tick sent nothing
    write_log(tmp_path / "log.jsonl", [a, b, c])            # c was never sent: foreign
    m = fc.measure(tmp_path / "steps.csv", tmp_path / "log.jsonl")
    assert (m["sent"], m["applied"], m["foreign"]) == (2, 3, 1)
    assert m["foreign_examples"] == [c]
    assert m["largest_commanded_step"] == pytest.approx(5.75)
    assert m["largest_applied_step"] == pytest.approx(200.5)
    assert m["applied_range"] == [250.25, 461.0]


def test_measure_compares_as_float32_and_ignores_hold_commands(tmp_path):
    x = 253.16514587402344  # a float32 value as the CSV and the device log both print it
    write_steps(tmp_path / "steps.csv", [[x, x]])
    write_log(tmp_path / "log.jsonl", [[x, x]])
    with open(tmp_path / "log.jsonl", "a") as fh:  # a hold command (valid = false) carries no target
        fh.write(json.dumps({"seq": 9, "valid": False, "t": 1.0, "targets": [0.0, 0.0]}) + "\n")
    m = fc.measure(tmp_path / "steps.csv", tmp_path / "log.jsonl")
    assert (m["applied"], m["applied_hold"], m["foreign"]) == (1, 1, 0)


def test_judge_flags_foreign_commands_and_unexpected_exit_codes():
    row = fc.Row("x", "a fault", (3,), "completes")
    r = {"exit_code": 0, "traceback": False, "summary_written": True, "foreign": 2, "largest_applied_step": 250.0,
         "injected_after_applied": 10}
    failures = fc.judge(row, r)
    assert "exit 0, expected 3" in failures and "2 foreign commands applied" in failures
    assert any("250.0 px > 200" in f for f in failures)


def test_rows_cover_the_campaign_of_issue_16():
    names = {r.name for r in fc.ROWS}
    for needed in ("corrupt-d2h-1in8", "corrupt-d2h-1in50", "corrupt-h2d-1in8", "corrupt-h2d-1in50", "drop-30pct",
                   "firmware-reset", "unplug-1s", "unplug-for-good", "host-stall-0.5s", "silent-1s",
                   "second-host", "second-host-takeover", "package-tampered", "package-corner",
                   *(f"hostile-state-{k}" for k in ("short", "long", "noextras", "nan", "huge"))):
        assert needed in names
    assert all(r.expect_exit and r.expect for r in fc.ROWS)


@pytest.mark.parametrize("argv, text", [(["--rows", "nope"], "unknown row 'nope'"),
                                        (["--rows", "baseline", "--ticks", "5"], "--ticks must be >= 20")])
def test_bad_arguments_are_one_line(argv, text, capsys, tmp_path):
    assert fc.main([*argv, "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert text in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_two_rows_for_real(tmp_path):
    pytest.importorskip("gym_pusht")
    pytest.importorskip("torch")
    out = tmp_path / "fc.json"
    code = fc.main(["--quick", "--rows", "hostile-state-nan,second-host", "--package-cache", str(tmp_path / "pkgs"),
                    "--out", str(out)])
    data = json.loads(out.read_text())
    rows = {r["row"]: r for r in data["results"]}
    assert code == 0, [r["failures"] for r in data["results"]]
    nan = rows["hostile-state-nan"]
    assert nan["exit_code"] == 4 and nan["surfaced"]["bad_states"] == 5 and nan["device_estop"] is True
    assert nan["foreign"] == 0 and 0 < nan["applied"] <= nan["sent"] < 40
    second = rows["second-host"]
    assert second["exit_code"] == 0 and second["second_host"]["exit_code"] == 2
    assert second["sent"] == second["applied"] == 40 and second["foreign"] == 0
    assert data["foreign_total"] == 0 and "| hostile-state-nan |" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("argv, text", [
    (["--device", "arduino"], "--device must be one of python, c-host, avr-sim, got 'arduino'"),
    (["--device", "c-host", "--rows", "baseline,hostile-state-nan"],
     "row 'hostile-state-nan' cannot run on --device c-host: the C devices have no hostile-State injection"),
])
def test_device_option_is_checked_in_one_line(argv, text, capsys, tmp_path):
    assert fc.main([*argv, "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert text in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


def test_c_devices_skip_only_the_hostile_state_rows_and_write_their_own_results():
    skipped = {r.name for r in fc.ROWS if fc.skip_reason(r, "avr-sim")}
    assert skipped == {f"hostile-state-{k}" for k in fc.HOSTILE_KINDS}
    assert not any(fc.skip_reason(r, "python") for r in fc.ROWS)
    row = next(r for r in fc.ROWS if r.name == "hostile-state-nan")
    md = fc.markdown([fc.skipped_result(row, 100, fc.skip_reason(row, "c-host"))],
                     {"command": "x", "ticks": 100, "package_note": "p", "wall_s": 1.0,
                      "device": {"kind": "c-host", "program": "imle-device"},
                      "machine": {"cpus": 2, "loadavg_at_end": ["0", "0", "0"]}})
    assert "| hostile-state-nan |" in md and "no hostile-State injection" in md and "device c-host" in md


def test_joint_package_observes_only_the_two_joints(tmp_path):
    pytest.importorskip("onnx")
    from runtime.package import read_manifest
    pkg = fc.build_joint_package(tmp_path / "pkg", "tiny")
    m = read_manifest(pkg, trust=False)
    assert m.obs.state_names == ["agent_x", "agent_y"] and m.action.names == ["agent_x", "agent_y"]
    assert (m.action.low, m.action.high) == ([0.0, 0.0], [512.0, 512.0])
