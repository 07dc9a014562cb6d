"""Numbers, stores and sends what the pipeline and the inputs decided: events (spooled
first, then the pins and the log), their snapshots, and zone occupancy (retained state).

The only place a RuleEvent becomes a contract message. A fault here after an event is
stored (a relay driver, a full card for snapshots) is logged and costs that side effect
only: never the event, the numbering or the pipeline."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.atomic import write_atomic
from edge_agent.capture.frame import Frame, Image
from edge_agent.config import Config, SnapshotConfig
from edge_agent.detect.types import Detection
from edge_agent.events.base import RuleEvent
from edge_agent.geometry import Box
from edge_agent.gpio import Gpio
from edge_agent.pipeline import Occupancy, Stats
from edge_agent.snapshot import blurred, render_snapshot
from edge_agent.track import Track
from edge_agent.uplink import messages
from edge_agent.uplink.client import Uplink
from edge_agent.uplink.messages import EventNumbering, Identity
from edge_agent.uplink.spool import Spool
from edge_agent.uplink.topics import Topics

log = logging.getLogger(__name__)

Due = tuple[str, list[Box]]
"""A snapshot an event names, to render once the event is stored: (event_id, boxes)."""


@dataclass(frozen=True, slots=True)
class Emit:
    """An event to number, store and announce, and where it came from."""

    ev: RuleEvent
    frame: Frame | None
    source: int | str
    """The rule's id, or "input": two rules that watch the same thing never share one
    event's lifecycle."""
    ts: float | None = None
    reason: str | None = None
    """Why an `end` came other than the thing ending (contract: `reason`)."""


@dataclass(frozen=True, slots=True)
class Redaction:
    """What a snapshot of one frame blurs, decided on that frame: a fact, not a setting."""

    ran: bool
    """People were searched for on this very frame (the model has a person class and
    `snapshot.redact_people` is on): what `redacted` says in the event and the ack."""
    boxes: list[Box]
    """Everything blurred: people and `redact_classes` found on the frame, and person
    tracks where they are by now."""


NO_REDACTION = Redaction(False, [])

Finder = Callable[[Image], list[Detection]]
"""Runs the redaction classes' detection on a whole image (the detector's own)."""


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    ts: float
    event_id: str
    seq: int
    due: Due | None


