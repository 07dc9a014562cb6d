"""Writes a scenario's report: every message received (JSON), verdicts, latencies, losses,
and a PNG timeline of each node's signal with its events on top.

Reads only what the runner recorded; never judges (that is sim/expect.py)."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sim.expect import Arrival, Verdict, events, losses, order_breaks  # noqa: E402

PHASE_COLOURS = {"start": "tab:red", "instant": "tab:orange", "update": "tab:purple",
                 "end": "tab:green"}


@dataclass
class Trace:
    """A node's simulated signal, sampled by the runner for the timeline."""

    label: str
    unit: str
    t: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)


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
                 verdicts: list[Verdict], traces: dict[str, Trace], nodes: list[str],
                 faults: list[tuple[float, float, str]],
                 run: dict[str, Any] | None = None) -> dict[str, Path]:
    """`run`: facts about the run itself (broker, time scale, resources), kept as given."""
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
        "order_breaks": order_breaks(arrivals),
        "latency": latency_stats(arrivals),
        "counts": {"messages": len(arrivals), "events": len(events(arrivals)),
                   "by_kind": _by_kind(arrivals)},
        "faults": [{"start_s": a, "end_s": b, "what": w} for a, b, w in faults],
        "run": run or {},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    png = out / "timeline.png"
    _timeline(png, scenario_name, arrivals, traces, nodes, faults)
    return {"messages": out / "messages.json", "summary": out / "summary.json", "png": png}


def _by_kind(arrivals: list[Arrival]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in arrivals:
        out[a.kind] = out.get(a.kind, 0) + 1
    return out


def _timeline(path: Path, title: str, arrivals: list[Arrival], traces: dict[str, Trace],
              nodes: list[str], faults: list[tuple[float, float, str]]) -> None:
    evs = events(arrivals)
    shown = [n for n in nodes if n in traces or any(a.node == n for a in evs)]
    if len(shown) > 12:  # a fleet: plot the nodes that had events, then the first few
        with_events = [n for n in shown if any(a.node == n for a in evs)]
        shown = (with_events + [n for n in shown if n not in with_events])[:12]
    rows = max(1, len(shown))
    fig, axes = plt.subplots(rows, 1, figsize=(11, 1.9 * rows + 0.8), sharex=True,
                             squeeze=False)
    for ax, node in zip(axes[:, 0], shown, strict=False):
        mine = [a for a in evs if a.node == node]
        tr = traces.get(node)
        if tr is not None and tr.t:
            ax.plot(tr.t, tr.v, lw=0.8, color="tab:blue")
            ax.set_ylabel(f"{tr.label}\n[{tr.unit}]", fontsize=8)
            _event_lines(ax, mine)
        else:
            _event_lanes(ax, mine)
        for start, end, what in faults:
            ax.axvspan(start, end, color="grey", alpha=0.15)
            ax.text(start, 0.02, f" {what}", transform=ax.get_xaxis_transform(), fontsize=6,
                    color="dimgrey")
        ax.set_title(node, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("scenario time [s] (events at their arrival)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _event_lines(ax: Any, mine: list[Arrival]) -> None:
    """Events over a signal: a line at each arrival, labelled while there are few."""
    for a in mine:
        assert a.doc is not None
        colour = PHASE_COLOURS.get(a.doc["phase"], "black")
        ax.axvline(a.t, color=colour, lw=1.2, alpha=0.8)
        if len(mine) <= 12:
            ax.text(a.t, 0.98, f" {a.doc['type']}:{a.doc['phase']}",
                    transform=ax.get_xaxis_transform(), fontsize=6, va="top", rotation=90,
                    color=colour)


def _event_lanes(ax: Any, mine: list[Arrival]) -> None:
    """A node without a signal (a camera): one lane per event type, a bar from each event's
    start to its end, a dot for instants and for starts still open."""
    types = sorted({str(a.doc["type"]) for a in mine if a.doc is not None})
    lane = {t: i for i, t in enumerate(types)}
    starts: dict[str, float] = {}
    for a in mine:
        assert a.doc is not None
        y = lane[str(a.doc["type"])]
        phase = a.doc["phase"]
        if phase == "start":
            starts[str(a.doc["event_id"])] = a.t
        elif phase == "end" and str(a.doc["event_id"]) in starts:
            t0 = starts.pop(str(a.doc["event_id"]))
            ax.plot([t0, a.t], [y, y], lw=5, alpha=0.45, color=PHASE_COLOURS["start"],
                    solid_capstyle="butt")
        elif phase == "instant":
            ax.plot([a.t], [y], "o", ms=4, color=PHASE_COLOURS["instant"])
    for eid, t0 in starts.items():
        y = lane[next(str(a.doc["type"]) for a in mine
                      if a.doc is not None and str(a.doc["event_id"]) == eid)]
        ax.plot([t0], [y], ">", ms=5, color=PHASE_COLOURS["start"])
    ax.set_yticks(range(len(types)), types, fontsize=7)
    ax.set_ylim(-0.7, max(0.7, len(types) - 0.3))
