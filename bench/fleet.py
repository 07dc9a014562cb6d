"""Fleet load: the largest fleet of simulated sensor boards (real firmware, 1 Hz telemetry
each) that keeps every alarm within its latency bound on this machine, with messages per
second, broker CPU and per-board memory and CPU at each size tried.

Measures only; never asserts. Stops growing the fleet before it would overload the machine
or run past its time budget (a fleet that cannot keep up tells nothing and takes minutes)."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

from bench.report import Figure
from sim import runner
from sim.runner import Options, Outcome, prepare
from sim.scenario import Scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "sim" / "scenarios" / "fleet.toml"
TARGET = 200
LADDER = (200, 250, 300, 400)
"""Sizes tried upwards from the target; below it, FALLBACK downwards if the target fails."""
FALLBACK = (150, 100, 50)
BUDGET_S = 230.0
CPU_HEADROOM = 0.85
"""A size is tried only if its projected CPU stays under this share of the machine."""


def sized(base: Scenario, boards: int) -> Scenario:
    """The fleet scenario with `boards` boards in the same gas:flood proportion (the boards
    its signals and expectations name keep their ids)."""
    total = sum(n.count for n in base.nodes)
    data = base.model_dump()
    left = boards
    for i, node in enumerate(data["nodes"]):
        share = left if i == len(data["nodes"]) - 1 else round(boards * node["count"] / total)
        node["count"] = max(3, share)
        left -= node["count"]
    return Scenario.model_validate(data)


def _estimate_s(boards: int) -> float:
    return 55.0 + 0.08 * boards


def _one(base: Scenario, boards: int, shared: Path, var: Path) -> Outcome:
    scenario = sized(base, boards)
    where = var / "bench" / "fleet" / str(boards)
    options = Options(report=where / "report", work=where / "work", shared=shared, var=var,
                      tty=False)
    return runner.run(scenario, SCENARIO.parent, options, io.StringIO())


def _worst_alarm_s(outcome: Outcome) -> float | None:
    lat = [x for v in outcome.verdicts for x in v.latencies_s]
    return round(max(lat), 3) if lat else None


def _projected_cpu(r: dict[str, Any], boards: int, nxt: int) -> float | None:
    boards_cpu = r.get("boards_cpu_pct_total")
    if boards_cpu is None:
        return None
    rest = (r.get("simulator_cpu_pct") or 0.0) + (r.get("broker_cpu_pct") or 0.0)
    return float(boards_cpu + rest) * nxt / boards


def run_fleet(shared: Path, var: Path) -> tuple[list[tuple[int, Outcome]], list[str]]:
    """Every size tried, in order, and why the search stopped."""
    base = prepare(SCENARIO)
    capacity = 100.0 * (os.cpu_count() or 1)
    t0 = time.monotonic()
    tried: list[tuple[int, Outcome]] = []
    notes: list[str] = []
    sizes = list(LADDER)
    while sizes:
        n = sizes.pop(0)
        if time.monotonic() - t0 + _estimate_s(n) > BUDGET_S:
            notes.append(f"{n} boards not tried: past the {BUDGET_S:.0f} s budget")
            print(f"    {notes[-1]}", flush=True)
            break
        if tried:
            prev_n, prev = tried[-1]
            cpu = _projected_cpu(prev.run, prev_n, n)
            if cpu is not None and cpu > CPU_HEADROOM * capacity and prev.passed:
                notes.append(f"{n} boards not tried: projected CPU {cpu:.0f}% of "
                             f"{capacity:.0f}%")
                print(f"    {notes[-1]}", flush=True)
                break
        outcome = _one(base, n, shared, var)
        tried.append((n, outcome))
        print(f"    fleet of {n}: {'held' if outcome.passed else 'FAILED'} "
              f"({outcome.run.get('messages_per_s')} msg/s, worst alarm "
              f"{_worst_alarm_s(outcome)} s)", flush=True)
        if not outcome.passed:
            if n == TARGET:
                sizes = list(FALLBACK)
                continue
            break
    return tried, notes


def run(shared: Path, var: Path) -> list[Figure]:
    tried, notes = run_fleet(shared, var)
    held = [n for n, o in tried if o.passed]
    best = max(held) if held else 0
    bound = ", ".join(f"{e.node} {e.event} {e.within_s:g} s" for e in prepare(SCENARIO).expect)
    figs = [Figure("fleet", "largest fleet with every alarm within its bound", best, "boards",
                   f">= {TARGET}", best >= TARGET,
                   f"gas and flood boards, 1 Hz telemetry each, alarms: {bound}; "
                   + "; ".join(notes))]
    for n, o in tried:
        r = o.run
        rss = r.get("board_rss_kb_mean")
        pss = r.get("board_pss_kb_mean")
        tag = f"{n} boards"
        figs += [
            Figure("fleet", f"{tag}: alarms within bound", "yes" if o.passed else "no", "",
                   "yes", o.passed, f"worst alarm latency {_worst_alarm_s(o)} s"),
            Figure("fleet", f"{tag}: messages per second at the consumer",
                   r.get("messages_per_s"), "msg/s"),
            Figure("fleet", f"{tag}: broker CPU", r.get("broker_cpu_pct"), "% of a core",
                   note=str(r.get("broker"))),
            Figure("fleet", f"{tag}: RSS per board", round(rss / 1024, 1) if rss else None,
                   "MB", note="a CPython host process embedding MicroPython; PSS "
                   + (f"{pss / 1024:.1f} MB" if pss else "-")),
            Figure("fleet", f"{tag}: CPU per board", r.get("board_cpu_pct_mean"),
                   "% of a core", note=f"simulator itself {r.get('simulator_cpu_pct')}%"),
        ]
    return figs


if __name__ == "__main__":
    from bench import report

    for f in run(ROOT.parent / "shared", ROOT / "var"):
        report.show(f)
