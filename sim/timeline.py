"""The report's timeline: first a plain model of what is shown (per node: its signal and
thresholds, each event at its own timestamp and at its arrival, expectation windows, online
and offline spans), then the PNG drawn from that model alone.

Shows what was recorded and what the scenario asked for; never judges (sim/expect.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sim.expect import Arrival, events  # noqa: E402
from sim.scenario import Scenario  # noqa: E402

PHASE_COLOURS = {"start": "tab:red", "instant": "tab:orange", "update": "tab:purple",
                 "end": "tab:green"}
STATE_COLOURS = {"online": "tab:green", "offline": "tab:red", "sleeping": "tab:blue"}
MAX_LANES = 12
THRESHOLDS = {"gas": (("alarm_ppm", "alarm"), ("high_ppm", "high")),
              "flood": (("level_alarm_cm", "alarm"),),
              "vibration": (("peak_gate_g", "gate"), ("critical_g", "critical"))}
"""Firmware settings drawn over a board's signal, in its unit (a vibration board's signal is
its largest axis without gravity, what its gates compare; its STA/LTA trigger is a ratio and
not drawn)."""


@dataclass
class Trace:
    """A node's simulated signal, sampled by the runner for the timeline."""

    label: str
    unit: str
    t: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Mark:
    """One event message: where the node stamped it and when it arrived."""

    type: str
    phase: str
    event_id: str
    sent_t: float | None
    """Scenario seconds of its own timestamp (None without one: drawn at its arrival)."""
    arrived_t: float
    historical: bool

    @property
    def t(self) -> float:
        return self.arrived_t if self.sent_t is None else self.sent_t


@dataclass(frozen=True)
class Window:
    """An expectation's span: `expect` (this event wanted in it) or `none` (forbidden)."""

    kind: str
    start: float
    end: float
    label: str


@dataclass(frozen=True)
class Span:
    """The node's retained state (online, offline, sleeping) from one status to the next."""

    state: str
    start: float
    end: float


@dataclass
class Lane:
    node: str
    trace: Trace | None
    thresholds: list[tuple[str, float]]
    marks: list[Mark]
    windows: list[Window]
    presence: list[Span]


@dataclass
class Timeline:
    title: str
    duration_s: float
    lanes: list[Lane]
    faults: list[tuple[float, float, str]]


def thresholds(kind: str, settings: dict[str, Any], defaults: dict[str, Any]
               ) -> list[tuple[str, float]]:
    """(label, value) of a board kind's thresholds: its settings over the firmware's
    defaults (`firmware_defaults()`)."""
    mine = {**defaults.get(kind, {}), **settings.get(kind, {})}
    return [(label, float(mine[key])) for key, label in THRESHOLDS.get(kind, ())
            if key in mine]


def marks(arrivals: list[Arrival], node: str) -> list[Mark]:
    out = []
    for a in events(arrivals):
        if a.node == node and a.doc is not None:
            out.append(Mark(str(a.doc["type"]), str(a.doc["phase"]),
                            str(a.doc["event_id"]), a.sent_t, a.t,
                            bool(a.doc.get("historical"))))
    return out


def presence(arrivals: list[Arrival], node: str, end: float) -> list[Span]:
    """Spans between the node's status messages, as they arrived (a Last Will arrives when
    the broker gives up on the node); nothing before the first."""
    changes = [(a.t, str(a.doc.get("state"))) for a in arrivals
               if a.node == node and a.kind == "status" and a.doc is not None]
    out: list[Span] = []
    for i, (t, state) in enumerate(changes):
        nxt = changes[i + 1][0] if i + 1 < len(changes) else max(end, t)
        if out and out[-1].state == state:
            out[-1] = Span(state, out[-1].start, nxt)
        else:
            out.append(Span(state, t, nxt))
    return out


def windows(scenario: Scenario, node: str) -> list[Window]:
    out = []
    for e in scenario.expect:
        if any(i == node for _, i in scenario.resolve(e.node)):
            out.append(Window("expect", e.after_s, e.after_s + e.within_s,
                              f"expect {e.event}/{e.phase}"))
    for n in scenario.expect_none:
        if any(i == node for _, i in scenario.resolve(n.node)):
            out.append(Window("none", n.from_s,
                              scenario.duration_s if n.to_s is None else n.to_s,
                              f"no {n.event}"))
    return out


def build(scenario: Scenario, arrivals: list[Arrival], traces: dict[str, Trace],
          faults: list[tuple[float, float, str]], defaults: dict[str, Any]) -> Timeline:
    """The model of the timeline; a fleet shows the nodes that had events first, then the
    others, MAX_LANES at most."""
    evs = events(arrivals)
    with_events = {a.node for a in evs}
    shown = [n for n in scenario.node_ids() if n in traces or n in with_events]
    if len(shown) > MAX_LANES:
        shown = ([n for n in shown if n in with_events]
                 + [n for n in shown if n not in with_events])[:MAX_LANES]
    specs = {i: spec for spec in scenario.nodes for i in spec.ids()}
    lanes = [Lane(n, traces.get(n),
                  thresholds(specs[n].kind, specs[n].settings, defaults) if n in traces else [],
                  marks(arrivals, n), windows(scenario, n),
                  presence(arrivals, n, scenario.duration_s)) for n in shown]
    return Timeline(scenario.name, scenario.duration_s, lanes, faults)


