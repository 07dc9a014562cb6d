"""The back end of a load run, as a city's would consume: a persistent MQTT subscriber on
Mosquitto, a durable JetStream consumer on the NATS cluster. Each notes when every alarm
first arrived (wall time) and counts what it received, repeats included.

Only consumes and counts; never publishes, never judges."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from typing import Any

import nats
import paho.mqtt.client as mqtt
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from paho.mqtt.enums import CallbackAPIVersion

from sim.js_recorder import MQTT_PREFIX, MQTT_STREAM

KICK_S = 15.0


class Tally:
    """First arrival of each alarm by event_id, and message counts."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.messages = 0
        self.repeats = 0
        self._lock = threading.Lock()

    def add(self, topic_or_subject: str, payload: bytes, now: float) -> None:
        with self._lock:
            self.messages += 1
        if "event" not in topic_or_subject:
            return
        try:
            event_id = json.loads(payload)["event_id"]
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            if event_id in self.first:
                self.repeats += 1
            else:
                self.first[event_id] = now

    def count(self) -> int:
        with self._lock:
            return self.messages


class MqttBackend:
    """A persistent session subscribed to the site at QoS 1 (Mosquitto queues for it while
    it reconnects after a broker restart)."""

    def __init__(self, host: str, port: int, site: str) -> None:
        self.tally = Tally()
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"load-backend-{uuid.uuid4().hex[:8]}",
                                  clean_session=False)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(1, 1)
        self.topic = f"safecity/v1/{site}/#"
        self.connects: list[bool] = []
        """session_present of every connection: False after the first means the broker
        lost the back end's session (and what it queued for it)."""
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = lambda c, u, m: self.tally.add(m.topic, bytes(m.payload),
                                                                time.time())
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError(f"load back end could not subscribe at {host}:{port}")
        self.kicks = 0
        """Times the watchdog restarted paho's network loop (see _watch)."""
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        """A back end that has not reconnected KICK_S after losing the broker gets a fresh
        network loop: under a reconnect storm of thousands of clients, paho's loop thread
        was seen to stay disconnected after the broker was back (cause not found yet)."""
        down_since: float | None = None
        while not self._stop.wait(1.0):
            if self.client.is_connected():
                down_since = None
                continue
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since >= KICK_S:
                self.kicks += 1
                down_since = None
                with contextlib.suppress(Exception):
                    self.client.loop_stop()
                    self.client.loop_start()

    def _on_connect(self, c: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    props: Any = None) -> None:
        self.connects.append(bool(flags.session_present))
        c.subscribe(self.topic, qos=1)

    def close(self) -> None:
        self._stop.set()
        self._watchdog.join(2)
        self.client.loop_stop()
        with contextlib.suppress(Exception):
            self.client.disconnect()


class JetStreamBackend:
    """Durable pull consumers acknowledging in batches (ack all), as a back end service on
    the cluster runs them: the site's QoS 1 messages from NATS's own MQTT stream (stored
    before the publisher's PUBACK), its telemetry from a stream of its own (sim/js_recorder.py
    says why)."""

    def __init__(self, servers: list[str], site: str, replicas: int = 3) -> None:
        self.tally = Tally()
        self._closing = False
        self._nc: Any = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="load-backend")
        self._thread.start()
        subs = asyncio.run_coroutine_threadsafe(self._setup(servers, site, replicas),
                                                self._loop).result(30)
        self._tasks = [asyncio.run_coroutine_threadsafe(self._consume(sub), self._loop)
                       for sub in subs]

    async def _setup(self, servers: list[str], site: str, replicas: int) -> Any:
        self._nc = await nats.connect(servers=servers, max_reconnect_attempts=-1,
                                      reconnect_time_wait=0.5, name="load-backend",
                                      error_cb=_quiet)
        js = self._nc.jetstream()
        name = site.replace("-", "_")
        telemetry = f"safecity.v1.{site}.*.telemetry"
        stream = "LOAD_" + name
        await js.add_stream(StreamConfig(name=stream, subjects=[telemetry],
                                         num_replicas=replicas, storage=StorageType.FILE,
                                         max_age=3600.0))
        config = ConsumerConfig(ack_policy=AckPolicy.ALL, max_ack_pending=-1)
        return [await js.pull_subscribe(f"{MQTT_PREFIX}safecity.v1.{site}.>",
                                        durable="load-" + name, stream=MQTT_STREAM,
                                        config=config),
                await js.pull_subscribe(telemetry, durable="backend", stream=stream,
                                        config=config)]

    async def _consume(self, sub: Any) -> None:
        while not self._closing:
            try:
                msgs = await sub.fetch(1000, timeout=0.5)
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - a member re-electing or the link moving
                await asyncio.sleep(0.2)
                continue
            now = time.time()
            for m in msgs:
                self.tally.add(m.subject, m.data, now)
            with contextlib.suppress(Exception):
                await msgs[-1].ack()

    def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            with contextlib.suppress(Exception):
                task.result(3)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._nc.close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


async def _quiet(exc: Exception) -> None:
    """A member going down is part of the run: the client reconnects by itself."""
