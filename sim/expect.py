"""Checks what arrived at the broker against a scenario's expectations.

Judges only recorded arrivals; never talks to nodes or the broker itself."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sim.scenario import Command, Expect, ExpectNone, Scenario

if TYPE_CHECKING:
    from sim.sent import Sent


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
    retained: bool = False
    sent_t: float | None = None
    """Scenario seconds of the message's own timestamp (`ts`), when it has one."""
    raw: str | None = None
    """The payload as text when it should have been JSON and was not (for the report)."""


@dataclass
class Verdict:
    name: str
    ok: bool
    message: str
    latencies_s: list[float] = field(default_factory=list)


def events(arrivals: list[Arrival]) -> list[Arrival]:
    return [a for a in arrivals if a.kind == "event" and a.doc is not None]


def check_expect(e: Expect, arrivals: list[Arrival], targets: list[str]) -> Verdict:
    """`targets`: the node ids e.node names (Scenario.resolve)."""
    sev = f" ({e.severity})" if e.severity else ""
    name = f"expect {e.event}/{e.phase}{sev} from {e.node} within {e.within_s}s of t={e.after_s}s"
    failures: list[str] = []
    latencies: list[float] = []
    for node in targets:
        hits = [a for a in events(arrivals)
                if a.node == node and a.doc is not None and a.doc["type"] == e.event
                and (e.phase == "any" or a.doc["phase"] == e.phase)
                and (e.severity is None or a.doc["severity"] == e.severity)
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


def check_expect_none(e: ExpectNone, arrivals: list[Arrival], targets: list[str]) -> Verdict:
    sev = f" {e.severity}" if e.severity else ""
    to = e.to_s if e.to_s is not None else "end"
    name = f"no{sev} {e.event} from {e.node} in [{e.from_s}, {to}]s"
    wanted = set(targets)
    bad = [a for a in events(arrivals)
           if a.node in wanted and a.doc is not None and a.doc["type"] == e.event
           and (e.severity is None or a.doc["severity"] == e.severity)
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


def unarrived(arrivals: list[Arrival], sent: list[Sent], until_s: float
              ) -> dict[str, list[str]]:
    """Per node, events it logged as sent at or before `until_s` that never arrived: each
    logged (event_id, phase) needs as many distinct (boot, seq) arrivals as times it was
    logged. Catches what a gap check cannot: the last events of a node."""
    logged: dict[tuple[str, str, str], list[float | None]] = defaultdict(list)
    for s in sent:
        if s.t is None or s.t <= until_s:
            logged[(s.node, s.event_id, s.phase)].append(s.t)
    got: dict[tuple[str, str, str], set[tuple[int, int]]] = defaultdict(set)
    for a in events(arrivals):
        assert a.doc is not None
        got[(a.node, str(a.doc["event_id"]), str(a.doc["phase"]))].add(
            (a.doc["boot"], a.doc["seq"]))
    out: dict[str, list[str]] = defaultdict(list)
    for (node, eid, phase), times in logged.items():
        for t in times[len(got[(node, eid, phase)]):]:
            out[node].append(f"{eid} {phase}" + ("" if t is None else f" (logged t={t:.2f}s)"))
    return dict(out)


def order_breaks(arrivals: list[Arrival]) -> dict[str, list[str]]:
    """Per node, events that arrived after a later-numbered one of the same boot (repeats
    of a number already seen are at-least-once duplicates, not disorder)."""
    last: dict[tuple[str, int], int] = {}
    out: dict[str, list[str]] = defaultdict(list)
    seen: set[tuple[str, int, int]] = set()
    for a in events(arrivals):
        assert a.doc is not None
        key = (a.node, a.doc["boot"], a.doc["seq"])
        if key in seen:
            continue
        seen.add(key)
        prev = last.get(key[:2], 0)
        if key[2] < prev:
            out[a.node].append(f"boot {key[1]}: seq {key[2]} after {prev}")
        last[key[:2]] = max(prev, key[2])
    return dict(out)


def _counted(sent: list[Sent], until_s: float) -> int:
    return sum(1 for s in sent if s.t is None or s.t <= until_s)


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


def malformed(arrivals: list[Arrival]) -> list[Arrival]:
    """JSON messages (everything but snapshots) whose payload is not a JSON object."""
    return [a for a in arrivals if a.doc is None and a.kind in ("status", "telemetry",
                                                                 "event", "ack")]


def _ids(scenario: Scenario, name: str) -> list[str]:
    return [i for _, i in scenario.resolve(name)]


def check_command(index: int, c: Command, arrivals: list[Arrival], targets: list[str]
                  ) -> Verdict:
    """The command's ack arrived in time from every target and says what it must."""
    cid = c.id if c.id is not None else f"cmd-{index}"
    want = "" if c.ok is None else (" ok" if c.ok else f" refused ({c.code or 'any code'})")
    name = f"command {c.cmd} ({cid}) to {c.node} at t={c.at_s}s acked{want} within {c.within_s}s"
    failures: list[str] = []
    for node in targets:
        acks = [a for a in arrivals if a.kind == "ack" and a.node == node and a.doc is not None
                and a.doc.get("id") == cid]
        if not acks:
            failures.append(f"{node}: no ack")
            continue
        a = acks[0]
        assert a.doc is not None
        if a.t - c.at_s > c.within_s:
            failures.append(f"{node}: ack after {a.t - c.at_s:.2f}s")
        elif c.ok is not None and a.doc.get("ok") is not c.ok:
            failures.append(f"{node}: ok = {a.doc.get('ok')} ({a.doc.get('error')})")
        elif c.code is not None and (a.doc.get("error") or {}).get("code") != c.code:
            failures.append(f"{node}: code {(a.doc.get('error') or {}).get('code')!r}")
    if failures or not targets:
        return Verdict(name, False, "; ".join(failures[:5]) or "no such node")
    return Verdict(name, True, f"{len(targets)} node(s) acked as expected")


def judge(scenario: Scenario, arrivals: list[Arrival], sent: list[Sent] | None = None
          ) -> list[Verdict]:
    """`sent`: what the nodes logged as sent (sim/sent.py); None when their logs were not
    read, and then no verdict on it."""
    verdicts = [check_expect(e, arrivals, _ids(scenario, e.node)) for e in scenario.expect]
    verdicts += [check_command(i, c, arrivals, _ids(scenario, c.node))
                 for i, c in enumerate(scenario.commands)]
    verdicts += [check_expect_none(e, arrivals, _ids(scenario, e.node))
                 for e in scenario.expect_none]
    if scenario.no_loss:
        lost = losses(arrivals)
        msg = "; ".join(f"{n}: {', '.join(v)}" for n, v in sorted(lost.items())[:5])
        verdicts.append(Verdict("no event lost (no gaps in boot/seq)", not lost,
                                msg or "every numbered event arrived"))
        if sent is not None:
            missing = unarrived(arrivals, sent, scenario.duration_s)
            shown = "; ".join(f"{n}: {', '.join(v[:3])}" + (f" (+{len(v) - 3} more)"
                                                             if len(v) > 3 else "")
                              for n, v in sorted(missing.items())[:5])
            verdicts.append(Verdict("every event a node logged as sent arrived", not missing,
                                    shown or f"all {_counted(sent, scenario.duration_s)} "
                                    "logged by the nodes arrived"))
    bad = malformed(arrivals)
    verdicts.append(Verdict("every message is a JSON object", not bad,
                            f"{len(bad)} malformed, first on {bad[0].topic} at t={bad[0].t:.2f}s"
                            if bad else "all parsed"))
    if scenario.in_order:
        broken = order_breaks(arrivals)
        msg = "; ".join(f"{n}: {', '.join(v[:3])}" for n, v in sorted(broken.items())[:5])
        verdicts.append(Verdict("events in order (boot/seq) per node", not broken,
                                msg or "every node's events arrived in order"))
    return verdicts
