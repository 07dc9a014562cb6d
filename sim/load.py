"""`edge-sim load`: thousands of lightweight contract clients against Mosquitto and the NATS
cluster in one run: a steady telemetry phase, a quake-sized burst (every vibration client
alarms within the same second), then a broker (member) killed under them with a second burst.

Measures and reports; never asserts (tests check the machinery on a small run, `make bench`
keeps the big figures)."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from sim.broker import MosquittoBroker
from sim.load_backend import JetStreamBackend, Link, MqttBackend, Tally
from sim.load_clients import Swarm
from sim.nats_cluster import NatsCluster

BROKERS = ("mosquitto", "nats-cluster")


@dataclass(frozen=True)
class LoadSpec:
    clients: int = 1000
    telemetry_s: float = 10.0
    """Seconds between one client's telemetry messages."""
    steady_s: float = 10.0
    """Telemetry only, after every client is connected: the steady rate and CPU."""
    quake_window_s: float = 1.0
    """Every vibration client alarms at a random moment within this window."""
    drain_s: float = 30.0
    """Longest wait for a burst's alarms to reach the back end."""
    storm: bool = True
    """Kill a broker (one member of the cluster) under the clients, alarm again."""
    down_s: float = 10.0
    """The killed broker (member) starts again after this long."""
    connect_rate: float = 400.0
    """New connections per second at the start."""
    site: str = "load"


@dataclass
class Burst:
    alarms: int = 0
    arrived: int = 0
    lost: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    all_in_s: float | None = None
    """From the first alarm published to the last one received."""
    repeats: int = 0
    backend_down_s: float | None = None
    """Seconds the back end had been disconnected when the wait for these alarms ended (None:
    connected): its lost alarms never reached the consumer, whatever the broker holds."""


@dataclass
class LoadResult:
    broker: str
    clients: int
    connected: int = 0
    connect_s: float | None = None
    published_per_s: float | None = None
    consumed_per_s: float | None = None
    burst_consumed_per_s: float | None = None
    member_cpu_pct: list[float | None] = field(default_factory=list)
    """Steady phase, % of one core, per member (one entry for Mosquitto)."""
    member_burst_cpu_pct: list[float | None] = field(default_factory=list)
    member_rss_mb: list[float | None] = field(default_factory=list)
    """Peak resident memory per member over the run."""
    load_cpu_pct: float | None = None
    """The load generator's own CPU in the steady phase (one Python thread drives them)."""
    quake: Burst = field(default_factory=Burst)
    storm_dropped: int = 0
    storm_back_s: float | None = None
    """From the kill until every client was connected again."""
    backend_back_s: float | None = None
    """From the kill until the back end was connected again (0.0: it was not cut off; None:
    it was not back when the aftershock's wait ended)."""
    aftershock: Burst = field(default_factory=Burst)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Meter:
    """CPU and peak RSS of the broker processes, sampled every 0.5 s (a member that
    restarts is followed under its new pid)."""

    def __init__(self, pids: Any) -> None:
        self._pids = pids
        self.rss: list[float] = []
        self._cpu: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _procs(self) -> list[psutil.Process | None]:
        out: list[psutil.Process | None] = []
        for pid in self._pids():
            try:
                out.append(psutil.Process(pid) if pid else None)
            except psutil.Error:
                out.append(None)
        return out

    def cpu_seconds(self) -> list[float | None]:
        out: list[float | None] = []
        for p in self._procs():
            try:
                t = p.cpu_times() if p else None
                out.append(t.user + t.system if t else None)
            except psutil.Error:
                out.append(None)
        return out

    def start(self) -> Meter:
        self.rss = [0.0] * len(self._pids())
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for i, p in enumerate(self._procs()):
                try:
                    if p is not None:
                        self.rss[i] = max(self.rss[i], p.memory_info().rss / 2**20)
                except psutil.Error:
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def _pct(a: list[float | None], b: list[float | None], wall: float) -> list[float | None]:
    return [round(100 * (y - x) / wall, 1) if x is not None and y is not None and wall > 0
            else None for x, y in zip(a, b, strict=True)]


def _burst(tally: Tally, link: Link, published: dict[str, float], ids: list[str],
           res: LoadResult, name: str) -> Burst:
    """The burst's figures; a back end still disconnected is named in the notes, so that
    alarms it never consumed do not read as alarms the broker lost."""
    lat = sorted(1000 * (tally.first[i] - published[i]) for i in ids if i in tally.first)
    b = Burst(alarms=len(ids), arrived=len(lat), lost=len(ids) - len(lat))
    down = link.down_for()
    if down is not None:
        b.backend_down_s = down[0]
        res.notes.append(f"{name}: the back end was NOT CONNECTED to the broker when the wait "
                         f"for the alarms ended (down for {down[0]} s, last error: "
                         f"{down[1] or 'none'}); its {b.lost} lost alarm(s) never reached "
                         "the consumer")
    if lat:
        b.p50_ms = round(statistics.median(lat), 1)
        b.p99_ms = round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1)
        b.max_ms = round(lat[-1], 1)
        first = min(published[i] for i in ids)
        b.all_in_s = round(max(tally.first[i] for i in ids if i in tally.first) - first, 2)
    return b


