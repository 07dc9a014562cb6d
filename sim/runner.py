"""Runs one scenario end to end: broker, nodes, signals and faults on the scenario clock, a
real consumer recording every arrival, a live table, the verdicts and the report.

Owns the order of things and nothing else: every part it drives lives in its own module.
Never leaves a process behind, whatever fails."""

from __future__ import annotations

import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sim import faults, records
from sim.board import firmware_defaults, firmware_setting_problems
from sim.brokers import BrokerChoice, open_broker
from sim.clock import ScenarioClock
from sim.cluster_checks import placement_verdicts
from sim.expect import Arrival, Verdict, judge, unarrived
from sim.fleet import BoardNode, Fleet, Where
from sim.inputs import FloodFeed
from sim.js_recorder import JetStreamRecorder
from sim.live import LiveTable
from sim.nats_cluster import NatsCluster
from sim.recorder import ArrivalRecorder
from sim.report import write_report
from sim.resources import CpuMeter, cpu_seconds, memory
from sim.scenario import Scenario, ScenarioError, load_scenario, settings_problems
from sim.sent import Sent, from_agent_log, from_board_log
from sim.timeline import build as build_timeline

TICK_S = 0.1
"""Real seconds between the runner's looks at the clock (faults, inputs, the live table)."""
SKIP_SETTLE_S = 0.15
"""Real seconds every board must have been in deep sleep before the clock jumps ahead, so
what a board sent just before sleeping has reached the recorder (and is stamped) first."""


@dataclass(frozen=True)
class Options:
    report: Path
    work: Path
    shared: Path
    var: Path
    broker: BrokerChoice = "auto"
    tty: bool | None = None
    settle_s: float = 3.0
    """Real seconds after the end for messages still on their way."""


@dataclass
class Outcome:
    scenario: Scenario
    verdicts: list[Verdict]
    arrivals: list[Arrival]
    files: dict[str, Path]
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(v.ok for v in self.verdicts)


def prepare(path: Path, speed: float | None = None) -> Scenario:
    """Load and validate a scenario (raises ScenarioError naming each bad field), with the
    time scale overridden by `speed`, the board settings checked against the firmware, and
    each recording's file checked and made absolute (it is relative to the scenario)."""
    scenario = load_scenario(path)
    if speed is not None:
        data = scenario.model_dump(exclude_unset=True)  # what the file said, nothing more
        data["time_scale"] = speed
        try:
            scenario = Scenario.model_validate(data)
        except ValueError as exc:
            raise ScenarioError(str(path), [f"--speed: {exc}"]) from None
    problems = [f"nodes[{i}].config: no such file {n.config}" for i, n in
                enumerate(scenario.nodes) if n.config is not None
                and not (path.parent / n.config).is_file()]
    if any(n.kind != "camera" for n in scenario.nodes):
        problems += settings_problems(scenario, firmware_defaults())
        if not problems:  # known keys of the right types: now the firmware's own ranges
            problems += firmware_setting_problems(
                [(f"nodes[{i}].settings", n.kind, n.settings)
                 for i, n in enumerate(scenario.nodes) if n.kind != "camera" and n.settings])
    problems += records.problems(scenario, path.parent)  # recordings' files, from here
    if problems:
        raise ScenarioError(str(path), problems)
    return records.resolve(scenario, path.parent)


def broker_problems(scenario: Scenario, choice: BrokerChoice) -> list[str]:
    """Faults that need the cluster, asked of another broker: an error, not a no-op."""
    if choice == "nats-cluster":
        return []
    return [f"faults[{i}].member: needs --broker nats-cluster" for i, f in
            enumerate(scenario.faults) if f.type == "broker_down" and f.member is not None]


