"""The upstream consumer of a run: a real paho 2.x client that records every message the
broker delivers, stamped on the scenario clock, in arrival order.

Only subscribes and records; never publishes, never judges (that is sim/expect.py)."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sim.clock import ScenarioClock
from sim.expect import Arrival

KINDS = {"status", "telemetry", "event", "snapshot", "cmd"}


def parse_ts(ts: object) -> float | None:
    """Unix seconds of a contract timestamp (`2026-11-22T13:31:16.123Z`), None if absent."""
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def make_arrival(clock: ScenarioClock, real_clock_nodes: frozenset[str], topic: str,
                 payload: bytes, retained: bool) -> Arrival | None:
    """One delivered message as the report keeps it, stamped now on the scenario clock
    (None: not a node's topic). `real_clock_nodes` stamp with host time (camera nodes)."""
    t = clock.now()
    parts = topic.split("/")
    if len(parts) < 5:
        return None
    node, kind = parts[3], parts[4]
    if kind == "cmd" and parts[-1] == "ack":
        kind = "ack"
    elif kind not in KINDS:
        kind = "other"
    doc: dict[str, Any] | None = None
    if kind != "snapshot" and payload:
        try:
            loaded = json.loads(payload)
            doc = loaded if isinstance(loaded, dict) else None
        except ValueError:
            doc = None
    ts = parse_ts(doc.get("ts")) if doc is not None else None
    sent = None if ts is None else (clock.from_real_ts(ts) if node in real_clock_nodes
                                    else clock.from_board_ts(ts))
    raw = None if doc is not None or kind == "snapshot" else \
        payload[:2000].decode("utf-8", "replace")
    return Arrival(t, topic, node, kind, doc, len(payload), retained=retained, sent_t=sent,
                   raw=raw)


class Arrivals:
    """What every recorder of a site offers the runner: the arrivals so far (under
    `_lock`) and the back end's way to send a command (`client`, a paho client)."""

    site: str
    arrivals: list[Arrival]
    _lock: threading.Lock
    client: mqtt.Client

    def since(self, index: int) -> list[Arrival]:
        with self._lock:
            return self.arrivals[index:]

    def snapshot(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)

    def send_command(self, node: str, payload: str) -> None:
        """Publish a command to a node, as the city's back end does (QoS 1)."""
        self.client.publish(f"safecity/v1/{self.site}/{node}/cmd", payload, qos=1)


class ArrivalRecorder(Arrivals):
    """Subscribes to one site with a persistent session (clean_session off, QoS 1), so a
    broker that keeps sessions over a restart (Mosquitto with persistence) queues what
    arrives before we are back: the recorder never causes a loss the nodes did not.

    `real_clock_nodes` are nodes whose timestamps are host time (camera nodes)."""

    def __init__(self, host: str, port: int, site: str, clock: ScenarioClock,
                 real_clock_nodes: frozenset[str] = frozenset()) -> None:
        self.clock = clock
        self.site = site
        self.real_clock_nodes = real_clock_nodes
        self.arrivals: list[Arrival] = []
        self.connects = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"sim-recorder-{uuid.uuid4().hex[:8]}",
                                  clean_session=False)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.client.loop_stop()
            raise RuntimeError(f"recorder could not subscribe at {host}:{port}")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    props: Any = None) -> None:
        self.connects += 1
        client.subscribe(f"safecity/v1/{self.site}/#", qos=1)

    def _on_subscribe(self, *args: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        a = make_arrival(self.clock, self.real_clock_nodes, msg.topic, bytes(msg.payload),
                         bool(msg.retain))
        if a is not None:
            with self._lock:
                self.arrivals.append(a)

    def connected(self) -> bool:
        return bool(self.client.is_connected())

    def close(self) -> None:
        self.client.loop_stop()
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - the broker may already be gone at teardown
            pass
