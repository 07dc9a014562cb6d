"""Test helpers: a real paho subscriber that records what the broker delivers, and schema checks."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_for(topic: str) -> str | None:
    """Which contract schema a topic's payload must satisfy (None: binary, e.g. snapshots)."""
    parts = topic.split("/")
    tail = parts[4:]
    if not tail:
        return None
    if tail[0] == "status":
        return "status"
    if tail[0] == "telemetry":
        return "telemetry"
    if tail[0] == "event":
        return "event"
    if tail == ["cmd", "ack"]:
        return "ack"
    if tail == ["cmd"]:
        return "command"
    if tail[0] == "zone":
        return "zone"
    if tail == ["audit"]:
        return "audit"
    return None


def validate(topic: str, payload: bytes) -> dict[str, Any] | None:
    name = schema_for(topic)
    if name is None:
        return None
    doc = json.loads(payload)
    validator(name).validate(doc)
    return doc  # type: ignore[no-any-return]


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class Recorder:
    """Subscribes with a real client and keeps every message in arrival order."""

    def __init__(self, host: str, port: int, topics: str | list[str] = "#",
                 client_id: str = "", persistent: bool = False,
                 username: str | None = None, password: str | None = None) -> None:
        """persistent: a durable session (fixed client_id, clean_session off), so the broker
        queues QoS 1 messages for it while it is away, as a real consumer's would be."""
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(1, 2)
        if username is not None:
            self.client.username_pw_set(username, password)
        self._topics = [topics] if isinstance(topics, str) else topics
        self._subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("recorder did not subscribe")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, msg.payload, msg.retain, msg.qos,
                                          time.monotonic()))
            self._cond.notify_all()

    def matching(self, part: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if part in m.topic]

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> list[Received]:
        """Wait until predicate(messages) is truthy; returns the messages then."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    topics = sorted({m.topic for m in self.messages})
                    raise AssertionError(f"timed out after {timeout}s; got "
                                         f"{len(self.messages)} messages on {topics}")
                self._cond.wait(min(left, 0.5))
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
