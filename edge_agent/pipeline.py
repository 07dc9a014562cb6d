"""Wires the rooms together for one camera: frames -> detections -> tracks -> events -> uplink.

The only module that knows every room; it decides nothing the rooms decide themselves."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from edge_agent import __version__
from edge_agent.capture import FrameGrabber, open_source
from edge_agent.capture.frame import Frame
from edge_agent.commands import Commands
from edge_agent.config import Config
from edge_agent.detect.detector import Detector
from edge_agent.events import build_rules
from edge_agent.events.base import Rule, RuleEvent, Scene
from edge_agent.motion import MotionGate
from edge_agent.snapshot import render_snapshot
from edge_agent.track import Track, Tracker
from edge_agent.uplink import messages
from edge_agent.uplink.boot import next_boot
from edge_agent.uplink.client import Uplink
from edge_agent.uplink.messages import EventNumbering, Identity
from edge_agent.uplink.spool import Spool
from edge_agent.uplink.topics import Topics

log = logging.getLogger(__name__)


@dataclass
class Stats:
    """Counters for telemetry; written by the pipeline thread only."""

    started: float = field(default_factory=time.monotonic)
    frames: int = 0
    detector_runs: int = 0
    events: int = 0
    inference_ms: deque[float] = field(default_factory=lambda: deque(maxlen=50))
    frame_times: deque[float] = field(default_factory=lambda: deque(maxlen=50))

    def fps(self) -> float:
        if len(self.frame_times) < 2:
            return 0.0
        span = self.frame_times[-1] - self.frame_times[0]
        return (len(self.frame_times) - 1) / span if span > 0 else 0.0


class Agent:
    """One camera node. `run()` blocks until `stop()` or until a non-looping source ends."""

    def __init__(self, config: Config) -> None:
        self.config = config
        node = config.node
        self.boot = next_boot(node.state_dir)
        self.ident = Identity(node.site, node.id, "camera", self.boot)
        self.topics = Topics(config.mqtt.topic_prefix, node.site, node.id)
        self.numbering = EventNumbering(self.ident)
        self.stats = Stats()
        self.detector = Detector.from_config(config.detector)
        self.gate = MotionGate(config.motion)
        self.tracker = Tracker(config.tracker)
        self.rules: list[Rule] = build_rules(config)
        self.spool = Spool(node.state_dir / "spool.db")
        self.commands = Commands(self.ident, {"get_config": lambda args: self._public_config()})
        self.uplink = Uplink(config.mqtt, self.topics, self.ident, self.spool,
                             on_command=self.commands.handle)
        self._stop = threading.Event()
        self._camera_state = "offline"
        self._ended = threading.Event()
        self.grabber = FrameGrabber(open_source(config.camera), config.camera,
                                    on_status=self._on_camera_status)
        self._last_frame: Frame | None = None
        self._tracks: list[Track] = []

    # -- lifecycle ---------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        log.info("event=agent_start node=%s site=%s boot=%d version=%s", self.ident.node,
                 self.ident.site, self.boot, __version__)
        self.uplink.set_status(camera=self._camera_state)
        self.uplink.start()
        self.grabber.start()
        next_telemetry = time.monotonic() + 1.0
        try:
            while not self._stop.is_set():
                frame = self.grabber.get(timeout=0.5)
                if frame is not None:
                    self.process(frame)
                elif self._ended.is_set():
                    log.info("event=source_ended frames=%d", self.stats.frames)
                    break
                if time.monotonic() >= next_telemetry:
                    self._publish_telemetry()
                    next_telemetry = time.monotonic() + self.config.mqtt.telemetry_interval_s
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        self.grabber.stop()
        now = time.monotonic()
        for rule in self.rules:
            for ev in rule.close(now):
                self._emit(ev, self._last_frame, self._tracks)
        self._publish_telemetry()
        self.uplink.stop("shutdown")
        self.spool.close()
        log.info("event=agent_stop events=%d spooled=%s", self.stats.events,
                 "kept for next start" if self.uplink.delivered < self.stats.events else "0")

    # -- per frame ---------------------------------------------------------------------
    def process(self, frame: Frame) -> list[RuleEvent]:
        self.stats.frames += 1
        self.stats.frame_times.append(frame.monotonic)
        self._last_frame = frame
        run, _motion = self.gate.should_detect(frame)
        detections = []
        if run:
            t0 = time.perf_counter()
            detections = self.detector.detect(frame.image)
            self.stats.inference_ms.append((time.perf_counter() - t0) * 1000)
            self.stats.detector_runs += 1
            tracks = self.tracker.update(detections, frame.monotonic)
        else:
            tracks = self.tracker.coast(frame.monotonic)
        self._tracks = tracks
        scene = Scene(frame=frame, tracks=tracks, detections=detections, detected=run,
                      now=frame.monotonic)
        out: list[RuleEvent] = []
        for rule in self.rules:
            for ev in rule.update(scene):
                self._emit(ev, frame, tracks)
                out.append(ev)
        return out

    def _emit(self, ev: RuleEvent, frame: Frame | None, tracks: list[Track]) -> None:
        event_id, seq = self.numbering.number(ev.key, ev.phase)
        ts = frame.captured_at if frame is not None and ev.phase != "end" else time.time()
        snapshot = None
        snap_cfg = self.config.snapshot
        if frame is not None and ev.phase in ("start", "instant") and snap_cfg.mode != "off":
            snapshot = self._snapshot(event_id, frame, ev, tracks)
        doc = messages.event(self.ident, ts, event_id, seq, ev.type, ev.phase, ev.severity,
                             ev.details, ev.duration_s, snapshot)
        self.uplink.publish("event", self.topics.event(ev.type), messages.dumps(doc), 1,
                            created=ts)
        self.stats.events += 1
        log.info("event=%s phase=%s event_id=%s seq=%d severity=%s details=%s", ev.type,
                 ev.phase, event_id, seq, ev.severity, ev.details)

    def _snapshot(self, event_id: str, frame: Frame, ev: RuleEvent,
                  tracks: list[Track]) -> dict[str, Any] | None:
        cfg = self.config.snapshot
        try:
            jpeg = render_snapshot(frame, ev.boxes, tracks, cfg)
        except ValueError as exc:
            log.warning("event=snapshot_failed event_id=%s reason=%s", event_id, exc)
            return None
        if cfg.mode == "publish":
            topic = self.topics.snapshot(event_id)
            self.uplink.publish("snapshot", topic, jpeg, 1, created=frame.captured_at)
            return {"topic": topic, "bytes": len(jpeg), "redacted": cfg.redact_people}
        folder = self.config.node.state_dir / "snapshots"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{event_id}.jpg"
        path.write_bytes(jpeg)
        return {"topic": str(path), "bytes": len(jpeg), "redacted": cfg.redact_people}

    # -- status, telemetry, commands -------------------------------------------------------
    def _on_camera_status(self, state: str) -> None:
        if state == "ended":
            self._ended.set()
            return
        if state != self._camera_state:
            self._camera_state = state
            log.info("event=camera_status state=%s", state)
            self.uplink.set_status(camera=state)

    def _publish_telemetry(self) -> None:
        inf = self.stats.inference_ms
        dropped = self.spool.dropped()
        metrics: dict[str, float | int | str | bool | None] = {
            "fps": round(self.stats.fps(), 2),
            "inference_ms": round(sum(inf) / len(inf), 1) if inf else None,
            "frames": self.stats.frames,
            "detector_runs": self.stats.detector_runs,
            "dropped_frames": self.grabber.dropped,
            "events": self.stats.events,
            "spool_depth": self.spool.depth(),
            "spool_dropped_events": dropped["event"],
            "spool_dropped_telemetry": dropped["telemetry"],
            "camera": self._camera_state,
            "broker": "online" if self.uplink.connected else "offline",
        }
        doc = messages.telemetry(self.ident, time.time(),
                                 time.monotonic() - self.stats.started, metrics)
        self.uplink.publish("telemetry", self.topics.telemetry, messages.dumps(doc), 0)

    def _public_config(self) -> dict[str, Any]:
        """The config as loaded, with secrets masked: it leaves the node."""
        doc = self.config.model_dump(mode="json")
        if doc["mqtt"].get("password"):
            doc["mqtt"]["password"] = "***"
        return doc
