"""The node's MQTT link: paho-mqtt 2.x fed from the durable spool, plus status and commands.

paho keeps unacknowledged messages in memory only; here every spooled message stays on
disk until its PUBACK arrives. This module never decides what an event is."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.config import MqttConfig
from edge_agent.logs import quote
from edge_agent.uplink import messages
from edge_agent.uplink.connect import authenticate, connect_cause, mqtt_answer
from edge_agent.uplink.failover import Failover
from edge_agent.uplink.messages import Identity
from edge_agent.uplink.spool import Spool, Spooled
from edge_agent.uplink.topics import Topics

log = logging.getLogger(__name__)

LOOK_TIMEOUT_S = 3.0
"""How long the look at the first choice waits for its CONNACK (on a thread of its own:
the pump goes on sending meanwhile)."""
RESEND_AFTER_S = 10.0
"""After a reconnect paho retransmits what was in flight; if no PUBACK comes by then,
the spool republishes those rows itself (same event_id, so consumers de-duplicate)."""

FAILURE_LOG_EVERY_S = 60.0
"""A broker that stays unreachable is logged at most once a minute (with the attempts made
meanwhile); the first failure and every change of cause are logged at once."""

CommandHandler = Callable[[bytes, str | None], dict[str, Any]]
"""(payload, button) -> ack; `button` names the command of a button/<command> topic."""


class ConnectFailures:
    """Logs why connecting to the broker fails, rate-limited: a technician reading the
    journal must see "connection refused" or "certificate verify failed", not silence."""

    def __init__(self, host: str, port: int, every_s: float = FAILURE_LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.where = f"host={host} port={port}"
        self.every_s = every_s
        self._clock = clock
        self._cause: str | None = None
        self._logged_at = 0.0
        self.attempts = 0
        """Failed attempts since the last successful connection."""

    def failed(self, cause: str) -> None:
        self.attempts += 1
        now = self._clock()
        if cause != self._cause or now - self._logged_at >= self.every_s:
            log.warning("event=mqtt_connect_failed %s cause=%s attempts=%d", self.where,
                        quote(cause), self.attempts)
            self._cause, self._logged_at = cause, now

    def connected(self) -> None:
        if self.attempts:
            log.info("event=mqtt_connect_recovered %s after_attempts=%d", self.where,
                     self.attempts)
        self._cause, self.attempts = None, 0


class Uplink:
    """Connects, announces the node (birth + Last Will), pumps the spool in order."""

    def __init__(self, cfg: MqttConfig, topics: Topics, ident: Identity, spool: Spool,
                 on_command: CommandHandler | None = None,
                 on_connect: Callable[[mqtt.Client], None] | None = None) -> None:
        self.cfg = cfg
        self.topics = topics
        self.ident = ident
        self.spool = spool
        self._on_command = on_command
        self._on_connect = on_connect
        self._status_extra: dict[str, Any] = {}
        self._status_lock = threading.Lock()
        """Orders the birth message against set_status from other threads: without it a
        change made while the birth is being sent would be lost until the next change."""
        self._status_live = False
        self._status_sent: list[mqtt.MQTTMessageInfo] = []
        """Status messages not yet known to be acknowledged (under _status_lock)."""
        self._stale_status: list[mqtt.MQTTMessageInfo] = []
        """Births from before a reconnect that paho retransmits after the new one: once the
        broker has them all, the current birth is published again so it is the last."""
        # A persistent session: the broker keeps the command subscription and queues QoS 1
        # commands sent while the node is offline, so they arrive when it is back.
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"{ident.site}-{ident.node}",
                                   clean_session=False)
        self._client.max_inflight_messages_set(cfg.inflight)
        self._client.connect_timeout = cfg.connect_timeout_s
        self._client.max_queued_messages_set(0)
        # paho doubles the delay from min to max with no jitter of its own, and knows one
        # broker: after every failure the Failover picks the broker and the jittered wait, so
        # a fleet that lost its broker together does not reconnect in lockstep.
        self.failover = Failover(cfg.addresses, cfg.reconnect_min_s, cfg.reconnect_max_s,
                                 cfg.failover_jitter_s, cfg.failback_s)
        base = cfg.reconnect_min_s * random.uniform(1.0, 2.0)
        self._client.reconnect_delay_set(base, cfg.reconnect_max_s)  # type: ignore[arg-type]
        authenticate(self._client, cfg)
        will = messages.status(ident, time.time(), "offline", "connection_lost")
        self._client.will_set(topics.status, messages.dumps(will), qos=1, retain=True)
        first = self.failover.current
        self.failures = ConnectFailures(first.host, first.port)
        self._move_lock = threading.Lock()
        """Held while the node moves back to its first choice or stops, never both at once."""
        self._moving = False
        self._client.on_connect = self._handle_connect
        self._client.on_socket_open = self._handle_socket_open
        self._client.on_connect_fail = self._handle_connect_fail
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_publish = self._handle_publish
        self._client.on_message = self._handle_message

        self._connected = threading.Event()
        self._gen = 0
        self._connected_at = 0.0
        self._connected_since = 0.0
        """Spool-clock time of the latest connection: messages stored before it waited."""
        self._attempt_at: float | None = None
        """When the TCP (and TLS) connection of the attempt under way opened; None once it
        is answered or closed."""
        self._looks: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._looking = False
        self._wake = threading.Event()
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._inflight: dict[int, tuple[int, int]] = {}
        self._last_sent = 0
        self._stopping = threading.Event()
        self._commands: queue.Queue[tuple[bytes, str | None]] = queue.Queue(maxsize=16)
        self.delivered = 0
        self._pump = threading.Thread(target=self._run_pump, name="uplink-pump", daemon=True)
        self._cmd_worker = threading.Thread(target=self._run_commands, name="uplink-cmd",
                                            daemon=True)

    # -- public -------------------------------------------------------------------------
    def start(self) -> None:
        b = self.failover.current
        self._client.connect_async(b.host, b.port, keepalive=self.cfg.keepalive_s)
        self._client.loop_start()
        self._pump.start()
        self._cmd_worker.start()

    @property
    def client(self) -> mqtt.Client:
        """The paho client, for add-ons that subscribe to their own topics (discovery)."""
        return self._client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def broker(self) -> str | None:
        """`host:port` of the broker the node is connected to; None while it is not."""
        return str(self.failover.current) if self.connected else None

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, kind: str, topic: str, payload: bytes, qos: int,
                created: float | None = None) -> None:
        """Store durably, then let the pump send it (in order, after earlier messages)."""
        self.spool.put(kind, topic, payload, qos, created=created)
        self._wake.set()

    def publish_state(self, topic: str, payload: bytes) -> None:
        """A retained latest-value message (zone occupancy): sent now when connected, else
        dropped; the owner republishes its current states on every connection, so nothing
        stale waits in the spool and the broker always holds the latest."""
        if self.connected:
            with contextlib.suppress(ValueError, RuntimeError):
                self._client.publish(topic, payload, qos=1, retain=True)

    def publish_unspooled(self, topic: str, payload: bytes, qos: int) -> None:
        """Straight to paho, when the spool cannot be written: kept in memory only, sent
        when connected, lost by a restart. Better than not sending an alarm at all."""
        with contextlib.suppress(ValueError, RuntimeError):
            self._client.publish(topic, payload, qos=qos)

    def set_status(self, **extra: Any) -> None:
        """Merge extra fields into the retained birth message and republish it."""
        with self._status_lock:
            self._status_extra.update(extra)
            if self._status_live:
                self._publish_status("online")

    def flush(self, timeout: float) -> bool:
        """Wait until the spool is empty (everything acknowledged)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.spool.depth() == 0:
                return True
            self._wake.set()
            time.sleep(0.05)
        return self.spool.depth() == 0

    def stop(self, reason: str = "shutdown", flush_s: float = 5.0) -> None:
        """Graceful stop: deliver what can be delivered, then a retained offline status.

        What is not acknowledged stays in the spool for the next start."""
        with self._move_lock:
            self._stop(reason, flush_s)

    def _stop(self, reason: str, flush_s: float) -> None:
        if self.connected:
            self.flush(flush_s)
            info = self._client.publish(
                self.topics.status,
                messages.dumps(messages.status(self.ident, time.time(), "offline", reason,
                                               **self._status_extra)),
                qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2.0)
        self._stopping.set()
        self._wake.set()
        self._client.disconnect()
        self._client.loop_stop()
        self._pump.join(5)
        self._commands.put_nowait((b"", None)) if not self._commands.full() else None
        self._cmd_worker.join(2)

    def publish_ack(self, doc: dict[str, Any]) -> None:
        self._client.publish(self.topics.ack, messages.dumps(doc), qos=1)

    # -- paho callbacks (network thread: never block, never take the pump's locks) ------
    def _handle_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                        reason: ReasonCode, props: Any = None) -> None:
        self._attempt_at = None
        if reason.is_failure:
            self.failures.failed(f"refused by the broker: {reason}")
            return
        self.failures.connected()
        self.failover.connected(time.monotonic())
        self._gen += 1
        self._connected_at = time.monotonic()
        self._connected_since = self.spool.clock()
        with self._status_lock:
            # paho sends the new birth first and then retransmits an older one still unacked
            # (say, on a member that died just after it), which would leave a stale broker
            # in the retained status: the pump publishes the birth again after those.
            self._stale_status = [i for i in self._status_sent if not i.is_published()]
            self._publish_status("online")
            self._status_live = True
        client.subscribe([(self.topics.cmd, 1), (self.topics.button("+"), 1)])
        if self._on_connect is not None:
            self._on_connect(client)
        self._connected.set()
        self._wake.set()
        b = self.failover.current
        log.info("event=mqtt_connected host=%s port=%s broker_index=%d", b.host, b.port,
                 self.failover.index)

    def _handle_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._attempt_at = time.monotonic()

    def _handle_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError` around the connection attempt, so
        # the exception in flight is the cause (DNS, refused, timeout, TLS handshake).
        self.failures.failed(connect_cause(sys.exception()))
        if not self._stopping.is_set():
            self._retarget(self.failover.refused_attempt())

    def _handle_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                           reason: ReasonCode, props: Any = None) -> None:
        self._attempt_at = None
        was = self._connected.is_set()
        self._connected.clear()
        with self._status_lock:
            self._status_live = False
        if self._stopping.is_set() or self._moving:
            return
        if was:
            log.warning("event=mqtt_disconnected reason=%s", reason)
        # A drop after a session moves on after a short jitter; a refused CONNECT (no
        # session: was is False) backs off like any failed attempt.
        self._retarget(self.failover.lost() if was else self.failover.refused_attempt())

    def _retarget(self, delay: float) -> None:
        """Point paho's next reconnect at the Failover's broker, after `delay` seconds
        (network thread, inside a paho callback: connect_async only sets the address)."""
        b = self.failover.current
        self._client.connect_async(b.host, b.port, keepalive=self.cfg.keepalive_s)
        self._client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]
        self.failures.where = f"host={b.host} port={b.port}"

    def _republish_birth(self) -> None:
        """The birth again once the broker has every older one paho retransmitted after it
        (pump thread; paho's locks are never held while ours is)."""
        with self._status_lock:
            stale = self._stale_status
            if not stale or not all(i.is_published() for i in stale):
                return
            self._stale_status = []
            if self._status_live:
                self._publish_status("online")

    def _connack_overdue(self) -> None:
        """An attempt whose broker accepted TCP but has not answered in connect_timeout_s
        fails (pump thread): its socket is shut, paho's loop sees the connection lost and
        the node moves on like after any failed attempt."""
        at = self._attempt_at
        if at is None or time.monotonic() - at < self.cfg.connect_timeout_s:
            return
        sock = self._client.socket()
        if self._connected.is_set() or sock is None:
            return
        self._attempt_at = None
        self.failures.failed(f"no CONNACK within {self.cfg.connect_timeout_s:g} s")
        with contextlib.suppress(OSError):
            # the plain socket's shutdown, under TLS too: paho's thread reads EOF and closes
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # type: ignore[arg-type]

    def _failback(self) -> None:
        """Back to the first choice once it answers MQTT (pump thread): a clean DISCONNECT,
        so no Last Will fires, then a connection to the first broker; what was in flight is
        retransmitted there, as after any reconnect. The look runs on a thread of its own."""
        now = time.monotonic()
        if not self.connected:
            return
        if not self._looking:
            if self.failover.failback_due(now):
                self.failover.postpone_failback(now)  # the next look, should this one fail
                self._looking = True
                threading.Thread(target=self._look, name="uplink-look", daemon=True).start()
            return
        try:
            why = self._looks.get_nowait()
        except queue.Empty:
            return
        self._looking = False
        if self.failover.on_first_choice:
            return  # back there meanwhile by a reconnect of its own
        if why is not None:
            log.info("event=mqtt_failback_skipped broker=%s cause=%s",
                     self.failover.brokers[0], quote(why))
            return
        with self._move_lock:
            if self._stopping.is_set():
                return
            self._moving = True
            try:
                left = self.failover.current
                self.failover.back_to_first(now)
                b = self.failover.current
                log.info("event=mqtt_failback from=%s to=%s", left, b)
                self._client.disconnect()
                self._client.loop_stop()
                self._client.connect_async(b.host, b.port, keepalive=self.cfg.keepalive_s)
                lo, hi = self.cfg.reconnect_min_s, self.cfg.reconnect_max_s
                self._client.reconnect_delay_set(lo, hi)  # type: ignore[arg-type]
                self.failures.where = f"host={b.host} port={b.port}"
            finally:
                self._moving = False
                self._client.loop_start()

    def _look(self) -> None:
        ident = self.ident
        self._looks.put(mqtt_answer(self.cfg, self.failover.brokers[0],
                                    f"{ident.site}-{ident.node}-look", LOOK_TIMEOUT_S))
        self._wake.set()

    def _handle_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                        reason: ReasonCode, props: Any = None) -> None:
        self._acks.put(mid)
        self._wake.set()

    def _handle_message(self, client: mqtt.Client, userdata: Any,
                        msg: mqtt.MQTTMessage) -> None:
        button = None
        if msg.topic != self.topics.cmd:
            prefix = self.topics.button("")
            if not msg.topic.startswith(prefix):
                return
            button = msg.topic[len(prefix):]
        try:
            self._commands.put_nowait((bytes(msg.payload), button))
        except queue.Full:
            self.publish_ack(messages.ack(self.ident, time.time(), None, None, False,
                                          error=("busy", "command queue is full")))

    # -- internals ------------------------------------------------------------------------
    def _publish_status(self, state: str) -> None:
        doc = messages.status(self.ident, time.time(), state, **self._status_extra,
                              broker=str(self.failover.current))
        info = self._client.publish(self.topics.status, messages.dumps(doc), qos=1, retain=True)
        self._status_sent = [i for i in self._status_sent if not i.is_published()] + [info]

    def _run_commands(self) -> None:
        while not self._stopping.is_set():
            payload, button = self._commands.get()
            if self._stopping.is_set():
                return
            if self._on_command is None:
                continue
            try:
                self.publish_ack(self._on_command(payload, button))
            except Exception:  # a command must never take the node down
                log.exception("event=command_failed")
                self.publish_ack(messages.ack(self.ident, time.time(), None, None, False,
                                              error=("internal", "command handler failed")))

    def _drain_acks(self) -> None:
        done: list[int] = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            entry = self._inflight.pop(mid, None)
            if entry is not None:
                done.append(entry[0])
        if done:
            self.spool.ack(*done)
            self.delivered += len(done)

    def _run_pump(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._connack_overdue()
                self._failback()
                self._republish_birth()
                self._pump_once()
            except Exception:
                log.exception("event=uplink_pump_error")
                time.sleep(0.5)

    def _pump_once(self) -> None:
        self._drain_acks()
        if not self._connected.is_set():
            return
        gen = self._gen
        stale = [mid for mid, (_, g) in self._inflight.items() if g != gen]
        if stale:
            # paho retransmits these itself after a reconnect; wait for their PUBACKs so
            # newer messages never overtake older ones.
            if time.monotonic() - self._connected_at < RESEND_AFTER_S:
                self._wake.set() if not self._acks.empty() else None
                return
            rows = self.spool.get([self._inflight.pop(mid)[0] for mid in stale])
            self._send(rows, gen)
        room = self.cfg.inflight - len(self._inflight)
        if room <= 0:
            return
        rows = self.spool.after(self._last_sent, room)
        if rows:
            self._send(rows, gen)
            self._wake.set()

    def _send(self, rows: list[Spooled], gen: int) -> None:
        for row in rows:
            payload = row.payload
            if row.kind != "snapshot" and row.stored < self._connected_since:
                payload = _mark_historical(payload)
            info = self._client.publish(row.topic, payload, qos=row.qos, retain=row.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS and row.qos == 0:
                return  # not sent; picked up again after reconnect
            self._inflight[info.mid] = (row.id, gen)
            self._last_sent = max(self._last_sent, row.id)


def _mark_historical(payload: bytes) -> bytes:
    """Messages that waited out an outage (or a restart) say so; their ts stays original."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return payload
    if isinstance(doc, dict) and not doc.get("historical"):
        doc["historical"] = True
        return messages.dumps(doc)
    return payload
