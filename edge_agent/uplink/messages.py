"""Builds contract messages (docs/contract.md) and numbers events within a boot.

Pure: never publishes, never reads clocks other than the timestamps it is given."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge_agent import __version__

CONTRACT_VERSION = 1


def utc_iso(ts: float) -> str:
    """RFC 3339 UTC with milliseconds and 'Z', as the contract requires."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Identity:
    site: str
    node: str
    kind: str
    boot: int
    instance: str | None = None
    """Made once when the node's state directory is created (`uplink.boot.instance`): a
    wiped or reinstalled node counts boots from 1 again under a new instance, so its event
    ids never repeat ones a back end has already seen."""

    def event_id(self, seq: int) -> str:
        if self.instance is None:
            return f"{self.node}-{self.boot}-{seq}"
        return f"{self.node}-{self.instance}-{self.boot}-{seq}"

    def header(self, ts: float) -> dict[str, Any]:
        return {"v": CONTRACT_VERSION, "site": self.site, "node": self.node, "ts": utc_iso(ts)}


def status(ident: Identity, ts: float, state: str, reason: str | None = None,
           **extra: Any) -> dict[str, Any]:
    doc = ident.header(ts) | {"state": state, "kind": ident.kind, "boot": ident.boot,
                              "version": __version__}
    if ident.instance is not None:
        doc["instance"] = ident.instance
    if reason:
        doc["reason"] = reason
    doc.update({k: v for k, v in extra.items() if v is not None})
    return doc


def telemetry(ident: Identity, ts: float, uptime_s: float,
              metrics: dict[str, float | int | str | bool | None],
              broker: str | None = None) -> dict[str, Any]:
    """`broker`: `host:port` of the broker the node is on when it builds the message."""
    doc = ident.header(ts) | {"kind": ident.kind, "boot": ident.boot,
                              "uptime_s": round(uptime_s, 3), "metrics": metrics}
    if broker is not None:
        doc["broker"] = broker
    return doc


def ack(ident: Identity, ts: float, cmd_id: str | None, cmd: str | None, ok: bool,
        result: Any = None, error: tuple[str, str] | None = None) -> dict[str, Any]:
    doc = ident.header(ts) | {"id": cmd_id, "cmd": cmd, "ok": ok}
    if ok:
        doc["result"] = result
    else:
        assert error is not None
        doc["error"] = {"code": error[0], "message": error[1]}
    return doc


def audit(ident: Identity, ts: float, ack_doc: dict[str, Any]) -> dict[str, Any]:
    """What a command did, for the node's audit trail: which command (its id), what it
    changed or took, whether it was refused. Built from the ack, so never a secret."""
    doc = ident.header(ts) | {"command_id": ack_doc.get("id"), "cmd": ack_doc.get("cmd"),
                              "ok": bool(ack_doc.get("ok"))}
    result = ack_doc.get("result")
    if isinstance(result, dict):
        if "changed" in result:
            doc["changed"] = list(result["changed"])
        if "topic" in result:
            doc["snapshot"] = {k: result[k] for k in ("topic", "redacted", "regions")
                               if k in result}
    error = ack_doc.get("error")
    if isinstance(error, dict):
        doc["error"] = error.get("code")
    return doc


def zone(ident: Identity, ts: float, name: str, labels: dict[str, int]) -> dict[str, Any]:
    """How many tracked objects stand in a zone now, by label (retained: the latest wins)."""
    return ident.header(ts) | {"zone": name, "count": sum(labels.values()),
                               "labels": dict(sorted(labels.items()))}


@dataclass
class EventNumbering:
    """Assigns seq within the boot and keeps one event_id through start/update/end."""

    ident: Identity
    seq: int = 0
    _open: dict[str, str] = field(default_factory=dict)

    def number(self, key: str, phase: str) -> tuple[str, int]:
        self.seq += 1
        if phase in ("start", "instant") or key not in self._open:
            event_id = self.ident.event_id(self.seq)
            if phase == "start":
                self._open[key] = event_id
        else:
            event_id = self._open[key]
        if phase == "end":
            self._open.pop(key, None)
        return event_id, self.seq


def event(ident: Identity, ts: float, event_id: str, seq: int, event_type: str, phase: str,
          severity: str, details: dict[str, Any], duration_s: float | None = None,
          snapshot: dict[str, Any] | None = None,
          reason: str | None = None) -> dict[str, Any]:
    doc = ident.header(ts) | {
        "event_id": event_id, "boot": ident.boot, "seq": seq, "type": event_type,
        "phase": phase, "severity": severity, "details": details,
    }
    if duration_s is not None or phase == "end":
        doc["duration_s"] = round(duration_s or 0.0, 3)
    if snapshot is not None:
        doc["snapshot"] = snapshot
    if reason is not None and phase == "end":
        doc["reason"] = reason
    return doc