def _wait_alarms(tally: Tally, ids: list[str], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and any(i not in tally.first for i in ids):
        time.sleep(0.1)


def run_one(broker: str, spec: LoadSpec, log: Any = print) -> LoadResult:
    """One broker: start it, connect the swarm, steady phase, quake, storm; stop it all."""
    res = LoadResult(broker, spec.clients)
    cluster: NatsCluster | None = None
    mosq: MosquittoBroker | None = None
    backend: MqttBackend | JetStreamBackend | None = None
    swarm: Swarm | None = None
    meter: Meter | None = None
    try:
        if broker == "nats-cluster":
            cluster = NatsCluster().start()
            ports = cluster.mqtt_ports
            backend = JetStreamBackend(cluster.nats_urls, spec.site)

            def pids() -> list[int | None]:
                assert cluster is not None
                return cluster.pids
        else:
            # autosave keeps the back end's session on disk, so a crash does not lose it
            mosq = MosquittoBroker(persistence=True, extra_config="autosave_interval 1\n"
                                   "max_connections -1").start()
            ports = [mosq.port]
            backend = MqttBackend(mosq.host, mosq.port, spec.site)

            def pids() -> list[int | None]:
                assert mosq is not None
                return [mosq.pid]
        meter = Meter(pids).start()
        swarm = Swarm(spec.site, spec.clients, ports, spec.telemetry_s, spec.connect_rate)
        t0 = time.monotonic()
        swarm.start()
        limit = spec.clients / spec.connect_rate + 60
        while swarm.connected_count() < spec.clients and time.monotonic() - t0 < limit:
            time.sleep(0.2)
        res.connected = swarm.connected_count()
        res.connect_s = round(time.monotonic() - t0, 1)
        log(f"  {broker}: {res.connected}/{spec.clients} connected in {res.connect_s} s")
        if res.connected < spec.clients:
            res.notes.append(f"only {res.connected} of {spec.clients} connected within "
                             f"{limit:.0f} s")
        time.sleep(min(spec.telemetry_s, 5.0))  # every client past its first telemetry phase

        cpu0, own0 = meter.cpu_seconds(), _own_cpu()
        msgs0, sent0, w0 = backend.tally.count(), swarm.sent["telemetry"], time.monotonic()
        time.sleep(spec.steady_s)
        wall = time.monotonic() - w0
        res.member_cpu_pct = _pct(cpu0, meter.cpu_seconds(), wall)
        res.load_cpu_pct = round(100 * (_own_cpu() - own0) / wall, 1)
        res.published_per_s = round((swarm.sent["telemetry"] - sent0) / wall, 1)
        res.consumed_per_s = round((backend.tally.count() - msgs0) / wall, 1)

        cpu0, msgs0, w0 = meter.cpu_seconds(), backend.tally.count(), time.monotonic()
        before = set(swarm.published)
        swarm.quake(spec.quake_window_s)
        time.sleep(spec.quake_window_s + 0.2)
        ids = [i for i in swarm.published if i not in before]
        _wait_alarms(backend.tally, ids, spec.drain_s)
        wall = time.monotonic() - w0
        res.member_burst_cpu_pct = _pct(cpu0, meter.cpu_seconds(), wall)
        res.burst_consumed_per_s = round((backend.tally.count() - msgs0) / wall, 1)
        res.quake = _burst(backend.tally, backend.link, swarm.published, ids, res, "quake")
        log(f"  {broker}: quake {res.quake.arrived}/{res.quake.alarms} alarms, p99 "
            f"{res.quake.p99_ms} ms, max {res.quake.max_ms} ms{_down(res.quake)}")

        if spec.storm:
            _storm(res, spec, swarm, backend.tally, backend.link, cluster, mosq, ports, log)
            if isinstance(backend, MqttBackend) and not all(backend.connects[1:]):
                res.notes.append("the broker came back without the back end's session: "
                                 "what arrived before it subscribed again went to nobody")
        res.quake.repeats = backend.tally.repeats
        res.member_rss_mb = [round(r, 1) for r in meter.rss]
    finally:
        if meter is not None:
            meter.stop()
        if swarm is not None:
            swarm.stop()
        if backend is not None:
            backend.close()
        if cluster is not None:
            cluster.close()
        if mosq is not None:
            mosq.stop()
    return res


def _down(b: Burst) -> str:
    return "" if b.backend_down_s is None else \
        f"; the back end NOT CONNECTED for {b.backend_down_s} s"


def _storm(res: LoadResult, spec: LoadSpec, swarm: Swarm, tally: Tally, link: Link,
           cluster: NatsCluster | None, mosq: MosquittoBroker | None, ports: list[int],
           log: Any) -> None:
    """The first member (or the only broker) dies; one second later every vibration client
    alarms again (an aftershock), the dropped ones from paho's queue once reconnected; the
    member starts again after down_s."""
    res.storm_dropped = len(swarm.by_port(ports[0]))
    t_kill = time.monotonic()
    if cluster is not None:
        cluster.member_down(0, "kill")
    else:
        assert mosq is not None and mosq.proc is not None
        mosq.proc.kill()
        mosq.proc.wait()
    before = set(swarm.published)
    time.sleep(1.0)
    swarm.quake(spec.quake_window_s)
    restarted = False
    deadline = t_kill + spec.down_s + 90
    while time.monotonic() < deadline:
        if not restarted and time.monotonic() - t_kill >= spec.down_s:
            if cluster is not None:
                cluster.member_up(0)
            else:
                assert mosq is not None
                mosq.start()
            restarted = True
        if time.monotonic() - t_kill > 2 and swarm.connected_count() == spec.clients and \
                res.storm_back_s is None:
            res.storm_back_s = round(time.monotonic() - t_kill, 1)
        if res.storm_back_s is not None and restarted:
            break
        time.sleep(0.1)
    ids = [i for i in swarm.published if i not in before]
    _wait_alarms(tally, ids, spec.drain_s)
    res.aftershock = _burst(tally, link, swarm.published, ids, res, "aftershock")
    res.backend_back_s = link.back_after(t_kill)
    if res.storm_back_s is None:
        res.notes.append(f"{spec.clients - swarm.connected_count()} clients still not back "
                         "after the storm")
    log(f"  {broker_label(cluster)}: storm dropped {res.storm_dropped}, all back after "
        f"{res.storm_back_s} s, the back end after {res.backend_back_s} s; aftershock "
        f"{res.aftershock.arrived}/{res.aftershock.alarms}, lost {res.aftershock.lost}"
        f"{_down(res.aftershock)}")


def _cut(b: Burst) -> str:
    return "" if b.backend_down_s is None else " back end down"


def broker_label(cluster: NatsCluster | None) -> str:
    return "nats-cluster" if cluster is not None else "mosquitto"


def _own_cpu() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def table(results: list[LoadResult]) -> str:
    """The figures side by side, one column per broker."""
    rows: list[tuple[str, list[Any]]] = [
        ("clients connected", [f"{r.connected}/{r.clients} in {r.connect_s} s" for r in results]),
        ("telemetry published msg/s", [r.published_per_s for r in results]),
        ("consumed msg/s (steady)", [r.consumed_per_s for r in results]),
        ("consumed msg/s (quake)", [r.burst_consumed_per_s for r in results]),
        ("broker CPU % per member (steady)", [r.member_cpu_pct for r in results]),
        ("broker CPU % per member (quake)", [r.member_burst_cpu_pct for r in results]),
        ("broker peak RSS MB per member", [r.member_rss_mb for r in results]),
        ("load generator CPU %", [r.load_cpu_pct for r in results]),
        ("quake alarms arrived", [f"{r.quake.arrived}/{r.quake.alarms}{_cut(r.quake)}"
                                  for r in results]),
        ("quake latency p50/p99/max ms",
         [f"{r.quake.p50_ms}/{r.quake.p99_ms}/{r.quake.max_ms}" for r in results]),
        ("quake: last alarm in after s", [r.quake.all_in_s for r in results]),
        ("storm: clients dropped", [r.storm_dropped for r in results]),
        ("storm: every client back after s", [r.storm_back_s for r in results]),
        ("storm: back end back after s",
         ["NOT BACK" if r.aftershock.backend_down_s is not None else r.backend_back_s
          for r in results]),
        ("aftershock alarms arrived (lost)",
         [f"{r.aftershock.arrived}/{r.aftershock.alarms} ({r.aftershock.lost})"
          f"{_cut(r.aftershock)}" for r in results]),
        ("aftershock latency p50/p99/max ms",
         [f"{r.aftershock.p50_ms}/{r.aftershock.p99_ms}/{r.aftershock.max_ms}"
          for r in results]),
        ("repeated alarms (at least once)", [r.quake.repeats for r in results]),
    ]
    w = max(len(n) for n, _ in rows)
    head = f"{'':{w}}  " + "  ".join(f"{r.broker:>26}" for r in results)
    lines = [head] + [f"{n:{w}}  " + "  ".join(f"{str(v):>26}" for v in vals)
                      for n, vals in rows]
    for r in results:
        lines += [f"note ({r.broker}): {n}" for n in r.notes]
    return "\n".join(lines)
