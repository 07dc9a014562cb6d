"""Test helpers for sensor boards: start a simulated board against the test broker and
wait for the messages it publishes (schema-checked).

Only wraps sim.board.SimBoard and the Recorder; never fakes what the firmware sends."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.board import FIRMWARE_HEAP, SimBoard
from sim.broker import MosquittoBroker
from tests.mqtt_helpers import Received, Recorder, validate

FAST = {"telemetry_interval_s": 5, "keepalive_s": 10,
        "gas": {"warmup_s": 1, "sample_ms": 200},
        "flood": {"float_on_ms": 200, "float_off_ms": 500, "probe_ms": 200, "stuck_s": 3}}


def docs(rec: Recorder, part: str) -> list[dict[str, Any]]:
    """Payloads of messages whose topic contains `part`, validated against the contract."""
    out = []
    for m in rec.matching(part):
        d = validate(m.topic, m.payload)
        assert d is not None, m.topic
        out.append(d)
    return out


def wait_doc(rec: Recorder, part: str, pred: Callable[[dict[str, Any]], bool],
             timeout: float = 20.0) -> dict[str, Any]:
    def found(msgs: list[Received]) -> bool:
        return any(part in m.topic and pred(m.json()) for m in msgs)

    rec.wait_for(found, timeout)
    return next(d for d in docs(rec, part) if pred(d))


@dataclass(frozen=True)
class Address:
    """Where a board's recorder listens when it is not a MosquittoBroker (a cluster member)."""

    host: str
    port: int


@contextmanager
def board(broker: MosquittoBroker | Address, tmp: Path, kind: str, node: str = "b1",
          config: dict[str, Any] | None = None,
          setup: Callable[[SimBoard], None] | None = None,
          time_scale: float = 1.0,
          heapsize: str = FIRMWARE_HEAP,
          patches: dict[str, str] | None = None, port: int | None = None,
          ca_der: bytes | None = None) -> Iterator[tuple[SimBoard, Recorder]]:
    """A running board and a recorder subscribed to everything from its site. The board
    connects to `port` (default: the broker's plain one; a TLS listener with `ca_der`)."""
    cfg: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in FAST.items()}
    for k, v in (config or {}).items():
        if isinstance(v, dict):
            cfg.setdefault(k, {}).update(v)
        else:
            cfg[k] = v
    rec = Recorder(broker.host, broker.port, "safecity/v1/test/#")
    b = SimBoard(kind, node, broker.host, port or broker.port, tmp / node, config=cfg,
                 time_scale=time_scale, heapsize=heapsize, patches=patches, ca_der=ca_der)
    if kind == "gas":
        b.set_gas_ppm(0)
    elif kind == "flood":
        b.set_float(False)
        b.set_level_cm(0)
    else:
        b.set_accel()
    if setup:
        setup(b)
    try:
        b.start()
        yield b, rec
    finally:
        b.stop()
        rec.close()
        print(b.log_text()[-3000:])  # shown by pytest only when the test fails


def online(rec: Recorder, timeout: float = 20.0) -> dict[str, Any]:
    return wait_doc(rec, "/status", lambda d: d["state"] == "online", timeout)


def command(broker: MosquittoBroker, node: str, cid: str, cmd: str,
            args: dict[str, Any] | None = None) -> None:
    """Send one command to a board of the test site (QoS 1, as the platform does)."""
    import paho.mqtt.publish as publish

    msg: dict[str, Any] = {"id": cid, "cmd": cmd}
    if args is not None:
        msg["args"] = args
    publish.single(f"safecity/v1/test/{node}/cmd", json.dumps(msg), qos=1,
                   hostname=broker.host, port=broker.port)


def ack(rec: Recorder, cid: str, timeout: float = 20.0) -> dict[str, Any]:
    return wait_doc(rec, "/cmd/ack", lambda d: d["id"] == cid, timeout)
