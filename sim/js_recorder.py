"""The city back end on a NATS cluster: a durable JetStream consumer over the site's MQTT
subjects (`/` maps to `.`) that records every message and drops repeated events.

Only consumes (and sends the scenario's commands over MQTT, as a back end does); never judges."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from typing import Any

import nats
import paho.mqtt.client as mqtt
from nats.js.api import StorageType, StreamConfig
from paho.mqtt.enums import CallbackAPIVersion

from sim.clock import ScenarioClock
from sim.expect import Arrival
from sim.recorder import Arrivals, make_arrival

FETCH_BATCH = 256
FETCH_WAIT_S = 0.5


MQTT_STREAM = "$MQTT_msgs"
MQTT_PREFIX = "$MQTT.msgs."
"""NATS keeps every QoS 1 MQTT publish in this stream before it acknowledges it: a consumer
here sees every event, status and snapshot a node got a PUBACK for. (A stream of our own
over the plain subjects takes them in without acknowledging the publisher, and lost a
node's PUBACKed events while a member died: so only telemetry, QoS 0 and best effort by
the contract, comes from one.)"""


def subject_to_topic(subject: str) -> str:
    """The MQTT topic of a NATS subject: `.` is `/` (the contract has no `.` in a level)."""
    return subject.removeprefix(MQTT_PREFIX).replace(".", "/")


def event_key(a: Arrival) -> tuple[Any, ...] | None:
    """What makes an event message unique (docs/contract.md): (event_id, phase, seq)."""
    if a.kind != "event" or a.doc is None or "event_id" not in a.doc:
        return None
    return (a.doc["event_id"], a.doc.get("phase"), a.doc.get("seq"))


class JetStreamRecorder(Arrivals):
    """Two durable pull consumers with explicit acks: one on NATS's own MQTT stream for the
    site's QoS 1 messages, one on a stream of the site's telemetry replicated on three
    members; a member that dies loses the consumers nothing, and the client moves to another
    member by itself. At-least-once delivery repeats messages; an
    event already seen (same event_id, phase and seq) is counted in `duplicates` and not
    recorded again, as a back end de-duplicates."""

    def __init__(self, servers: list[str], mqtt_host: str, mqtt_port: int, site: str,
                 clock: ScenarioClock, real_clock_nodes: frozenset[str] = frozenset(),
                 replicas: int = 3) -> None:
        self.clock = clock
        self.site = site
        self.real_clock_nodes = real_clock_nodes
        self.arrivals: list[Arrival] = []
        self.duplicates = 0
        self._seen: set[tuple[Any, ...]] = set()
        self._lock = threading.Lock()
        self._closing = False
        self._nc: Any = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="js-recorder",
                                        daemon=True)
        self._thread.start()
        try:
            subs = asyncio.run_coroutine_threadsafe(
                self._setup(servers, replicas), self._loop).result(30)
        except Exception as exc:
            self._stop_loop()
            raise RuntimeError(f"recorder could not consume from {servers}: {exc}") from exc
        self._tasks = [asyncio.run_coroutine_threadsafe(self._consume(sub), self._loop)
                       for sub in subs]
        # Commands go over MQTT at QoS 1, so a node's persistent session queues them.
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"sim-backend-{uuid.uuid4().hex[:8]}")
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect(mqtt_host, mqtt_port, keepalive=10)
        self.client.loop_start()

    async def _setup(self, servers: list[str], replicas: int) -> Any:
        self._nc = await nats.connect(servers=servers, max_reconnect_attempts=-1,
                                      reconnect_time_wait=0.5, name="sim-backend",
                                      error_cb=_quiet)
        js = self._nc.jetstream()
        name = self.site.replace("-", "_")
        telemetry = f"safecity.v1.{self.site}.*.telemetry"
        stream = "TELEMETRY_" + name
        await js.add_stream(StreamConfig(name=stream, subjects=[telemetry],
                                         num_replicas=replicas, storage=StorageType.FILE))
        return [await js.pull_subscribe(f"{MQTT_PREFIX}safecity.v1.{self.site}.>",
                                        durable="backend-" + name, stream=MQTT_STREAM),
                await js.pull_subscribe(telemetry, durable="backend", stream=stream)]

    async def _consume(self, sub: Any) -> None:
        while not self._closing:
            try:
                msgs = await sub.fetch(FETCH_BATCH, timeout=FETCH_WAIT_S)
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - a member re-electing or the link moving
                await asyncio.sleep(0.2)
                continue
            for m in msgs:
                self._record(subject_to_topic(m.subject), bytes(m.data))
                with contextlib.suppress(Exception):
                    await m.ack()

    def _record(self, topic: str, payload: bytes) -> None:
        a = make_arrival(self.clock, self.real_clock_nodes, topic, payload, False)
        if a is None:
            return
        key = event_key(a)
        with self._lock:
            if key is not None:
                if key in self._seen:
                    self.duplicates += 1
                    return
                self._seen.add(key)
            self.arrivals.append(a)

    def connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    def close(self) -> None:
        self._closing = True
        self.client.loop_stop()
        with contextlib.suppress(Exception):
            self.client.disconnect()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                task.result(FETCH_WAIT_S * 4)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._nc.close(), self._loop).result(5)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def _quiet(exc: Exception) -> None:
    """A member going down is part of the run: the client reconnects by itself."""