class Emitter:
    def __init__(self, ident: Identity, topics: Topics, config: Callable[[], Config],
                 uplink: Uplink, spool: Spool, gpio: Gpio | None, stats: Stats,
                 finder: Finder, finds_people: bool) -> None:
        """`config` gives the node's current config (snapshot settings change live);
        `finder` finds the redaction classes on a frame; `finds_people`: the model has a
        person class at all."""
        self._finder = finder
        self._finds_people = finds_people
        self.ident = ident
        self.topics = topics
        self._config = config
        self.uplink = uplink
        self.spool = spool
        self.gpio = gpio
        self.stats = stats
        self.numbering = EventNumbering(ident)
        self._redacted: tuple[Frame, SnapshotConfig, Image] | None = None
        """The redacted copy of the latest frame that had an event, shared by its events."""
        self.snapshots_failed = 0

    # -- events ------------------------------------------------------------------------
    def frame(self, frame: Frame, tracks: list[Track], items: list[Emit],
              found: list[Detection] | None) -> None:
        """A frame's events, then their snapshots: rendering (redact, draw, JPEG) costs more
        than the rest of the frame's work after inference (docs/performance.md), and an
        operator wants the alarm first. What the snapshots will blur is decided first, on
        this frame (`found`: the redaction classes its whole-frame run found, or None), so
        the events say what was done."""
        red = NO_REDACTION
        if self._config().snapshot.mode != "off" and any(
                i.ev.phase in ("start", "instant") for i in items):
            red = self.redaction(frame, tracks, found)
        due = self.events(items, red)
        if not due:
            return
        try:
            with self.spool.batch():
                for name, boxes in due:
                    self.snapshot(name, frame, red, boxes)
        except (sqlite3.Error, OSError) as exc:
            self.snapshots_failed += len(due)
            log.error("event=snapshot_failed reason=%r snapshots=%d", str(exc), len(due))

    def redaction(self, frame: Frame, tracks: list[Track],
                  found: list[Detection] | None = None) -> Redaction:
        """Every person (and `redact_classes` object) in this frame: found by the detector
        on this frame, whatever `detector.classes` keeps, plus person tracks where they
        are by now (a person the detector missed on this frame but tracked)."""
        cfg = self._config().snapshot
        if found is None:
            found = self._finder(frame.image)
        boxes = [d.box for d in found if d.label != "person" or cfg.redact_people]
        if cfg.redact_people:
            boxes += [t.swept(frame.monotonic) for t in tracks if t.label == "person"]
        return Redaction(cfg.redact_people and self._finds_people, boxes)

    def events(self, items: list[Emit], red: Redaction = NO_REDACTION) -> list[Due]:
        """Number the events, store them together (one transaction: one sync for a frame's
        events) and hand them to the uplink; only then drive the pins and log them, so a
        fault there can neither lose a stored event nor break the numbering. Returns the
        snapshots the events name.

        A spool that cannot be written (a full or failing SD card) must not cost the alarm:
        the events then go to paho directly, without durability, and the failure is logged."""
        if not items:
            return []
        made = [self._message(item, red) for item in items]
        try:
            with self.spool.batch():
                for m in made:
                    self.uplink.publish("event", m.topic, m.payload, 1, created=m.ts)
        except (sqlite3.Error, OSError) as exc:
            log.error("event=spool_write_failed reason=%r events=%d sent=unspooled", str(exc),
                      len(made))
            for m in made:
                self.uplink.publish_unspooled(m.topic, m.payload, 1)
        for item, m in zip(items, made, strict=True):
            self.stats.events += 1
            ev = item.ev
            log.info("event=%s phase=%s event_id=%s seq=%d severity=%s details=%s%s", ev.type,
                     ev.phase, m.event_id, m.seq, ev.severity, ev.details,
                     f" reason={item.reason}" if item.reason else "")
            if self.gpio is not None:
                try:
                    self.gpio.on_event(ev.type, ev.phase, m.event_id)
                except Exception as exc:  # a pin fault must not stop the next alarm
                    log.exception("event=gpio_failed type=%s phase=%s reason=%r", ev.type,
                                  ev.phase, str(exc))
        return [m.due for m in made if m.due is not None]

    def _message(self, item: Emit, red: Redaction) -> _Message:
        ev, frame = item.ev, item.frame
        event_id, seq = self.numbering.number(f"{item.source}/{ev.key}", ev.phase)
        ts = item.ts
        if ts is None:
            ts = frame.captured_at if frame is not None and ev.phase != "end" else time.time()
        due = None
        if frame is not None and ev.phase in ("start", "instant") \
                and self._config().snapshot.mode != "off":
            due = (event_id, ev.boxes)
        doc = messages.event(self.ident, ts, event_id, seq, ev.type, ev.phase, ev.severity,
                             ev.details, ev.duration_s,
                             self.snapshot_ref(event_id, red) if due else None, item.reason)
        return _Message(self.topics.event(ev.type), messages.dumps(doc), ts, event_id, seq, due)

    # -- snapshots ---------------------------------------------------------------------
    def snapshot_ref(self, name: str, red: Redaction) -> dict[str, Any]:
        """Where snapshot `name` will be (the topic it is published on, or its file), and
        what its redaction did."""
        config = self._config()
        cfg = config.snapshot
        where = (self.topics.snapshot(name) if cfg.mode == "publish"
                 else str(config.node.state_dir / "snapshots" / f"{name}.jpg"))
        return {"topic": where, "redacted": red.ran, "regions": len(red.boxes)}

    def snapshot(self, name: str, frame: Frame, red: Redaction,
                 boxes: list[Box]) -> dict[str, Any] | None:
        """Render, redact and publish (or save) snapshot `name`; None when it cannot be
        encoded within max_bytes or written (logged, counted)."""
        cfg = self._config().snapshot
        try:
            base = self._redacted
            if base is None or base[0] is not frame or base[1] is not cfg:
                base = self._redacted = (frame, cfg, blurred(frame, red.boxes, cfg))
            jpeg = render_snapshot(frame, boxes, [], cfg, base[2])
        except ValueError as exc:
            self.snapshots_failed += 1
            log.warning("event=snapshot_failed name=%s reason=%s", name, exc)
            return None
        ref = self.snapshot_ref(name, red)
        if cfg.mode == "publish":
            self.uplink.publish("snapshot", ref["topic"], jpeg, 1, created=frame.captured_at)
        else:
            path = Path(ref["topic"])
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, jpeg)
            except OSError as exc:  # a full or read-only card: the event is out already
                self.snapshots_failed += 1
                log.warning("event=snapshot_failed name=%s path=%s reason=%r", name, path,
                            exc.strerror or str(exc))
                return None
        return ref | {"bytes": len(jpeg)}

    # -- zone occupancy (retained state, not spooled) ---------------------------------
    def zones(self, changed: Occupancy, ts: float) -> None:
        for name, labels in changed.items():
            doc = messages.zone(self.ident, ts, name, labels)
            self.uplink.publish_state(self.topics.zone(name), messages.dumps(doc))

    def republish_zones(self, client: Any, occupancy: Occupancy) -> None:
        """On (re)connect, from paho's thread: the broker then holds the latest of each."""
        now = time.time()
        for name, labels in occupancy.items():
            doc = messages.zone(self.ident, now, name, labels)
            client.publish(self.topics.zone(name), messages.dumps(doc), qos=1, retain=True)
