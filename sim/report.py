"""Writes a scenario's report: every message received (JSON), verdicts, latencies, losses,
and the PNG timeline (sim/timeline.py).

Reads only what the runner recorded; never judges (that is sim/expect.py)."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sim import timeline
from sim.expect import Arrival, Verdict, events, losses, order_breaks


def latency(a: Arrival) -> float | None:
    """Scenario seconds from the node's own timestamp to arrival (None without a ts)."""
    return None if a.sent_t is None else round(a.t - a.sent_t, 3)


def latency_stats(arrivals: list[Arrival]) -> dict[str, dict[str, float | int]]:
    """Per event type: how long events took from the node's timestamp to the consumer
    (live ones only: a historical one waited out an outage on purpose)."""
    by: dict[str, list[float]] = {}
    for a in events(arrivals):
        lat = latency(a)
        if lat is not None and a.doc is not None and not a.doc.get("historical"):
            by.setdefault(str(a.doc["type"]), []).append(lat)
    return {k: {"n": len(v), "median_s": round(statistics.median(v), 3),
                "max_s": round(max(v), 3)} for k, v in sorted(by.items())}


def write_report(out: Path, scenario_name: str, arrivals: list[Arrival],
                 verdicts: list[Verdict], tl: timeline.Timeline,
                 run: dict[str, Any] | None = None,
                 unarrived: dict[str, list[str]] | None = None) -> dict[str, Path]:
    """`run`: facts about the run itself (broker, time scale, resources), kept as given;
    `unarrived`: per node, events it logged as sent that never arrived (sim/expect.py)."""
    out.mkdir(parents=True, exist_ok=True)
    messages = [{"t": round(a.t, 3), "topic": a.topic, "node": a.node, "kind": a.kind,
                 "bytes": a.size, "retained": a.retained, "latency_s": latency(a),
                 "payload": a.doc if a.doc is not None or a.kind == "snapshot"
                 else {"unparsed": a.raw}} for a in arrivals]
    (out / "messages.json").write_text(json.dumps(messages, indent=1))
    summary = {
        "scenario": scenario_name,
        "passed": all(v.ok for v in verdicts),
        "verdicts": [asdict(v) for v in verdicts],
        "losses": losses(arrivals),
        "unarrived": unarrived or {},
        "order_breaks": order_breaks(arrivals),
        "latency": latency_stats(arrivals),
        "counts": {"messages": len(arrivals), "events": len(events(arrivals)),
                   "by_kind": _by_kind(arrivals)},
        "faults": [{"start_s": a, "end_s": b, "what": w} for a, b, w in tl.faults],
        "run": run or {},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    png = out / "timeline.png"
    timeline.write(tl, png)
    return {"messages": out / "messages.json", "summary": out / "summary.json", "png": png}


def _by_kind(arrivals: list[Arrival]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in arrivals:
        out[a.kind] = out.get(a.kind, 0) + 1
    return out
