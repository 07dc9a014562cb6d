"""City-scale load: `edge-sim load` with CLIENTS lightweight contract clients against
Mosquitto and the three-member NATS cluster, one after the other in one run: steady
telemetry, a quake-sized burst, a broker (member) killed under them with an aftershock.

Measures only; never asserts. Steps down from CLIENTS when a size does not connect in
full, and names the limit."""

from __future__ import annotations

import json
from pathlib import Path

from bench.report import Figure
from sim.load import BROKERS, LoadResult, LoadSpec, run_one, table

CLIENTS = 5000
FALLBACK = (3000, 2000, 1000)
TELEMETRY_S = 10.0
"""One telemetry message per client every 10 s: 500 msg/s at 5,000 clients."""


def _figures(r: LoadResult) -> list[Figure]:
    g, b = "load", r.broker
    q, a = r.quake, r.aftershock
    return [
        Figure(g, f"{b}: clients connected", r.connected, "clients", f">= {CLIENTS}",
               r.connected >= CLIENTS, f"in {r.connect_s} s at 400 new connections/s; "
               f"{'; '.join(r.notes)}"),
        Figure(g, f"{b}: messages per second at the back end (steady)", r.consumed_per_s,
               "msg/s", note=f"telemetry every {TELEMETRY_S:g} s per client"),
        Figure(g, f"{b}: messages per second at the back end (quake)",
               r.burst_consumed_per_s, "msg/s"),
        Figure(g, f"{b}: quake alarms lost", q.lost, "alarms", "0", q.lost == 0,
               f"{q.alarms} vibration clients alarming within 1 s; last in after "
               f"{q.all_in_s} s"),
        Figure(g, f"{b}: quake alarm latency p50", q.p50_ms, "ms",
               note="from the moment each alarm is due to the back end's consumer"),
        Figure(g, f"{b}: quake alarm latency p99", q.p99_ms, "ms"),
        Figure(g, f"{b}: quake alarm latency max", q.max_ms, "ms"),
        Figure(g, f"{b}: broker CPU per member (steady)", str(r.member_cpu_pct),
               "% of a core"),
        Figure(g, f"{b}: broker CPU per member (quake)", str(r.member_burst_cpu_pct),
               "% of a core"),
        Figure(g, f"{b}: broker peak RSS per member", str(r.member_rss_mb), "MB"),
        Figure(g, f"{b}: load generator CPU (steady)", r.load_cpu_pct, "% of a core",
               note="one Python thread drives every client"),
        Figure(g, f"{b}: storm: every client back after", r.storm_back_s, "s",
               note=f"{r.storm_dropped} clients dropped by the kill; restarted after 10 s"),
        Figure(g, f"{b}: storm: back end back after", r.backend_back_s, "s",
               note="its own reconnect, from the kill (0: it was not cut off)"
               if a.backend_down_s is None else
               f"NOT CONNECTED when the aftershock's wait ended ({a.backend_down_s} s down)"),
        Figure(g, f"{b}: aftershock alarms lost", a.lost, "alarms", "0", a.lost == 0,
               f"{a.alarms} alarms raised 1 s after the kill; latency p50/p99/max "
               f"{a.p50_ms}/{a.p99_ms}/{a.max_ms} ms"
               + ("" if a.backend_down_s is None else
                  "; the back end was not connected: they never reached its consumer")),
    ]


def run(shared: Path, var: Path) -> list[Figure]:
    out = var / "bench" / "load"
    out.mkdir(parents=True, exist_ok=True)
    results: list[LoadResult] = []
    notes: list[str] = []
    for broker in BROKERS:
        for n in (CLIENTS, *FALLBACK):
            r = run_one(broker, LoadSpec(clients=n, telemetry_s=TELEMETRY_S),
                        log=lambda s: print(f"  {s}", flush=True))
            if r.connected == n:
                break
            notes.append(f"{broker}: {n} clients did not all connect ({r.connected})")
        results.append(r)
    (out / "load.json").write_text(json.dumps([r.as_dict() for r in results], indent=2))
    (out / "load.txt").write_text(table(results) + "\n")
    print(table(results), flush=True)
    figs = [f for r in results for f in _figures(r)]
    if notes:
        figs.append(Figure("load", "sizes stepped down", "; ".join(notes), ""))
    return figs
