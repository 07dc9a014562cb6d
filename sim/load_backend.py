"""The back end of a load run, as a city's would consume: a persistent MQTT subscriber on
Mosquitto, a durable JetStream consumer on the NATS cluster. Each notes when every alarm
first arrived (wall time) and counts what it received, repeats included.

Only consumes and counts; never publishes, never judges."""

from __future__ import annotations

import asyncio
import contextlib
import json
import selectors
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import nats
import paho.mqtt.client as mqtt
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from paho.mqtt.enums import CallbackAPIVersion

from sim.js_recorder import MQTT_PREFIX, MQTT_STREAM

RETRY_S = 1.0
"""Seconds between the MQTT back end's reconnect attempts (one client: no storm to spread)."""


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


@dataclass
class Outage:
    """One stretch without a connection (monotonic clock), and why the last try failed."""

    down: float
    up: float | None = None
    reason: str = ""


class Link:
    """Whether a back end is connected to its broker, since when not, and why: alarms that
    never reached the consumer must read as such, not as alarms the broker lost."""

    def __init__(self) -> None:
        self.outages: list[Outage] = []
        self.reason = ""
        """Why the last connection ended or the last try failed."""
        self._connected = False
        self._lock = threading.Lock()

    def up(self) -> None:
        with self._lock:
            self._connected = True
            if self.outages and self.outages[-1].up is None:
                self.outages[-1].up = time.monotonic()

    def down(self, reason: str) -> None:
        with self._lock:
            self.reason = reason
            if self._connected:
                self.outages.append(Outage(time.monotonic(), reason=reason))
            elif self.outages and self.outages[-1].up is None:
                self.outages[-1].reason = reason
            self._connected = False

    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def down_for(self) -> tuple[float, str] | None:
        """Seconds the back end has been disconnected now and the last reason; None if
        connected (or never connected: then the run did not start)."""
        with self._lock:
            if self._connected or not self.outages:
                return None
            o = self.outages[-1]
            return round(time.monotonic() - o.down, 1), o.reason

    def back_after(self, since: float) -> float | None:
        """Seconds from `since` until the back end was connected again after the outages that
        began since then; 0.0 if it never dropped, None if it is not connected now."""
        with self._lock:
            if not self._connected:
                return None
            ups = [o.up for o in self.outages if o.down >= since and o.up is not None]
            return round(max(ups) - since, 1) if ups else 0.0


class MqttBackend:
    """A persistent session subscribed to the site at QoS 1 (Mosquitto queues for it while
    it reconnects after a broker restart), on a network loop of its own over a selector.

    Not paho's loop_start(): its loop waits in select(), which cannot take a descriptor
    numbered 1024 or more. The swarm's thousands of sockets share this process, so a socket
    the back end opens after a broker restart gets such a number once the swarm is
    reconnecting, and paho then drops it in silence (no on_disconnect) and retries forever.
    A selector (epoll on Linux) has no such limit."""

    def __init__(self, host: str, port: int, site: str) -> None:
        self.tally = Tally()
        self.link = Link()
        self._ready = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._retry_at = 0.0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"load-backend-{uuid.uuid4().hex[:8]}",
                                  clean_session=False)
        self.client.max_inflight_messages_set(1000)
        self.topic = f"safecity/v1/{site}/#"
        self.connects: list[bool] = []
        """session_present of every connection: False after the first means the broker
        lost the back end's session (and what it queued for it)."""
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = lambda cl, u, flags, reason, props=None: self.link.down(str(reason))
        c.on_subscribe = lambda *a: self._ready.set()
        c.on_message = lambda cl, u, m: self.tally.add(m.topic, bytes(m.payload), time.time())
        c.on_socket_open = self._opened
        c.on_socket_close = lambda cl, u, sock: self._watch(sock, None)
        c.on_socket_register_write = lambda cl, u, sock: self._watch(
            sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        c.on_socket_unregister_write = lambda cl, u, sock: self._watch(sock,
                                                                       selectors.EVENT_READ)
        c.connect_async(host, port, keepalive=10)
        self._thread = threading.Thread(target=self._run, daemon=True, name="load-backend")
        self._thread.start()
        if not self._ready.wait(10):
            self.close()
            raise RuntimeError(f"load back end could not subscribe at {host}:{port}: "
                               f"{self.link.reason or 'no answer'}")

    def _opened(self, c: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._sel.register(sock, selectors.EVENT_READ)

    def _watch(self, sock: Any, events: int | None) -> None:
        with contextlib.suppress(KeyError, ValueError):
            if events is None:
                self._sel.unregister(sock)
            else:
                self._sel.modify(sock, events)

    def _run(self) -> None:
        """Reads, writes, keepalive, and a new connection RETRY_S after the last try."""
        next_misc = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if self.client.socket() is None and now >= self._retry_at:
                self._retry_at = now + RETRY_S
                try:
                    self.client.reconnect()
                except Exception as exc:  # noqa: BLE001 - refused or not: keep trying, say why
                    self.link.down(f"{type(exc).__name__}: {exc}")
            for _key, mask in self._sel.select(timeout=0.1):
                if mask & selectors.EVENT_READ:
                    self.client.loop_read()
                if mask & selectors.EVENT_WRITE:
                    self.client.loop_write()
            if now >= next_misc:
                next_misc = now + 0.5
                self.client.loop_misc()

    def _on_connect(self, c: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    props: Any = None) -> None:
        if reason.is_failure:
            self.link.down(f"CONNACK: {reason}")  # the broker closes; _run tries again
            return
        self.link.up()
        self.connects.append(bool(flags.session_present))
        c.subscribe(self.topic, qos=1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self.client.disconnect()
            self.client.loop_write()
        self._sel.close()


class JetStreamBackend:
    """Durable pull consumers acknowledging in batches (ack all), as a back end service on
    the cluster runs them: the site's QoS 1 messages from NATS's own MQTT stream (stored
    before the publisher's PUBACK), its telemetry from a stream of its own (sim/js_recorder.py
    says why)."""

    def __init__(self, servers: list[str], site: str, replicas: int = 3) -> None:
        self.tally = Tally()
        self.link = Link()
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
                                      error_cb=self._error, disconnected_cb=self._down,
                                      reconnected_cb=self._up)
        self.link.up()
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

    async def _error(self, exc: Exception) -> None:
        """A member going down is part of the run: the client reconnects by itself; the
        error is kept as the reason should it stay disconnected."""
        self.link.reason = f"{type(exc).__name__}: {exc}"

    async def _down(self) -> None:
        self.link.down(self.link.reason or "disconnected")

    async def _up(self) -> None:
        self.link.up()

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
