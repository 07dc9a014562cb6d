"""Writes a scenario's report: every message received (JSON), verdicts, latencies, losses,
and a PNG timeline of each node's signal with its events on top.

Reads only what the runner recorded; never judges (that is sim/expect.py)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sim.expect import Arrival, Verdict, events, losses  # noqa: E402

PHASE_COLOURS = {"start": "tab:red", "instant": "tab:orange", "update": "tab:purple",
                 "end": "tab:green"}


@dataclass
class Trace:
    """A node's simulated signal, sampled by the runner for the timeline."""

    label: str
    unit: str
    t: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)


def write_report(out: Path, scenario_name: str, arrivals: list[Arrival],
                 verdicts: list[Verdict], traces: dict[str, Trace], nodes: list[str],
                 faults: list[tuple[float, float, str]]) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    messages = [{"t": round(a.t, 3), "topic": a.topic, "node": a.node, "kind": a.kind,
                 "bytes": a.size, "payload": a.doc} for a in arrivals]
    (out / "messages.json").write_text(json.dumps(messages, indent=1))
    summary = {
        "scenario": scenario_name,
        "passed": all(v.ok for v in verdicts),
        "verdicts": [asdict(v) for v in verdicts],
        "losses": losses(arrivals),
        "counts": {"messages": len(arrivals), "events": len(events(arrivals))},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    png = out / "timeline.png"
    _timeline(png, scenario_name, arrivals, traces, nodes, faults)
    return {"messages": out / "messages.json", "summary": out / "summary.json", "png": png}


def _timeline(path: Path, title: str, arrivals: list[Arrival], traces: dict[str, Trace],
              nodes: list[str], faults: list[tuple[float, float, str]]) -> None:
    shown = [n for n in nodes if n in traces or any(a.node == n for a in events(arrivals))]
    if len(shown) > 12:  # a fleet: plot the nodes that had events, then the first few
        with_events = [n for n in shown if any(a.node == n for a in events(arrivals))]
        shown = (with_events + [n for n in shown if n not in with_events])[:12]
    rows = max(1, len(shown))
    fig, axes = plt.subplots(rows, 1, figsize=(11, 1.9 * rows + 0.8), sharex=True,
                             squeeze=False)
    for ax, node in zip(axes[:, 0], shown, strict=False):
        tr = traces.get(node)
        if tr is not None and tr.t:
            ax.plot(tr.t, tr.v, lw=0.8, color="tab:blue")
            ax.set_ylabel(f"{tr.label}\n[{tr.unit}]", fontsize=8)
        for a in events(arrivals):
            if a.node != node or a.doc is None:
                continue
            colour = PHASE_COLOURS.get(a.doc["phase"], "black")
            ax.axvline(a.t, color=colour, lw=1.2, alpha=0.8)
            ax.text(a.t, 0.98, f" {a.doc['type']}:{a.doc['phase']}",
                    transform=ax.get_xaxis_transform(), fontsize=6, va="top", rotation=90,
                    color=colour)
        for start, end, what in faults:
            ax.axvspan(start, end, color="grey", alpha=0.15)
            ax.text(start, 0.02, f" {what}", transform=ax.get_xaxis_transform(), fontsize=6,
                    color="dimgrey")
        ax.set_title(node, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("scenario time [s]")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
