"""Verdicts of a run on the NATS cluster: after its member faults, every node is back on a
member that is up, and says so.

Judges recorded arrivals only; never touches the cluster or a node."""

from __future__ import annotations

from sim.expect import Arrival, Verdict
from sim.scenario import Scenario


def placement_verdicts(scenario: Scenario, arrivals: list[Arrival], nodes: list[str],
                       live: set[int]) -> list[Verdict]:
    """One verdict per node, when the scenario takes a member down: a message from the node
    arrived after the last member came back (or went down for good), before the end, and
    its latest `broker` (status or telemetry) is a member that is up."""
    member_faults = [f for f in scenario.faults if f.type == "broker_down" and f.member]
    if not member_faults:
        return []
    settled = max(min(f.at_s + f.duration_s, scenario.duration_s) for f in member_faults)
    up = {f"127.0.0.1:{p}" for p in live}
    out: list[Verdict] = []
    for node in nodes:
        mine = [a for a in arrivals if a.node == node and a.t <= scenario.duration_s
                and a.kind in ("status", "telemetry", "event")]
        after = [a for a in mine if a.t >= settled]
        name = f"{node} back on a live member"
        if not after:
            out.append(Verdict(name, False, f"nothing from it after {settled:g} s"))
            continue
        named = [a.doc["broker"] for a in mine if a.doc and "broker" in a.doc]
        where = named[-1] if named else None
        ok = where in up
        out.append(Verdict(name, ok, f"on {where} ({'up' if ok else 'down'}), "
                                     f"{len(after)} messages after {settled:g} s"))
    return out
