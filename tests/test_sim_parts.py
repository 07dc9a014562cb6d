"""The simulator's small parts, without boards: loss and order judgement, switch ramps,
fleet references, the scenario clock and the fleet bench's sizing."""

from __future__ import annotations

from typing import Any

from sim.clock import ScenarioClock
from sim.expect import Arrival, losses, order_breaks
from sim.inputs import _steps
from sim.scenario import Scenario


def _ev(node: str, boot: int, seq: int, t: float = 0.0) -> Arrival:
    doc: dict[str, Any] = {"boot": boot, "seq": seq, "type": "gas", "phase": "start"}
    return Arrival(t, f"safecity/v1/s/{node}/event/gas", node, "event", doc, 10)


def test_gaps_are_losses_and_late_numbers_are_disorder_but_duplicates_are_neither() -> None:
    arrivals = [_ev("a", 1, 1), _ev("a", 1, 3), _ev("a", 1, 2), _ev("a", 1, 3),
                _ev("b", 1, 1), _ev("b", 2, 2)]
    assert losses(arrivals) == {"b": ["boot 2: missing seq 1"]}
    assert order_breaks(arrivals) == {"a": ["boot 1: seq 2 after 3"]}


def test_a_switch_ramp_has_vertical_edges() -> None:
    pts = [(0.0, 1.0), (0.5, 1.0), (1.0, 0.0), (1.5, 0.0)]
    assert _steps(pts) == [[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.5, 0.0]]


def test_fleet_copies_are_named_by_group_copy_or_prefix() -> None:
    s = Scenario.model_validate({
        "name": "f", "duration_s": 10,
        "nodes": [{"id": "g", "kind": "gas", "count": 3}, {"id": "gx", "kind": "gas"}]})
    assert s.node_ids() == ["g-001", "g-002", "g-003", "gx"]
    assert [i for _, i in s.resolve("g")] == ["g-001", "g-002", "g-003"]
    assert [i for _, i in s.resolve("g-002")] == ["g-002"]
    assert [i for _, i in s.resolve("g*")] == ["g-001", "g-002", "g-003", "gx"]


def test_the_scenario_clock_maps_board_and_host_timestamps() -> None:
    c = ScenarioClock(1_000_000_000 * 1_000_000, 10.0)
    assert c.from_board_ts(1_000_000_042.5) == 42.5  # boards count scenario seconds
    assert c.from_real_ts(1_000_000_004.0) == 40.0  # hosts count real seconds
    assert c.real_s(50.0) == 5.0


def test_the_fleet_bench_scales_the_fleet_and_keeps_the_named_boards() -> None:
    from bench.fleet import SCENARIO, sized
    from sim.scenario import load_scenario

    s = sized(load_scenario(SCENARIO), 200)
    assert len(s.node_ids()) == 200
    for e in s.expect:
        assert s.resolve(e.node), e.node


def test_the_summary_says_n_a_for_an_unknown_broker_cpu() -> None:
    from sim.runner import Outcome, summary

    scenario = Scenario.model_validate({"name": "s", "duration_s": 1, "nodes": [
        {"id": "gas-1", "kind": "gas"}]})
    run = {"messages_per_s": 2.0, "real_s": 1.0, "board_rss_kb_mean": 2048.0}
    unknown = summary(Outcome(scenario, [], [], {}, run | {"broker_cpu_pct": None}))
    known = summary(Outcome(scenario, [], [], {}, run | {"broker_cpu_pct": 0.4}))
    assert "broker CPU n/a;" in unknown and "None" not in unknown
    assert "broker CPU 0.4%;" in known
