"""`edge-sim` tells a user what is wrong: a bad scenario file exits 2 with one line per
problem naming the field, an unmet expectation fails the run naming the expectation, and the
embedded broker (for machines without Mosquitto) carries a scenario through an outage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim import cli

BAD = """
name = "bad"
duration_s = -1
[[nodes]]
id = "g1"
kind = "gaz"
[[signals]]
type = "gas_leak"
node = "g1"
at_s = 5
peak_ppm = "lots"
"""

BAD_REFS = """
name = "bad-refs"
duration_s = 60
[[nodes]]
id = "gas-1"
kind = "gas"
settings = { gas = { warmup = 5 }, broker_port = 1, tls = true }
[[nodes]]
id = "flood-1"
kind = "flood"
[[signals]]
type = "earthquake"
node = "gas-1"
at_s = 10
[[faults]]
type = "sensor_stuck"
node = "flood-1"
at_s = 5
sensor = "accel"
[[expect]]
node = "vib-*"
event = "vibration"
"""

UNMET = """
name = "unmet"
duration_s = 8
[[nodes]]
id = "gas-1"
kind = "gas"
settings = { gas = { warmup_s = 1 } }
[[expect]]
node = "gas-1"
event = "gas"
phase = "start"
after_s = 3
within_s = 2
"""

OUTAGE = """
name = "outage"
duration_s = 90
time_scale = 6
[[nodes]]
id = "gas-1"
kind = "gas"
telemetry_interval_s = 10
settings = { gas = { warmup_s = 2 } }
[[faults]]
type = "broker_down"
at_s = 20
duration_s = 40
[[signals]]
type = "gas_leak"
node = "gas-1"
at_s = 30
peak_ppm = 3000
ramp_s = 2
hold_s = 5
decay_tau_s = 2
[[expect]]
node = "gas-1"
event = "gas"
phase = "start"
after_s = 30
within_s = 50
[[expect]]
node = "gas-1"
event = "gas"
phase = "end"
after_s = 30
within_s = 50
"""


def _write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_a_bad_scenario_exits_2_with_one_line_per_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "bad.toml", BAD)
    for command in ("check", "run"):
        assert cli.main([command, str(path)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert f"{path}: duration_s: Input should be greater than 0" in err
        assert any(line.startswith(f"{path}: nodes[0].kind: ") for line in err)
        assert any(line.startswith(f"{path}: signals[0].peak_ppm: ") for line in err)


def test_bad_references_and_settings_are_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "refs.toml", BAD_REFS)
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "signals[0].node: earthquake needs a vibration board, 'gas-1' is not one" in err
    assert "faults[0].sensor: a flood board has float or probe, not 'accel'" in err
    assert "expect[0].node: no node named 'vib-*'" in err
    fixed = BAD_REFS.replace('node = "gas-1"\nat_s = 10', 'node = "flood-1"\nat_s = 10') \
        .replace('type = "earthquake"', 'type = "flash_flood"') \
        .replace('sensor = "accel"', 'sensor = "float"').replace('"vib-*"', '"gas-1"') \
        .replace('event = "vibration"', 'event = "gas"')
    assert cli.main(["check", str(_write(tmp_path, "refs2.toml", fixed))]) == 2
    err = capsys.readouterr().err
    assert "nodes[0].settings.gas.warmup: unknown setting" in err
    assert "nodes[0].settings.broker_port: set by the simulator" in err
    assert "nodes[0].settings.tls: scenarios run boards on plain MQTT" in err


STRICT = """
name = "typos"
duration_s = 60
[[nodes]]
id = "gas-1"
kind = "gas"
settings = { telemetry_interval_s = 0, gas = { warmup_s = 99999, alarm_ppm = -5 } }
[[faults]]
type = "broker_down"
node = "gas-1"
at_s = 5
[[faults]]
type = "reset"
node = "gas-1"
at_s = 10
duration_s = 5
stall_ms = 100
[[expect_none]]
node = "gas-1"
event = "gass"
[[expect]]
node = "gas-1"
event = "intrusion"
"""


def test_typos_and_ignored_fields_are_errors_not_silent_passes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(_write(tmp_path, "strict.toml", STRICT))]) == 2
    err = capsys.readouterr().err
    assert "expect_none[0].event: 'gass' is not an event a gas node sends " \
           "(one of gas, sensor_fault)" in err
    assert "expect[0].event: 'intrusion' is not an event a gas node sends" in err
    assert "faults[0].node: a broker_down fault does not use it" in err
    assert "faults[1].duration_s: a reset fault does not use it" in err
    assert "faults[1].stall_ms: a reset fault does not use it" in err
    fixed = STRICT.replace('node = "gas-1"\nat_s = 5', 'at_s = 5') \
        .replace("duration_s = 5\nstall_ms = 100\n", "").replace('"gass"', '"gas"') \
        .replace('"intrusion"', '"sensor_fault"')
    assert cli.main(["check", str(_write(tmp_path, "ranges.toml", fixed))]) == 2
    err = capsys.readouterr().err  # the firmware's own ranges, every bad key named
    assert "nodes[0].settings.telemetry_interval_s: must be in 1..86400" in err
    assert "nodes[0].settings.gas.warmup_s: must be in" in err
    assert "nodes[0].settings.gas.alarm_ppm: must be in" in err


def test_a_file_that_is_not_toml_exits_2(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", str(_write(tmp_path, "x.toml", "name = [\n"))]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert cli.main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_an_unmet_expectation_fails_the_run_and_says_which(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "unmet.toml", UNMET)
    report = tmp_path / "report"
    rc = cli.main(["run", str(path), "--report", str(report), "--var", str(tmp_path / "var"),
                   "--plain"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "== unmet: FAILED" in out
    assert ("FAIL  expect gas/start from gas-1 within 2.0s of t=3.0s: "
            "gas-1: got 0 of 1 in time") in out
    summary = json.loads((report / "summary.json").read_text())
    assert summary["passed"] is False
    assert (report / "timeline.png").exists() and (report / "logs" / "gas-1.log").exists()


@pytest.mark.timeout(120)
def test_the_embedded_broker_carries_alarms_through_an_outage(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "outage.toml", OUTAGE)
    report = tmp_path / "report"
    rc = cli.main(["run", str(path), "--report", str(report), "--var", str(tmp_path / "var"),
                   "--plain", "--broker", "embedded"])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    assert "broker amqtt (embedded)" in out
    messages = json.loads((report / "messages.json").read_text())
    gas = [m["payload"] for m in messages if m["topic"].endswith("/event/gas")]
    assert [(d["seq"], d["phase"], d.get("historical")) for d in gas[:2]] == [
        (1, "start", True), (2, "end", True)]


def test_the_scenario_reference_is_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    from sim.scenario_doc import DOC

    assert cli.main(["docs"]) == 0
    out = capsys.readouterr().out
    assert DOC.read_text() == out, "docs/scenarios.md drifted: run edge-sim docs > it"
    for name in ("gas_leak", "flash_flood", "earthquake", "recording", "broker_down",
                 "flash_stall", "within_s", "ticks_start_ms"):
        assert name in out
    assert "|  |\n" not in out, "every field says what it means"


def test_every_shipped_scenario_checks_at_another_speed(
        capsys: pytest.CaptureFixture[str]) -> None:
    """--speed re-validates the scenario: only what the file said, so a fault's defaults
    never count as fields it was given."""
    for path in sorted((Path(cli.__file__).parent / "scenarios").glob("*.toml")):
        assert cli.main(["check", "--speed", "2", str(path)]) == 0, capsys.readouterr().err
