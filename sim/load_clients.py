"""Thousands of lightweight sensor clients in one thread: each a paho client that speaks
the contract (retained birth with a Last Will, QoS 0 telemetry, QoS 1 events with
event_id/boot/seq) but runs no firmware, driven by one selector loop.

Publishes and reconnects; never judges what arrived (sim/load.py does)."""

from __future__ import annotations

import json
import random
import selectors
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import BrokerAddress
from edge_agent.uplink.failover import Failover

KINDS = ("vibration", "gas", "flood")
"""Clients are dealt these kinds in turn: a third of them vibration boards."""
KEEPALIVE_S = 30
MISC_EVERY_S = 1.0
"""How often every client's keepalive bookkeeping (paho loop_misc) runs."""


def utc_ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{int(t * 1000) % 1000:03d}Z"


@dataclass
class LoadClient:
    """One client's identity, state and paho client."""

    node: str
    kind: str
    site: str
    client: mqtt.Client
    failover: Failover
    instance: str
    boot: int = 1
    seq: int = 0
    connected: bool = False
    connect_at: float | None = None
    next_telemetry: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def base(self) -> str:
        return f"safecity/v1/{self.site}/{self.node}"

    def header(self, now: float) -> dict[str, Any]:
        return {"v": 1, "site": self.site, "node": self.node, "ts": utc_ts(now)}

    def status(self, state: str, reason: str | None = None) -> bytes:
        doc = self.header(time.time()) | {"state": state, "kind": self.kind, "boot": self.boot,
                                          "instance": self.instance, "version": "load"}
        if reason:
            doc["reason"] = reason
        if state == "online":
            doc["broker"] = str(self.failover.current)
        return json.dumps(doc, separators=(",", ":")).encode()

    def telemetry(self, now: float) -> bytes:
        doc = self.header(now) | {"kind": self.kind, "boot": self.boot,
                                  "uptime_s": round(time.monotonic() - self.started, 3),
                                  "broker": str(self.failover.current),
                                  "metrics": {"rssi_dbm": -60, "free_heap_bytes": 40000}}
        return json.dumps(doc, separators=(",", ":")).encode()

    def alarm(self, now: float) -> tuple[str, bytes]:
        """A vibration start, as a board raises it: (event_id, payload)."""
        self.seq += 1
        event_id = f"{self.node}-{self.instance}-{self.boot}-{self.seq}"
        doc = self.header(now) | {
            "event_id": event_id, "boot": self.boot, "seq": self.seq, "type": "vibration",
            "phase": "start", "severity": "critical",
            "details": {"peak_g": 0.21, "duration_s": 0.0, "axis": "z", "sta_lta": 4.2}}
        return event_id, json.dumps(doc, separators=(",", ":")).encode()


