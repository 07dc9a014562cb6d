"""A lost last event is found: what each node logged as sent is set beside what arrived, so
an event that never came is named even when no later number shows a gap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sim import cli
from sim.boardlog import stamp
from sim.expect import Arrival, losses, unarrived
from sim.sent import Sent, from_agent_log, from_board_log

GAS_ID = "gas-1-1-"


def ev(node: str, eid: str, phase: str, boot: int, seq: int, t: float = 1.0) -> Arrival:
    doc: dict[str, Any] = {"event_id": eid, "phase": phase, "boot": boot, "seq": seq,
                           "type": "gas"}
    return Arrival(t, f"safecity/v1/s/{node}/event/gas", node, "event", doc, 10)


def test_each_logged_message_needs_its_own_arrival() -> None:
    sent = [Sent("g", "gas", "start", "g-1-1", 1.0), Sent("g", "gas", "update", "g-1-1", 2.0),
            Sent("g", "gas", "update", "g-1-1", 3.0), Sent("g", "gas", "end", "g-1-1", 4.0),
            Sent("g", "gas", "start", "g-1-5", 99.0)]  # logged after the end: not judged
    arrivals = [ev("g", "g-1-1", "start", 1, 1), ev("g", "g-1-1", "update", 1, 2),
                ev("g", "g-1-1", "update", 1, 2)]  # a duplicate is not the second update
    assert losses(arrivals) == {}  # no gap: the gap check alone sees nothing
    assert unarrived(arrivals, sent, until_s=50) == {
        "g": ["g-1-1 update (logged t=3.00s)", "g-1-1 end (logged t=4.00s)"]}
    arrivals += [ev("g", "g-1-1", "update", 1, 3), ev("g", "g-1-1", "end", 1, 4)]
    assert unarrived(arrivals, sent, until_s=50) == {}
    assert unarrived(arrivals, sent, until_s=100) == {"g": ["g-1-5 start (logged t=99.00s)"]}


def test_board_and_agent_logs_are_read_with_their_times() -> None:
    board = "\n".join([stamp(0.5, "--- start cause=1 t=0.500"), stamp(2.25, "fw boot 1"),
                       stamp(7.125, "fw event gas start gas-1-1-1"),
                       stamp(9.0, "fw eventful but not an event")])
    assert from_board_log("gas-1", board) == [Sent("gas-1", "gas", "start", "gas-1-1-1", 7.125)]
    agent = ("ts=2026-12-07T12:00:03.500Z level=info logger=edge_agent.emitter "
             "event=intrusion phase=start event_id=cam-a-1-2 seq=2 severity=alarm details={}\n"
             "ts=2026-12-07T12:00:04.000Z level=info logger=edge_agent.agent event=ready\n")
    got = from_agent_log("cam", agent, lambda ts: ts - 1796644800.0)
    assert got == [Sent("cam", "intrusion", "start", "cam-a-1-2", 3.5)]


LAST_LOST = """
name = "last-lost"
duration_s = 40
time_scale = 4
[[nodes]]
id = "gas-1"
kind = "gas"
settings = { gas = { warmup_s = 2 } }
[[signals]]
type = "gas_leak"
node = "gas-1"
at_s = 4
peak_ppm = 3000
ramp_s = 1
hold_s = 3
decay_tau_s = 1
[[signals]]
type = "gas_leak"
node = "gas-1"
at_s = 30
peak_ppm = 3000
ramp_s = 1
hold_s = 30
[[faults]]
type = "wifi_down"
node = "gas-1"
at_s = 24
duration_s = 16
[[faults]]
type = "kill"
node = "gas-1"
at_s = 36
duration_s = 0
"""
"""A leak that comes and goes while the board is online (start and end arrive), then a
second one while its WiFi is down; the power is cut before the WiFi is back: the second
start is queued, logged and never sent, and no later number shows the gap."""


@pytest.mark.timeout(120)
def test_a_last_event_that_never_arrives_fails_the_run_and_is_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "last-lost.toml"
    path.write_text(LAST_LOST)
    report = tmp_path / "report"
    rc = cli.main(["run", str(path), "--report", str(report), "--var", str(tmp_path / "var"),
                   "--plain"])
    out = capsys.readouterr().out
    summary = json.loads((report / "summary.json").read_text())
    verdicts = {v["name"]: v for v in summary["verdicts"]}
    assert verdicts["no event lost (no gaps in boot/seq)"]["ok"], out[-3000:]
    lost = verdicts["every event a node logged as sent arrived"]
    assert rc == 1 and not lost["ok"], out[-3000:]
    messages = json.loads((report / "messages.json").read_text())
    arrived = [m["payload"] for m in messages if m["kind"] == "event"]
    assert [d["phase"] for d in arrived if d["type"] == "gas"] == ["start", "end"], arrived
    first = arrived[0]["event_id"]
    (missing,) = summary["unarrived"]["gas-1"]
    eid, phase = missing.split()[:2]
    assert phase == "start" and eid != first and eid.rsplit("-", 1)[0] == \
        first.rsplit("-", 1)[0], missing
    logged_t = float(missing.split("logged t=")[1].rstrip("s)"))
    assert 30 <= logged_t <= 40
    assert f"FAIL  every event a node logged as sent arrived: gas-1: {missing}" in out
