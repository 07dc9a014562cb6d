"""What each node says it sent: the events a board's firmware logged as queued
(`fw event TYPE PHASE EVENT_ID`, firmware/app.py Board.event) and those a camera agent logged
as handed to its uplink (`event=TYPE phase=PHASE event_id=ID seq=N`, edge_agent/emitter.py),
each at the scenario time it was logged.

Set beside what arrived, these show a lost last event, which no gap in (boot, seq) can.
Only reads logs; never judges (that is sim/expect.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from sim.boardlog import parse
from sim.recorder import parse_ts

BOARD_EVENT = re.compile(r"^fw event (\S+) (\S+) (\S+)$")
CAMERA_EVENT = re.compile(r"^ts=(\S+) .*?\bevent=(\w+) phase=(\w+) event_id=(\S+) seq=\d+")


@dataclass(frozen=True, slots=True)
class Sent:
    node: str
    type: str
    phase: str
    event_id: str
    t: float | None
    """Scenario seconds when the node logged it (None: a line without a time)."""


def from_board_log(node: str, stamped: str) -> list[Sent]:
    """A board's stamped log (sim/boardlog.py): its stamps are board time, which the
    runner keeps equal to scenario time."""
    out: list[Sent] = []
    for t, line in parse(stamped):
        m = BOARD_EVENT.match(line)
        if m:
            out.append(Sent(node, m.group(1), m.group(2), m.group(3), t))
    return out


def from_agent_log(node: str, text: str, to_scenario: Callable[[float], float]) -> list[Sent]:
    """A camera agent's log: each line's `ts=` is host time, which `to_scenario` maps
    (ScenarioClock.from_real_ts)."""
    out: list[Sent] = []
    for line in text.splitlines():
        m = CAMERA_EVENT.match(line)
        if m:
            ts = parse_ts(m.group(1))
            out.append(Sent(node, m.group(2), m.group(3), m.group(4),
                            None if ts is None else to_scenario(ts)))
    return out