def run(scenario: Scenario, scenario_dir: Path, options: Options, out: TextIO) -> Outcome:
    """Run a validated scenario; the report lands in options.report."""
    real_start = time.monotonic()
    shutil.rmtree(options.work, ignore_errors=True)
    options.work.mkdir(parents=True)
    defaults = firmware_defaults()
    broker = open_broker(options.broker)
    fleet: Fleet | None = None
    recorder: ArrivalRecorder | JetStreamRecorder | None = None
    facts: dict[str, Any] = {"broker": broker.name, "time_scale": scenario.time_scale}
    cluster = broker if isinstance(broker, NatsCluster) else None
    ports = cluster.mqtt_ports if cluster is not None else [broker.port]
    live: set[int] = set()
    try:
        where = Where(scenario_dir, options.work, options.shared, options.var)
        fleet = Fleet(scenario, where, broker.host, ports, defaults)
        cameras = frozenset(c.id for c in fleet.cameras())
        # Time 0 once every node is powered on: launching one takes about 30 ms.
        clock = ScenarioClock.starting_in(0.5 + 0.04 * len(fleet.nodes), scenario.time_scale)
        if cluster is not None:  # the back end consumes from JetStream, as a city's would
            recorder = JetStreamRecorder(cluster.nats_urls, broker.host, broker.port,
                                         scenario.site, clock, cameras)
            facts["members"] = {n: m + 1 for n, m in fleet.members.items()}
        else:
            recorder = ArrivalRecorder(broker.host, broker.consumer_port, scenario.site, clock,
                                       cameras)
        timeline = faults.plan(scenario, fleet, broker, send=recorder.send_command)
        kinds = {n: fleet.nodes[n].kind for n in scenario.node_ids()}
        table = LiveTable(out, kinds, scenario.duration_s, options.tty)
        out.write(f"scenario {scenario.name}: {len(kinds)} nodes, {scenario.duration_s:g} s "
                  f"at x{scenario.time_scale:g}, broker {broker.name} on port {broker.port}\n")
        out.flush()
        fleet.start(clock)
        facts["startup_s"] = round(time.monotonic() - real_start, 2)
        pids = cluster.pids if cluster is not None else [broker.pid]
        facts.update(_play(scenario, clock, fleet, recorder, timeline, table, pids))
        time.sleep(options.settle_s)
        table.add(recorder.since(table.messages))
        table.tick(clock.now(), force=True)
        if cluster is not None:
            live = {m.ports.mqtt for m in cluster.members if m.pid is not None and not m.paused}
            facts["duplicates_dropped"] = getattr(recorder, "duplicates", 0)
    finally:
        if fleet is not None:
            fleet.stop()
        if recorder is not None:
            recorder.close()
        broker.close()
    assert recorder is not None and fleet is not None  # else the try block raised
    arrivals = recorder.snapshot()
    sent = sent_by(fleet, clock)
    verdicts = judge(scenario, arrivals, sent) + _smallint_verdicts(fleet) + \
        placement_verdicts(scenario, arrivals, list(fleet.nodes), live)
    traces = {b.id: b.feed.trace(scenario.duration_s) for b in fleet.boards()}
    facts["real_s"] = round(time.monotonic() - real_start, 2)
    tl = build_timeline(scenario, arrivals, traces,
                        [(s.start, s.end, s.what) for s in timeline.spans], defaults)
    files = write_report(options.report, scenario.name, arrivals, verdicts, tl, facts,
                         unarrived(arrivals, sent, scenario.duration_s))
    files["logs"] = _save_logs(fleet, options.report / "logs")
    return Outcome(scenario, verdicts, arrivals, files, facts)