def draw(tl: Timeline) -> Figure:
    """The figure of a timeline model. Every drawn item carries a gid (`event-sent:ID:PHASE`,
    `event-arrived:...`, `threshold:LABEL`, `window:KIND`, `state:STATE`, `fault`), so what
    is drawn can be read back from the figure."""
    rows = max(1, len(tl.lanes))
    fig, axes = plt.subplots(rows, 1, figsize=(11, 2.1 * rows + 0.9), sharex=True,
                             squeeze=False)
    for ax, lane in zip(axes[:, 0], tl.lanes, strict=False):
        _lane(ax, lane, tl.faults)
    axes[-1, 0].set_xlim(min([0.0] + [m.t for ln in tl.lanes for m in ln.marks]),
                         max([tl.duration_s] + [m.arrived_t for ln in tl.lanes
                                                for m in ln.marks]))
    axes[-1, 0].set_xlabel("scenario time [s]: an event's line at its own timestamp, "
                           "its triangle at its arrival; bottom strip: online (green), "
                           "offline (red), asleep (blue)", fontsize=8)
    fig.suptitle(tl.title)
    fig.tight_layout()
    return fig


def write(tl: Timeline, path: Path) -> None:
    fig = draw(tl)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _lane(ax: Any, lane: Lane, faults: list[tuple[float, float, str]]) -> None:
    top = ax.get_xaxis_transform()  # x in data, y in axes fraction
    for i, w in enumerate(lane.windows):
        colour = "tab:green" if w.kind == "expect" else "tab:red"
        ax.axvspan(w.start, w.end, ymin=0.06, color=colour, alpha=0.10, lw=0,
                   gid=f"window:{w.kind}")
        ax.text(w.start, 0.06 + 0.07 * (i % 3), f" {w.label}", transform=top, fontsize=6,
                color=colour, va="bottom")  # staggered: windows often start together
    for start, end, what in faults:
        ax.axvspan(start, end, color="grey", alpha=0.15, gid="fault")
        ax.text(start, 0.12, f" {what}", transform=top, fontsize=6, color="dimgrey")
    if lane.trace is not None and lane.trace.t:
        ax.plot(lane.trace.t, lane.trace.v, lw=0.8, color="tab:blue", gid="signal")
        ax.set_ylabel(f"{lane.trace.label}\n[{lane.trace.unit}]", fontsize=8)
        for label, value in lane.thresholds:
            ax.axhline(value, color="black", ls="--", lw=0.7, alpha=0.6,
                       gid=f"threshold:{label}")
            ax.text(1.0, value, f" {label} {value:g}", transform=ax.get_yaxis_transform(),
                    fontsize=6, va="center")
        _event_lines(ax, lane.marks)
    else:
        _event_lanes(ax, lane.marks)
    for s in lane.presence:
        ax.axvspan(s.start, s.end, ymin=0.0, ymax=0.04,
                   color=STATE_COLOURS.get(s.state, "grey"), lw=0, gid=f"state:{s.state}")
    ax.set_title(lane.node, fontsize=9, loc="left")
    ax.grid(alpha=0.3)


def _arrival(ax: Any, m: Mark, y: float, transform: Any) -> None:
    """The arrival as a triangle, joined to the event's own time when that differs."""
    colour = PHASE_COLOURS.get(m.phase, "black")
    gid = f"{m.event_id}:{m.phase}"
    if m.sent_t is not None and abs(m.arrived_t - m.sent_t) > 1e-6:
        ax.plot([m.sent_t, m.arrived_t], [y, y], lw=0.8, color=colour, alpha=0.7,
                ls=":" if m.historical else "-", transform=transform, gid=f"delay:{gid}")
    ax.plot([m.arrived_t], [y], "v", ms=4, color=colour, transform=transform,
            gid=f"event-arrived:{gid}")


def _event_lines(ax: Any, mine: list[Mark]) -> None:
    """Events over a signal: a line at each event's own time, labelled while there are few,
    and its arrival at the top."""
    top = ax.get_xaxis_transform()
    for m in mine:
        colour = PHASE_COLOURS.get(m.phase, "black")
        ax.axvline(m.t, color=colour, lw=1.2, alpha=0.8, gid=f"event-sent:{m.event_id}:{m.phase}")
        _arrival(ax, m, 0.97, top)
        if len(mine) <= 12:
            ax.text(m.t, 0.93, f" {m.type}:{m.phase}", transform=top, fontsize=6, va="top",
                    rotation=90, color=colour)


def _event_lanes(ax: Any, mine: list[Mark]) -> None:
    """A node without a signal (a camera): one lane per event type, a bar from each event's
    start to its end at their own times, a dot for instants and a '>' for starts still
    open; each arrival a triangle just above its lane."""
    types = sorted({m.type for m in mine})
    lane = {t: i for i, t in enumerate(types)}
    starts: dict[str, Mark] = {}
    for m in mine:
        y = lane[m.type]
        gid = f"event-sent:{m.event_id}:{m.phase}"
        if m.phase == "start":
            starts[m.event_id] = m
            ax.plot([m.t], [y], "|", ms=8, color=PHASE_COLOURS["start"], gid=gid)
        elif m.phase == "end" and m.event_id in starts:
            t0 = starts.pop(m.event_id).t
            ax.plot([t0, m.t], [y, y], lw=5, alpha=0.45, color=PHASE_COLOURS["start"],
                    solid_capstyle="butt", gid=gid)
        else:
            ax.plot([m.t], [y], "o", ms=4, color=PHASE_COLOURS.get(m.phase, "black"), gid=gid)
        _arrival(ax, m, y + 0.3, ax.transData)
    for m in starts.values():
        ax.plot([m.t], [lane[m.type]], ">", ms=5, color=PHASE_COLOURS["start"])
    ax.set_yticks(range(len(types)), types, fontsize=7)
    ax.set_ylim(-0.7, max(0.7, len(types) - 0.3) + 0.3)
