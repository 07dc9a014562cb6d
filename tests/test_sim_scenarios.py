"""Every scenario in sim/scenarios/ holds when `edge-sim run` plays it: real firmware, the
real agent, real Mosquitto; long ones in accelerated time."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

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
            "vibration-record-flash", "flood-battery-week", "gas-warmup-resets", "gas-slow-leak",
            "quake-record"} <= names


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
    if path.stem == "flood-battery-week":
        _week_was_skipped_honestly(summary, messages)
    if path.stem == "sensor-faults":
        _the_cut_float_is_named(messages)


def _the_cut_float_is_named(messages: list[dict[str, Any]]) -> None:
    """The float wire cut at t=60 reads dry while the probe sees the flood: the fault names
    the float (the input that says "no water"), and the flood raised by the probe holds."""
    faults = [m["payload"]["details"] for m in messages if m["node"] == "flood-1"
              and m["kind"] == "event" and m["payload"]["type"] == "sensor_fault"
              and m["payload"]["phase"] == "start" and m["t"] > 60]
    assert faults and all(d["sensor"] == "float" and d["fault"] == "stuck" for d in faults), faults
    floods = [m["payload"] for m in messages if m["node"] == "flood-1"
              and m["kind"] == "event" and m["payload"]["type"] == "flood"]
    assert [f["phase"] for f in floods] == ["start"] and floods[0]["details"]["source"] != "float"


def _week_was_skipped_honestly(summary: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    """The runner jumped over the board's sleeps (a week in well under a minute), the board's
    clock stayed the scenario clock across the jumps, and every `sleeping` status was kept:
    the board was back online by its wake_by (plus awake_max_s to connect)."""
    run = summary["run"]
    assert run["skipped_s"] > 0.95 * 604_800 and run["real_s"] < 60, run
    live = [m for m in messages if m["latency_s"] is not None and not m["retained"]
            and not m["payload"].get("historical")]
    assert len(live) > 20
    assert all(-0.5 < m["latency_s"] < 3 for m in live), \
        [(m["t"], m["latency_s"]) for m in live if not -0.5 < m["latency_s"] < 3]
    # Back by wake_by: the first message of a later boot was stamped (board clock) no later
    # than wake_by plus the awake budget (the recorder may see a birth only as retained).
    stamped = [m["payload"] for m in messages if isinstance(m["payload"], dict)
               and m["payload"].get("ts") and "boot" in m["payload"]]
    sleeps = {d["boot"]: d for d in stamped if d.get("state") == "sleeping"}
    assert len(sleeps) >= 14  # twice a day for a week
    for boot, s in sorted(sleeps.items())[:-1]:
        back = min(_ts(d["ts"]) for d in stamped if d["boot"] > boot)
        assert back <= _ts(s["wake_by"]) + 6, f"status sleeping at {s['ts']} was not kept"


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