def _play(scenario: Scenario, clock: ScenarioClock, fleet: Fleet,
          recorder: ArrivalRecorder | JetStreamRecorder, timeline: faults.Timeline,
          live: LiveTable, broker_pids: list[int | None]) -> dict[str, Any]:
    """The scenario's time line, from t=0 to its end; returns what it measured (a cluster's
    CPU per member and in total: a member that restarts is measured up to its exit)."""
    time.sleep(clock.wait_until(0.0))
    wall0 = time.monotonic()
    broker_cpu = [CpuMeter(wall0, pid) for pid in broker_pids]
    own_cpu0 = _own_cpu()
    boards = BoardsMeter(fleet)
    seen = 0
    skipped = 0.0
    skips = 0
    woken = False
    while True:
        t = clock.now()
        for action in timeline.due(t):
            action.run()
            live.note(t, action.what)
        if woken:  # after a jump: boards whose wake has come start now, not at the next look
            for b in fleet.boards():
                b.board.look()
            woken = False
        for b in fleet.boards():
            b.feed.update(t)
        fresh = recorder.since(seen)
        seen += len(fresh)
        live.add(fresh)
        live.tick(t)
        boards.sample(t / scenario.duration_s)
        if t >= scenario.duration_s:
            break
        # With the broker up, only while the recorder is connected: what a woken board sends
        # is then stamped on arrival, not when the recorder's reconnect (real time) comes.
        gap = skip_sleep(scenario, clock, fleet, timeline) \
            if recorder.connected() or _broker_down(scenario, t) else 0.0
        if gap > 0:
            skipped += gap
            skips += 1
            woken = True
            continue
        time.sleep(TICK_S)
    wall = time.monotonic() - wall0
    telemetry = sum(1 for a in recorder.snapshot() if a.kind == "telemetry")
    return {**boards.facts(), "played_s": round(wall, 2), "skipped_s": round(skipped, 1),
            "skips": skips,
            "messages_per_s": round(seen / wall, 1) if wall > 0 else None,
            "telemetry_per_s": round(telemetry / wall, 1) if wall > 0 else None,
            **_broker_cpu(broker_cpu, time.monotonic()),
            "simulator_cpu_pct": _round(100 * (_own_cpu() - own_cpu0) / wall if wall else None)}


def skip_sleep(scenario: Scenario, clock: ScenarioClock, fleet: Fleet,
               timeline: faults.Timeline) -> float:
    """Jump the clock over time in which nothing can happen: every board's process has
    exited into deep sleep (for SKIP_SETTLE_S at least) and no camera runs (the caller also
    waits for its recorder to be connected while the broker is up). The jump ends at
    the earliest of the next timeline action, each board's timer wake, the first time its
    ext0 pin can reach its wake level, and the end; woken boards start on the shifted clock
    (SimBoard.skip_s), so board time stays scenario time. Returns the seconds skipped."""
    if fleet.cameras() or not fleet.boards():
        return 0.0
    t = clock.now()
    target = scenario.duration_s
    nxt = timeline.next_t()
    if nxt is not None:
        target = min(target, nxt)
    sleeping: list[tuple[BoardNode, float, tuple[int, int] | None]] = []
    for b in fleet.boards():
        s = b.board.asleep()
        if s is None or time.monotonic() - b.board.slept_at < SKIP_SETTLE_S:
            return 0.0
        sleeping.append((b, *s))
    for b, until, ext0 in sleeping:
        target = min(target, until)
        if ext0 is not None:
            target = min(target, _ext0_change(b, ext0, t, target))
    with ExitStack() as held:
        for b, _, _ in sleeping:
            held.enter_context(b.board.lock)
        if any(b.board.asleep() is None for b, _, _ in sleeping):
            return 0.0  # one woke while we looked (its supervisor saw its pin or timer)
        gap = clock.skip_to(target)
        if gap <= 0:
            return 0.0
        for b, _, _ in sleeping:
            b.board.skip_s = clock.skipped_s
            b.feed.update(target)
    return gap


def _broker_cpu(meters: list[CpuMeter], wall: float) -> dict[str, Any]:
    each = [m.percent(wall) for m in meters]
    if len(each) == 1:
        return {"broker_cpu_pct": _round(each[0])}
    known = [p for p in each if p is not None]
    return {"broker_cpu_pct": _round(sum(known)) if known else None,
            "broker_member_cpu_pct": [_round(p) for p in each]}


def _broker_down(scenario: Scenario, t: float) -> bool:
    """The whole broker is down (one cluster member down leaves the others serving)."""
    return any(f.type == "broker_down" and f.member is None and f.at_s <= t < f.at_s + f.duration_s
               for f in scenario.faults)


