"""The scenario's faults as a timeline of actions: the broker going down and up, a node's
WiFi dropping, a slow or lossy link, sensor faults, a power cut.

Schedules and applies; never decides whether the system coped (that is sim/expect.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from sim.board import HARD_RESET, PWRON_RESET, WDT_RESET
from sim.fleet import BoardNode, Fleet
from sim.inputs import default_sensor
from sim.nats_cluster import NatsCluster
from sim.proxy import FaultyLink
from sim.scenario import Fault, Scenario


class Outage(Protocol):
    def stop(self) -> None: ...

    def start(self) -> object: ...


@dataclass(frozen=True)
class Action:
    t: float
    what: str
    run: Callable[[], None]


@dataclass(frozen=True)
class Span:
    """A fault's stretch of scenario time, for the report's timeline."""

    start: float
    end: float
    what: str


class Timeline:
    """Actions in scenario-time order; `due(t)` hands out the ones whose time has come."""

    def __init__(self, actions: list[Action], spans: list[Span]) -> None:
        self.actions = sorted(actions, key=lambda a: a.t)
        self.spans = spans
        self._next = 0

    def due(self, t: float) -> list[Action]:
        out: list[Action] = []
        while self._next < len(self.actions) and self.actions[self._next].t <= t:
            out.append(self.actions[self._next])
            self._next += 1
        return out

    def next_t(self) -> float | None:
        """Scenario time of the next action not yet handed out (None: none left)."""
        return self.actions[self._next].t if self._next < len(self.actions) else None


def command_id(index: int, given: str | None) -> str:
    return given if given is not None else f"cmd-{index}"


def _links(fleet: Fleet, scenario: Scenario, f: Fault) -> list[FaultyLink]:
    if f.node is None:
        return list(fleet.links)
    return [link for _, i in scenario.resolve(f.node)
            for link in [fleet.nodes[i].link] if link is not None]


def plan(scenario: Scenario, fleet: Fleet, broker: Outage,
         send: Callable[[str, str], object] | None = None) -> Timeline:
    """The faults' actions, and the scenario's commands sent with `send(node, payload)`."""
    actions: list[Action] = []
    spans: list[Span] = []
    if send is not None:
        for i, c in enumerate(scenario.commands):
            payload = json.dumps({"id": command_id(i, c.id), "cmd": c.cmd, "args": c.args})
            for _, node in scenario.resolve(c.node):
                actions.append(Action(c.at_s, f"command {c.cmd} to {node}",
                                      _all([partial(send, node, payload)])))
    for f in scenario.faults:
        end = min(f.at_s + f.duration_s, scenario.duration_s)
        where = f" {f.node}" if f.node else (f" member {f.member} ({f.how})" if f.member else "")
        label = f"{f.type}{where}"
        on, off = _actions(scenario, fleet, broker, f)
        actions.append(Action(f.at_s, f"{label} begins", on))
        if off is not None:
            actions.append(Action(end, f"{label} ends", off))
        spans.append(Span(f.at_s, end if off is not None else scenario.duration_s, label))
    return Timeline(actions, spans)


Pair = tuple[Callable[[], None], Callable[[], None] | None]


def _all(calls: list[Callable[[], object]]) -> Callable[[], None]:
    def run() -> None:
        for call in calls:
            call()

    return run


def _actions(scenario: Scenario, fleet: Fleet, broker: Outage, f: Fault) -> Pair:
    if f.type == "broker_down" and f.member is not None:
        assert isinstance(broker, NatsCluster)  # runner.broker_problems checked it
        return (_all([partial(broker.member_down, f.member - 1, f.how)]),
                _all([partial(broker.member_up, f.member - 1)]))
    if f.type == "broker_down":
        return _all([broker.stop]), _all([broker.start])
    if f.type in ("link_slow", "link_lossy"):
        links = _links(fleet, scenario, f)
        attr, value = ("delay_s", f.delay_s) if f.type == "link_slow" else ("loss", f.loss)
        return (_all([partial(setattr, link, attr, value) for link in links]),
                _all([partial(setattr, link, attr, 0.0) for link in links]))
    assert f.node is not None  # validated: every other fault names its node
    nodes = [fleet.nodes[i] for _, i in scenario.resolve(f.node)]
    if f.type == "wifi_down":
        return (_all([partial(n.wifi, False) for n in nodes]),
                _all([partial(n.wifi, True) for n in nodes]))
    if f.type == "kill":
        return (_all([n.kill for n in nodes]),
                _all([n.restart for n in nodes]) if f.duration_s > 0 else None)
    boards = [n for n in nodes if isinstance(n, BoardNode)]
    if f.type == "reset":
        cause = {"watchdog": WDT_RESET, "hard": HARD_RESET, "power_on": PWRON_RESET}[f.cause]
        return _all([partial(b.board.reset, cause) for b in boards]), None
    if f.type == "flash_stall":
        return (_all([partial(b.board.set, "flash", "erase_ms", f.stall_ms) for b in boards]),
                _all([partial(b.board.set, "flash", "erase_ms", None) for b in boards]))

    def sensor_fault(on: bool) -> Callable[[], None]:
        def run() -> None:
            for b in boards:
                b.feed.fault(f.type, f.sensor or default_sensor(b.kind), on,
                             b.board.board_time())

        return run

    return sensor_fault(True), sensor_fault(False)
