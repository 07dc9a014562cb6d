"""Checks what arrived at the broker against a scenario's expectations.

Judges only recorded arrivals; never talks to nodes or the broker itself."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sim.scenario import Expect, ExpectNone, Scenario


@dataclass(frozen=True, slots=True)
class Arrival:
    t: float
    """Scenario seconds (simulated time) when the message reached the recording client."""
    topic: str
    node: str
    kind: str
    """status, telemetry, event, snapshot, cmd, ack"""
    doc: dict[str, Any] | None
    size: int


@dataclass
class Verdict:
    name: str
    ok: bool
    message: str
    latencies_s: list[float] = field(default_factory=list)


def _node_matches(pattern: str, node: str) -> bool:
    return node.startswith(pattern[:-1]) if pattern.endswith("*") else node == pattern


def events(arrivals: list[Arrival]) -> list[Arrival]:
    return [a for a in arrivals if a.kind == "event" and a.doc is not None]


def check_expect(e: Expect, arrivals: list[Arrival], nodes: list[str]) -> Verdict:
    targets = [n for n in nodes if _node_matches(e.node, n)]
    name = f"expect {e.event}/{e.phase} from {e.node} within {e.within_s}s of t={e.after_s}s"
    failures: list[str] = []
    latencies: list[float] = []
    for node in targets:
        hits = [a for a in events(arrivals)
                if a.node == node and a.doc is not None and a.doc["type"] == e.event
                and (e.phase == "any" or a.doc["phase"] == e.phase)
                and a.t >= e.after_s and (e.historical_ok or not a.doc.get("historical"))]
        in_time = [a for a in hits if a.t - e.after_s <= e.within_s]
        if len(in_time) < e.min_count:
            late = f"; first one arrived after {hits[0].t - e.after_s:.2f}s" if hits else ""
            failures.append(f"{node}: got {len(in_time)} of {e.min_count} in time{late}")
        elif in_time:
            latencies.append(in_time[0].t - e.after_s)
    if not targets:
        failures.append("no such node")
    if failures:
        shown = "; ".join(failures[:5]) + (f" (+{len(failures) - 5} more)"
                                           if len(failures) > 5 else "")
        return Verdict(name, False, shown, latencies)
    worst = max(latencies) if latencies else 0.0
    return Verdict(name, True, f"{len(targets)} node(s), worst latency {worst:.2f}s", latencies)


def check_expect_none(e: ExpectNone, arrivals: list[Arrival], nodes: list[str]) -> Verdict:
    name = f"no {e.event} from {e.node} in [{e.from_s}, {e.to_s if e.to_s is not None else 'end'}]s"
    bad = [a for a in events(arrivals)
           if _node_matches(e.node, a.node) and a.doc is not None and a.doc["type"] == e.event
           and a.t >= e.from_s and (e.to_s is None or a.t <= e.to_s)]
    if bad:
        first = bad[0]
        return Verdict(name, False, f"{len(bad)} unexpected: first from {first.node} at "
                       f"t={first.t:.2f}s ({first.doc and first.doc.get('details')})")
    return Verdict(name, True, "none arrived")


def losses(arrivals: list[Arrival]) -> dict[str, list[str]]:
    """Per node, the (boot, seq) gaps: numbers a node used that never arrived."""
    seen: dict[tuple[str, int], set[int]] = defaultdict(set)
    for a in events(arrivals):
        assert a.doc is not None
        seen[(a.node, a.doc["boot"])].add(a.doc["seq"])
    out: dict[str, list[str]] = defaultdict(list)
    for (node, boot), seqs in seen.items():
        missing = sorted(set(range(1, max(seqs) + 1)) - seqs)
        if missing:
            out[node].append(f"boot {boot}: missing seq {_ranges(missing)}")
    return dict(out)


def _ranges(nums: list[int]) -> str:
    parts: list[str] = []
    start = prev = nums[0]
    for n in nums[1:]:
        if n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = n
    parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def judge(scenario: Scenario, arrivals: list[Arrival], nodes: list[str]) -> list[Verdict]:
    verdicts = [check_expect(e, arrivals, nodes) for e in scenario.expect]
    verdicts += [check_expect_none(e, arrivals, nodes) for e in scenario.expect_none]
    if scenario.no_loss:
        lost = losses(arrivals)
        msg = "; ".join(f"{n}: {', '.join(v)}" for n, v in sorted(lost.items())[:5])
        verdicts.append(Verdict("no event lost (no gaps in boot/seq)", not lost,
                                msg or "every numbered event arrived"))
    return verdicts