def _ext0_change(b: BoardNode, ext0: tuple[int, int], t: float, until: float) -> float:
    """The earliest time in [t, until] at which a sleeping board's ext0 pin may reach its
    wake level (t when that cannot be known: no skip)."""
    pin, level = ext0
    if isinstance(b.feed, FloodFeed) and pin == b.board.board["pins"]["float"]:
        w = b.feed.next_float_level(level, t, until)
        return until if w is None else w
    return t


class BoardsMeter:
    """The boards' CPU share and memory in the middle half of a run (start-up and the
    anomalies near the end left out): what a board costs while it reports."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._first: tuple[float, dict[int, float]] | None = None
        self._facts: dict[str, Any] = {}

    def _cpu(self) -> dict[int, float]:
        pids = [p for b in self.fleet.boards() for p in [b.pid()] if p is not None]
        return {p: c for p in pids for c in [cpu_seconds(p)] if c is not None}

    def sample(self, progress: float) -> None:
        if self._first is None and progress >= 0.25:
            self._first = (time.monotonic(), self._cpu())
        elif self._first is not None and not self._facts and progress >= 0.75:
            wall = time.monotonic() - self._first[0]
            now = self._cpu()
            used = [now[p] - c for p, c in self._first[1].items() if p in now]
            m = memory(list(now))
            self._facts = {
                "boards_measured": m.processes, "board_rss_kb_mean": m.rss_kb_mean,
                "board_pss_kb_mean": m.pss_kb_mean,
                "board_cpu_pct_mean": _round(100 * sum(used) / len(used) / wall)
                if used and wall > 0 else None,
                "boards_cpu_pct_total": _round(100 * sum(used) / wall) if wall > 0 else None}

    def facts(self) -> dict[str, Any]:
        return self._facts


def _smallint_verdicts(fleet: Fleet) -> list[Verdict]:
    """One verdict per board that ran with the small-int check."""
    out = []
    for b in fleet.boards():
        if b.board.smallint_check:
            flags = b.board.smallint_flags()
            shown = ", ".join(f"{p} = {v}" for p, v in list(flags.items())[:3])
            out.append(Verdict(f"{b.id} keeps ESP32 small ints", not flags,
                               f"outside +-2**30: {shown}" if flags else "every value in range"))
    return out


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def sent_by(fleet: Fleet, clock: ScenarioClock) -> list[Sent]:
    """What every node logged as sent (sim/sent.py), read once it has stopped."""
    out: list[Sent] = []
    for node_id, n in fleet.nodes.items():
        if n.kind == "camera":
            out += from_agent_log(node_id, n.log_text(), clock.from_real_ts)
        else:
            out += from_board_log(node_id, n.log_text())
    return out


def _save_logs(fleet: Fleet | None, dest: Path) -> Path:
    """Each node's own log (firmware prints, agent log) next to the report."""
    dest.mkdir(parents=True, exist_ok=True)
    if fleet is not None:
        for node_id, n in fleet.nodes.items():
            (dest / f"{node_id}.log").write_text(n.log_text())
    return dest


def summary(outcome: Outcome) -> str:
    """The pass/fail summary: one line per expectation, failures first explained."""
    ok = sum(v.ok for v in outcome.verdicts)
    head = "PASSED" if outcome.passed else "FAILED"
    lines = [f"== {outcome.scenario.name}: {head} ({ok}/{len(outcome.verdicts)} checks held) =="]
    for v in outcome.verdicts:
        lines.append(f"  {'PASS' if v.ok else 'FAIL'}  {v.name}: {v.message}")
    r = outcome.run
    lines.append(f"  {len(outcome.arrivals)} messages; {r.get('messages_per_s')} msg/s; "
                 f"broker CPU {_pct(r.get('broker_cpu_pct'))}; board RSS "
                 f"{_kb(r.get('board_rss_kb_mean'))}; real time {r.get('real_s')} s")
    lines.append("report: " + ", ".join(str(p) for p in outcome.files.values()))
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    """`n/a` when the broker's CPU is not known (an external broker), never `None%`."""
    return "n/a" if v is None else f"{v}%"


def _kb(v: float | None) -> str:
    return "-" if v is None else f"{v / 1024:.1f} MB"
