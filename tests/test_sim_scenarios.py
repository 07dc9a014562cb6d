"""Every scenario in sim/scenarios/ holds when `edge-sim run` plays it: real firmware, the
real agent, real Mosquitto; long ones in accelerated time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim import cli
from tests.conftest import ROOT, SHARED

SCENARIOS = sorted((ROOT / "sim" / "scenarios").glob("*.toml"))
SPEED = {"earthquake": 2.0, "sensor-faults": 4.0, "network-faults": 6.0}
"""Faster than the file says, to keep `make test` short (vibration boards sample at 100 Hz
of board time, so x2 already doubles their CPU)."""


def test_the_issue_s_scenarios_are_all_there() -> None:
    names = {p.stem for p in (ROOT / "sim" / "scenarios").glob("*.toml")}
    assert {"demo-block", "earthquake", "flood-broker-outage", "sensor-faults",
            "fleet", "vibration-machinery", "vibration-transients", "vibration-quake-flash",
            "vibration-record-flash"} <= names


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: Path(p).stem)
def test_scenario_holds(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report"
    speed = ["--speed", str(SPEED[path.stem])] if path.stem in SPEED else []
    rc = cli.main(["run", str(path), "--report", str(report), "--var", str(tmp_path / "var"),
                   "--shared", str(SHARED), "--plain", *speed])
    out = capsys.readouterr().out
    summary = json.loads((report / "summary.json").read_text())
    failed = [f"{v['name']}: {v['message']}" for v in summary["verdicts"] if not v["ok"]]
    assert rc == 0 and not failed, "\n".join(failed) + "\n" + out[-4000:]
    assert (report / "timeline.png").stat().st_size > 10_000
    messages = json.loads((report / "messages.json").read_text())
    assert any(m["kind"] == "event" for m in messages)