class Swarm:
    """Every client, and the one thread that drives them: connects at `connect_rate` per
    second, sends telemetry every `telemetry_s` (each client at its own phase), fails over
    along its broker list with the node's own Failover, and raises alarms on request.

    `published[event_id]` is the wall time each alarm was due (its client's moment of the
    quake), whether or not the client was connected then."""

    def __init__(self, site: str, count: int, ports: list[int], telemetry_s: float,
                 connect_rate: float = 400.0, jitter_s: float = 2.0, seed: int = 1,
                 host: str = "127.0.0.1") -> None:
        self.site = site
        self.telemetry_s = telemetry_s
        self.connect_rate = connect_rate
        self._rng = random.Random(seed)
        self.sel = selectors.DefaultSelector()
        self.clients: list[LoadClient] = []
        self.published: dict[str, float] = {}
        self.sent = {"status": 0, "telemetry": 0, "event": 0}
        self.connects = 0
        self.refused = 0
        self._pending_alarms: list[tuple[float, LoadClient]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-swarm", daemon=True)
        for i in range(count):
            first = i % len(ports)
            order = ports[first:] + ports[:first]
            brokers = [BrokerAddress(host=host, port=p) for p in order]
            node = f"{KINDS[i % len(KINDS)][:3]}-{i + 1:05d}"
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{site}-{node}",
                            clean_session=True)
            c.max_inflight_messages_set(20)
            lc = LoadClient(node, KINDS[i % len(KINDS)], site, c,
                            Failover(brokers, 1.0, 30.0, jitter_s, 1e9,
                                     rng=random.Random(seed * 100_003 + i)),
                            instance=f"{self._rng.getrandbits(32):08x}")
            c.user_data_set(lc)
            c.will_set(f"{lc.base}/status", lc.status("offline", "connection_lost"), qos=1,
                       retain=True)
            c.on_connect = self._on_connect
            c.on_disconnect = self._on_disconnect
            c.on_socket_open = self._sock_open
            c.on_socket_close = self._sock_close
            c.on_socket_register_write = self._want_write
            c.on_socket_unregister_write = self._done_write
            self.clients.append(lc)

    # -- public ---------------------------------------------------------------------------
    def start(self) -> None:
        now = time.monotonic()
        for i, lc in enumerate(self.clients):
            lc.connect_at = now + i / self.connect_rate
        self._thread.start()

    def connected_count(self) -> int:
        return sum(lc.connected for lc in self.clients)

    def vibration(self) -> list[LoadClient]:
        return [lc for lc in self.clients if lc.kind == "vibration"]

    def quake(self, within_s: float = 1.0) -> int:
        """Every vibration client raises an alarm at a random moment in the next `within_s`
        (an earthquake under the district); returns how many."""
        now = time.monotonic()
        due = [(now + self._rng.uniform(0.0, within_s), lc) for lc in self.vibration()]
        with self._lock:
            self._pending_alarms += due
            self._pending_alarms.sort(key=lambda x: x[0])
        return len(due)

    def by_port(self, port: int) -> list[LoadClient]:
        return [lc for lc in self.clients if lc.connected and lc.failover.current.port == port]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for lc in self.clients:
            try:
                lc.client.disconnect()
                lc.client.loop_write()
            except Exception:  # noqa: BLE001 - closing regardless of each socket's state
                pass
        self.sel.close()

    # -- paho callbacks (this thread) -----------------------------------------------------
    def _on_connect(self, c: mqtt.Client, lc: LoadClient, flags: Any, reason: Any,
                    props: Any = None) -> None:
        if reason.is_failure:
            self.refused += 1
            return  # the broker closes the socket; _on_disconnect schedules the next try
        lc.connected = True
        self.connects += 1
        lc.failover.connected(time.monotonic())
        c.publish(f"{lc.base}/status", lc.status("online"), qos=1, retain=True)
        self.sent["status"] += 1

    def _on_disconnect(self, c: mqtt.Client, lc: LoadClient, flags: Any, reason: Any,
                       props: Any = None) -> None:
        was = lc.connected
        lc.connected = False
        if self._stop.is_set():
            return
        delay = lc.failover.lost() if was else lc.failover.refused_attempt()
        lc.connect_at = time.monotonic() + delay

    def _sock_open(self, c: mqtt.Client, lc: LoadClient, sock: Any) -> None:
        self.sel.register(sock, selectors.EVENT_READ, lc)

    def _sock_close(self, c: mqtt.Client, lc: LoadClient, sock: Any) -> None:
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _want_write(self, c: mqtt.Client, lc: LoadClient, sock: Any) -> None:
        try:
            self.sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, lc)
        except (KeyError, ValueError):
            pass

    def _done_write(self, c: mqtt.Client, lc: LoadClient, sock: Any) -> None:
        try:
            self.sel.modify(sock, selectors.EVENT_READ, lc)
        except (KeyError, ValueError):
            pass

    # -- the loop ---------------------------------------------------------------------------
    def _connect(self, lc: LoadClient) -> None:
        lc.connect_at = None
        b = lc.failover.current
        try:
            lc.client.connect_async(b.host, b.port, keepalive=KEEPALIVE_S)
            lc.client.reconnect()
        except OSError:
            lc.connect_at = time.monotonic() + lc.failover.refused_attempt()
            self.refused += 1

    def _run(self) -> None:
        next_misc = time.monotonic() + MISC_EVERY_S
        while not self._stop.is_set():
            now = time.monotonic()
            wall = time.time()
            for lc in self.clients:
                if lc.connect_at is not None and now >= lc.connect_at:
                    self._connect(lc)
                elif lc.connected and now >= lc.next_telemetry:
                    if lc.next_telemetry == 0.0:  # first time: a random phase
                        lc.next_telemetry = now + self._rng.uniform(0, self.telemetry_s)
                        continue
                    lc.next_telemetry = now + self.telemetry_s
                    lc.client.publish(f"{lc.base}/telemetry", lc.telemetry(wall), qos=0)
                    self.sent["telemetry"] += 1
            self._alarms(now)
            for key, mask in self.sel.select(timeout=0.005):
                c = key.data.client
                if mask & selectors.EVENT_READ:
                    c.loop_read()
                if mask & selectors.EVENT_WRITE:
                    c.loop_write()
            if now >= next_misc:
                next_misc = now + MISC_EVERY_S
                for lc in self.clients:
                    lc.client.loop_misc()

    def _alarms(self, now: float) -> None:
        with self._lock:
            n = 0
            while n < len(self._pending_alarms) and self._pending_alarms[n][0] <= now:
                n += 1
            due, self._pending_alarms = self._pending_alarms[:n], self._pending_alarms[n:]
        wall = time.time() - time.monotonic()
        for at, lc in due:
            # Stamped when it was due, not when this thread got to it: while thousands of
            # clients reconnect the thread runs late, and that wait is part of the latency.
            raised = wall + at
            event_id, payload = lc.alarm(raised)
            self.published[event_id] = raised
            # Connected or not: paho keeps a QoS 1 message and sends it once connected.
            lc.client.publish(f"{lc.base}/event/vibration", payload, qos=1)
            self.sent["event"] += 1
