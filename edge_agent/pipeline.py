"""Wires the rooms together for one camera: frames -> detections -> tracks -> events -> uplink.

The only module that knows every room; it decides nothing the rooms decide themselves, and
only the pipeline thread emits events (inputs and commands hand theirs over a queue).

Per frame the pipeline thread gates, plans regions and letterboxes (begin), inference runs
on worker threads, and the pipeline thread decodes, tracks and applies the rules (complete)
in frame order, so its work on one frame overlaps inference of another."""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent import __version__, changes, control
from edge_agent.atomic import write_atomic
from edge_agent.capture import FrameGrabber, open_source
from edge_agent.capture.frame import Frame, Image
from edge_agent.changes import Built
from edge_agent.commands import CommandError, Commands
from edge_agent.config import Config, IntrusionRule, SnapshotConfig
from edge_agent.detect.detector import Prepared
from edge_agent.detect.pool import Done, InferencePool
from edge_agent.detect.types import Detection
from edge_agent.events.base import Rule, RuleEvent, Scene
from edge_agent.events.zones import Zone
from edge_agent.gpio import Gpio
from edge_agent.health import HealthServer, MetricValue, host_metrics
from edge_agent.motion import MotionGate
from edge_agent.regions import Plan, RegionPlanner
from edge_agent.service import Notifier, Watchdog
from edge_agent.snapshot import redacted, render_snapshot
from edge_agent.track import Track, Tracker
from edge_agent.uplink import messages
from edge_agent.uplink.boot import instance, next_boot
from edge_agent.uplink.client import Uplink
from edge_agent.uplink.discovery import Discovery, discovery_messages
from edge_agent.uplink.messages import EventNumbering, Identity
from edge_agent.uplink.spool import Spool
from edge_agent.uplink.topics import Topics

log = logging.getLogger(__name__)

EXIT_RESTART = 75
"""Exit code after a `restart` command: non-zero, so systemd's Restart=on-failure starts
the unit again (EX_TEMPFAIL)."""


@dataclass
class Stats:
    """Counters for telemetry; written by the pipeline thread only."""

    started: float = field(default_factory=time.monotonic)
    frames: int = 0
    detector_runs: int = 0
    """Frames the detector ran on."""
    inferences: int = 0
    """Inferences: one per frame, or one per region."""
    region_runs: int = 0
    """Frames detected on regions rather than the whole frame."""
    events: int = 0
    last_frame: float | None = None
    inference_ms: deque[float] = field(default_factory=lambda: deque(maxlen=50))
    frame_times: deque[float] = field(default_factory=lambda: deque(maxlen=50))

    def fps(self) -> float:
        if len(self.frame_times) < 2:
            return 0.0
        span = self.frame_times[-1] - self.frame_times[0]
        return (len(self.frame_times) - 1) / span if span > 0 else 0.0


@dataclass(frozen=True, slots=True)
class _Pending:
    """A frame between `begin` and `complete`: what the gate and the planner decided."""

    frame: Frame
    plan: Plan | None
    """None: the gate skipped the detector for this frame."""


@dataclass(frozen=True, slots=True)
class _Emit:
    """An event to number, store and announce, and where it came from."""

    ev: RuleEvent
    frame: Frame | None
    source: int | str
    ts: float | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    ts: float
    event_id: str
    seq: int
    due: tuple[str, list[Any]] | None
    """The snapshot the event names, to render once it is stored: (event_id, boxes)."""


@dataclass(frozen=True)
class _InputEvent:
    """An event from outside the frame path (GPIO inputs)."""

    type: str
    phase: str
    input: str
    at: float = field(default_factory=time.time)


class Agent:
    """One camera node. `run()` blocks until `stop()` or until a non-looping source ends."""

    def __init__(self, config: Config, config_path: Path | None = None,
                 built: Built | None = None,
                 remote_config: dict[str, Any] | None = None) -> None:
        """`built`: `changes.build(config)`, when the caller has built it already (raises
        BuildError when not given and the config does not build). `remote_config`: what
        became of stored remote changes at start, for the status message."""
        self.config = config
        self.config_path = config_path
        node = config.node
        built = built if built is not None else changes.build(config)  # bad models stop us first
        assert built.detector is not None, "a start builds its own detector"
        self.detector = built.detector
        workers = config.detector.workers
        self._depth = workers + 1 if config.detector.threads == 1 else workers
        """Frames in flight. One-thread inferences leave no thread spinning, and one frame
        more than the workers keeps each busy while the pipeline thread prepares the next
        (2 workers x 1 thread on 2 cores, medians of 5 runs on 250 frames of vtest: 116 fps
        with 3 in flight, 90 with 2). A multi-thread inference spins its threads between
        layers and loses to work running beside it what the overlap gains (1 x 2 threads:
        79 fps either way), so its frames go one at a time and events are not delayed by
        the next frame's inference."""
        self.boot = next_boot(node.state_dir)
        self.ident = Identity(node.site, node.id, "camera", self.boot,
                              instance(node.state_dir))
        self.topics = Topics(config.mqtt.topic_prefix, node.site, node.id)
        self.numbering = EventNumbering(self.ident)
        self.stats = Stats()
        self._next_rule_id = 0
        self._apply_rooms(config, built)
        self.spool = Spool(node.state_dir / "spool.db", config.spool.max_bytes,
                           config.spool.max_age_s)
        self.commands = Commands(self.ident, control.handlers(self))
        self.discovery: Discovery | None = None
        if config.discovery.enabled:
            msgs = discovery_messages(self.topics, "camera", prefix=config.discovery.prefix,
                                      event_types=self._event_types(),
                                      zones=self._watched_zones(config))
            self.discovery = Discovery(msgs, lambda *a: None, config.discovery.prefix)
        self.uplink = Uplink(config.mqtt, self.topics, self.ident, self.spool,
                             on_command=self.commands.handle, on_connect=self._on_connect)
        if self.discovery is not None:
            self.discovery.attach(self.uplink.client)
        if remote_config is not None:
            self.uplink.set_status(remote_config=remote_config)
        self._inputs: queue.SimpleQueue[_InputEvent] = queue.SimpleQueue()
        self._pending: queue.SimpleQueue[tuple[Config, Built]] = queue.SimpleQueue()
        self.gpio = Gpio.from_config(config.gpio, self._on_input)
        self.health = (HealthServer(self.metrics, config.health.port,
                                    config.health.stale_frames_s)
                       if config.health.port is not None else None)
        self.notifier = Notifier.from_env()
        self.watchdog = Watchdog.from_env()
        self._stop = threading.Event()
        self._exit_code = 0
        self._camera_state = "offline"
        """What the capture thread last reported: online, offline."""
        self._camera_lost = True
        """No camera to watch with: reported offline, or no frame for stale_frames_s. Set on
        the pipeline thread, which ends the rules' events when it turns True."""
        self._open_inputs: dict[str, float] = {}
        """Input events started and not ended (tamper switch open): input name -> start."""
        self._service_status = ""
        self._ended = threading.Event()
        self.grabber = FrameGrabber(open_source(config.camera), config.camera,
                                    on_status=self._on_camera_status)
        self._last_frame: Frame | None = None
        self._redacted: tuple[Frame, SnapshotConfig, Image] | None = None
        """The redacted copy of the latest frame that had an event, shared by its events."""

    def _apply_rooms(self, config: Config, built: Built) -> None:
        """Build the per-frame rooms at start."""
        self.gate = MotionGate(config.motion)
        self.planner = RegionPlanner(config.regions, self.detector.input_size,
                                     self.detector.dynamic)
        self.detector.reserve(self._depth * config.regions.max_regions + 1)
        self.tracker = Tracker(config.tracker)
        self.rules: list[Rule] = list(built.rules)
        self._rule_keys = list(built.keys)
        self._rule_ids = [self._new_rule_id() for _ in built.rules]
        """Each running rule's identity for event numbering: kept by a rule that survives
        a live change, so its open events keep their event_id whatever its position."""
        self._rooms_config = config
        """The config the rooms were built from."""
        self._zones = [Zone.from_config(z) for z in config.zones]
        self._occupancy: dict[str, dict[str, int]] = {}
        """Per zone, the confirmed tracks standing in it by label, as last published."""

    def _new_rule_id(self) -> int:
        self._next_rule_id += 1
        return self._next_rule_id

    @staticmethod
    def _watched_zones(config: Config) -> dict[str, list[str]]:
        """Every zone, with the labels its intrusion rules watch (for discovery)."""
        zones: dict[str, list[str]] = {z.name: [] for z in config.zones}
        for rule in config.rules:
            if isinstance(rule, IntrusionRule):
                zones[rule.zone] = list(dict.fromkeys([*zones[rule.zone], *rule.labels]))
        return zones

    def _event_types(self) -> list[str]:
        types: list[str] = [r.type for r in self.config.rules]
        if self.config.gpio.sos_button is not None:
            types.append("sos")
        if self.config.gpio.tamper_switch is not None:
            types.append("tamper_switch")
        return list(dict.fromkeys(types))

    # -- lifecycle ---------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        log.info("event=agent_start node=%s site=%s boot=%d version=%s", self.ident.node,
                 self.ident.site, self.boot, __version__)
        self.uplink.set_status(camera=self._camera_state)
        self.uplink.start()
        if self.health is not None:
            self.health.start()
        self.grabber.start()
        # Config, model, spool and pins are ready: the node can do its job (its inputs work
        # and events are stored) whether or not the camera and the broker are there yet.
        self._service_status = self._status_text()
        self.notifier.ready(self._service_status)
        log.info("event=ready")
        next_telemetry = time.monotonic() + 1.0
        pool: InferencePool[_Pending] = InferencePool(
            self.detector, self.config.detector.workers, self._depth, on_done=self.grabber.wake)
        try:
            while not self._stop.is_set():
                frame = None
                if not pool.full:  # else the grabber keeps only the newest frame meanwhile
                    frame = self.grabber.get(timeout=0.2)
                    if frame is not None:
                        pool.submit(*self._begin(frame))
                for done in pool.ready(wait=pool.full or frame is None):
                    self._complete(done)
                if frame is None and not len(pool) and self._ended.is_set():
                    log.info("event=source_ended frames=%d", self.stats.frames)
                    break
                self._drain_inputs()
                self._apply_pending()
                self._tend_service()
                if time.monotonic() >= next_telemetry:
                    self._publish_telemetry()
                    next_telemetry = time.monotonic() + self.config.mqtt.telemetry_interval_s
        finally:
            try:
                for done in pool.drain():
                    self._complete(done)
            finally:
                pool.close()
                self._shutdown()
        return self._exit_code

    def _tend_service(self) -> None:
        """Called once per loop turn: the watchdog follows this loop only (a camera or a
        broker that is away is reported and retried here, never a reason to be killed);
        camera loss ends the rules' events; systemd's STATUS and the LED follow."""
        self.watchdog.kick_if(True)
        lost = self._camera_state != "online" or not self._frames_flowing()
        if lost and not self._camera_lost:
            self._camera_lost = True
            log.warning("event=camera_lost state=%s last_frame_age_s=%s", self._camera_state,
                        self._frame_age())
            self._close_rules("camera_lost")
            # what the tracker and the motion gate hold is of a scene no longer seen
            self.gate = MotionGate(self.config.motion)
            self.tracker = Tracker(self.config.tracker)
            self._update_occupancy([], time.time())
        elif not lost and self._camera_lost:
            self._camera_lost = False
            log.info("event=camera_watching")
        text = self._status_text()
        if text != self._service_status:
            self._service_status = text
            self.notifier.status(text)
        if self.gpio is not None:
            self.gpio.set_state("camera_offline" if self._camera_lost else
                                "running" if self.uplink.connected else "broker_offline")

    def _status_text(self) -> str:
        camera = "offline" if self._camera_lost else "online"
        broker = "online" if self.uplink.connected else "offline"
        return f"running: camera {camera}, broker {broker}"

    def _frames_flowing(self) -> bool:
        last = self.stats.last_frame
        return last is not None and time.monotonic() - last < self.config.health.stale_frames_s

    def _frame_age(self) -> float | None:
        last = self.stats.last_frame
        return round(time.monotonic() - last, 2) if last is not None else None

    def _close_rules(self, reason: str) -> None:
        """End every open event of the rules, saying why (contract: `reason` on `end`)."""
        now = time.monotonic()
        self._emit_all([_Emit(ev, self._last_frame, i, reason=reason)
                        for i, rule in zip(self._rule_ids, self.rules, strict=True)
                        for ev in rule.close(now)])

    def _shutdown(self) -> None:
        self.notifier.stopping("stopping: flushing events")
        self.grabber.stop()
        self._drain_inputs()
        self._close_rules("shutdown")
        now = time.time()
        for name, started in list(self._open_inputs.items()):
            self._emit_all([_Emit(RuleEvent(
                "tamper_switch", "end", "warning", f"tamper_switch:{name}", {"input": name},
                max(now - started, 0.0)), None, "input", ts=now, reason="shutdown")])
        self._open_inputs.clear()
        self._publish_telemetry()
        self.uplink.stop("restart" if self._exit_code == EXIT_RESTART else "shutdown")
        if self.health is not None:
            self.health.stop()
        if self.gpio is not None:
            self.gpio.close()
        pending = self.spool.depth()
        self.spool.close()
        log.info("event=agent_stop events=%d spooled=%d", self.stats.events, pending)

    # -- per frame ---------------------------------------------------------------------
    def process(self, frame: Frame) -> list[RuleEvent]:
        """One frame from gate to events, inference on this thread: for callers that feed
        frames themselves (tests, benchmarks); `run` overlaps the stages instead."""
        pending, prepared = self._begin(frame)
        done: Done[_Pending] = Done(pending, prepared)
        if prepared is not None:
            t0 = time.perf_counter()
            done.outputs = [self.detector.infer(c.tensor) for c in prepared.crops]
            done.infer_s = time.perf_counter() - t0
        return self._complete(done)

    def _begin(self, frame: Frame) -> tuple[_Pending, Prepared | None]:
        """Gate, plan and letterbox: everything before inference."""
        self.stats.frames += 1
        if self.stats.frames == 1:
            log.info("event=first_frame after_s=%.2f", time.monotonic() - self.stats.started)
        self.stats.frame_times.append(frame.monotonic)
        self.stats.last_frame = time.monotonic()
        self._last_frame = frame
        run, motion = self.gate.should_detect(frame)
        if not run:
            return _Pending(frame, None), None
        plan = self.planner.plan(frame.monotonic, frame.width, frame.height, motion,
                                 self.tracker.tracks)
        return _Pending(frame, plan), self.detector.prepare(frame.image, plan.regions)

    def _complete(self, done: Done[_Pending]) -> list[RuleEvent]:
        """Decode, track and apply the rules, in frame order."""
        frame, plan = done.item.frame, done.item.plan
        detections: list[Detection] = []
        if plan is not None and done.prepared is not None:
            detections = self.detector.finish(done.prepared, done.outputs)
            self.stats.inference_ms.append(done.infer_s * 1000)
            self.stats.detector_runs += 1
            self.stats.inferences += len(done.outputs)
            self.stats.region_runs += plan.regions is not None
            tracks = self.tracker.update(detections, frame.monotonic)
        else:
            tracks = self.tracker.coast(frame.monotonic)
        self._update_occupancy(tracks, frame.captured_at)
        scene = Scene(frame=frame, tracks=tracks, detections=detections,
                      detected=plan is not None, now=frame.monotonic)
        out: list[tuple[int, RuleEvent]] = [(i, ev) for i, rule in zip(self._rule_ids,
                                                                         self.rules, strict=True)
                                            for ev in rule.update(scene)]
        if not out:
            return []
        due = self._emit_all([_Emit(ev, frame, i) for i, ev in out])
        # The events are committed and on their way; their snapshots follow them. Rendering
        # (redact, draw, JPEG) costs more than the rest of the frame's work after inference
        # (2.3 ms here, about 15 ms on a Pi 4), and an operator wants the alarm first.
        if due:
            try:
                with self.spool.batch():
                    for name, boxes in due:
                        self._snapshot(name, frame, boxes)
            except (sqlite3.Error, OSError) as exc:
                log.error("event=snapshot_failed reason=%r snapshots=%d", str(exc), len(due))
        return [ev for _, ev in out]

    def _emit_all(self, items: list[_Emit]) -> list[tuple[str, list[Any]]]:
        """Number the events, store them together (one transaction: one sync for a frame's
        events) and hand them to the uplink; only then drive the pins and log them, so a
        fault there can neither lose a stored event nor break the numbering. Returns the
        snapshots the events name, for the caller to render: (event_id, boxes).

        A spool that cannot be written (a full or failing SD card) must not cost the alarm:
        the events then go to paho directly, without durability, and the failure is logged."""
        if not items:
            return []
        made = [self._message(item) for item in items]
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

    def _message(self, item: _Emit) -> _Message:
        """`item.source` (the rule's id, or "input") keeps two rules that watch the same
        thing from sharing one event's lifecycle; `item.reason` says why an `end` came
        other than the thing ending."""
        ev, frame = item.ev, item.frame
        event_id, seq = self.numbering.number(f"{item.source}/{ev.key}", ev.phase)
        ts = item.ts
        if ts is None:
            ts = frame.captured_at if frame is not None and ev.phase != "end" else time.time()
        due = None
        if frame is not None and ev.phase in ("start", "instant") \
                and self.config.snapshot.mode != "off":
            due = (event_id, ev.boxes)
        doc = messages.event(self.ident, ts, event_id, seq, ev.type, ev.phase, ev.severity,
                             ev.details, ev.duration_s,
                             self._snapshot_ref(event_id) if due else None, item.reason)
        return _Message(self.topics.event(ev.type), messages.dumps(doc), ts, event_id, seq, due)

    def _snapshot_ref(self, name: str) -> dict[str, Any]:
        """Where snapshot `name` will be: the topic it is published on, or its file."""
        cfg = self.config.snapshot
        where = (self.topics.snapshot(name) if cfg.mode == "publish"
                 else str(self.config.node.state_dir / "snapshots" / f"{name}.jpg"))
        return {"topic": where, "redacted": cfg.redact_people}

    def _snapshot(self, name: str, frame: Frame, boxes: list[Any]) -> dict[str, Any] | None:
        """Render, redact and publish (or save) snapshot `name`; None when it cannot be
        encoded within max_bytes (logged)."""
        cfg = self.config.snapshot
        try:
            # every live track, tentative ones too: a person seen once is still a person
            base = self._redacted
            if base is None or base[0] is not frame or base[1] is not cfg:
                base = self._redacted = (frame, cfg, redacted(frame, self.tracker.tracks, cfg))
            jpeg = render_snapshot(frame, boxes, self.tracker.tracks, cfg, base[2])
        except ValueError as exc:
            log.warning("event=snapshot_failed name=%s reason=%s", name, exc)
            return None
        ref = self._snapshot_ref(name)
        if cfg.mode == "publish":
            self.uplink.publish("snapshot", ref["topic"], jpeg, 1, created=frame.captured_at)
        else:
            path = Path(ref["topic"])
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, jpeg)
            except OSError as exc:  # a full or read-only card: the event is out already
                log.warning("event=snapshot_failed name=%s path=%s reason=%r", name, path,
                            exc.strerror or str(exc))
                return None
        return ref | {"bytes": len(jpeg)}

    # -- inputs, status, telemetry --------------------------------------------------------
    def _on_input(self, event_type: str, phase: str, name: str) -> None:
        """gpiozero's thread: hand over to the pipeline thread, which owns numbering."""
        self._inputs.put(_InputEvent(event_type, phase, name))

    def _drain_inputs(self) -> None:
        while True:
            try:
                item = self._inputs.get_nowait()
            except queue.Empty:
                return
            severity = "critical" if item.type == "sos" else "warning"
            duration = None
            if item.phase == "start":
                if item.input in self._open_inputs:
                    continue  # already open: a bounce the pin's debounce let through
                self._open_inputs[item.input] = item.at
            elif item.phase == "end":
                started = self._open_inputs.pop(item.input, None)
                if started is None:
                    continue  # never started: an end must follow a start
                duration = max(item.at - started, 0.0)
            ev = RuleEvent(item.type, item.phase, severity,  # type: ignore[arg-type]
                           f"{item.type}:{item.input}", {"input": item.input}, duration)
            self._emit_all([_Emit(ev, None, "input", ts=item.at)])

    def _update_occupancy(self, tracks: list[Track], ts: float) -> None:
        """Publish a zone's occupancy when it changes (retained: the latest wins)."""
        for zone in self._zones:
            labels: dict[str, int] = {}
            for t in tracks:
                if zone.contains(t.anchor):
                    labels[t.label] = labels.get(t.label, 0) + 1
            if self._occupancy.get(zone.name, {}) != labels or zone.name not in self._occupancy:
                self._occupancy[zone.name] = labels
                doc = messages.zone(self.ident, ts, zone.name, labels)
                self.uplink.publish_state(self.topics.zone(zone.name), messages.dumps(doc))

    def _on_connect(self, client: Any) -> None:
        if self.discovery is not None:
            self.discovery.on_connect(client)
        now = time.time()
        for name, labels in list(self._occupancy.items()):  # the broker holds the latest
            doc = messages.zone(self.ident, now, name, labels)
            client.publish(self.topics.zone(name), messages.dumps(doc), qos=1, retain=True)

    def _on_camera_status(self, state: str) -> None:
        if state == "ended":
            self._ended.set()
            return
        if state != self._camera_state:
            self._camera_state = state
            log.info("event=camera_status state=%s", state)
            self.uplink.set_status(camera=state)

    def metrics(self) -> dict[str, MetricValue]:
        inf = self.stats.inference_ms
        dropped = self.spool.dropped()
        return {
            "fps": round(self.stats.fps(), 2),
            "inference_ms": round(sum(inf) / len(inf), 1) if inf else None,
            "frames": self.stats.frames,
            "detector_runs": self.stats.detector_runs,
            "detector_inferences": self.stats.inferences,
            "region_runs": self.stats.region_runs,
            "dropped_frames": self.grabber.dropped,
            "events": self.stats.events,
            "spool_depth": self.spool.depth(),
            "spool_dropped_events": dropped["event"],
            "spool_dropped_telemetry": dropped["telemetry"],
            "last_frame_age_s": self._frame_age(),
            "camera": self._camera_state,
            "broker": "online" if self.uplink.connected else "offline",
            **host_metrics(),
        }

    def _publish_telemetry(self) -> None:
        doc = messages.telemetry(self.ident, time.time(),
                                 time.monotonic() - self.stats.started, self.metrics())
        self.uplink.publish("telemetry", self.topics.telemetry, messages.dumps(doc), 0)

    # -- control.Node: what commands may do (command thread) -----------------------------
    def build(self, config: Config) -> Built:
        """Build a changed config as this node would run it; the running detector is reused
        when the change leaves the detector section alone."""
        same = config.detector == self.config.detector
        return changes.build(config, self.detector if same else None)

    def apply_config(self, config: Config, built: Built, fields: list[str]) -> None:
        """Live sections take effect from the next frame (and show in get_config at once);
        the rest after a restart. The pipeline thread swaps the rooms, so no rule is
        replaced halfway through a frame."""
        self.config = self.config.model_copy(
            update={k: getattr(config, k) for k in control.LIVE_SECTIONS})
        log.info("event=config_changed fields=%s", ",".join(fields))
        self.uplink.set_status(remote_config={
            "state": "applied", "changed": fields,
            "at": messages.utc_iso(time.time())})
        self._pending.put((self.config, built))

    def _apply_pending(self) -> None:
        """Rebuild only what a change touched: the motion gate, the region planner, the
        tracker, and the rules whose settings or geometry changed. A rule left alone keeps
        its tracks' state and its open events; a replaced one ends its events first."""
        try:
            config, built = self._pending.get_nowait()
        except queue.Empty:
            return
        touched = set(changes.changed_sections(self._rooms_config, config))
        if "motion" in touched:
            self.gate = MotionGate(config.motion)
        if "regions" in touched:
            self.planner = RegionPlanner(config.regions, self.detector.input_size,
                                         self.detector.dynamic)
            self.detector.reserve(self._depth * config.regions.max_regions + 1)
        keep = "tracker" not in touched  # new track ids: every rule starts afresh
        if not keep:
            self.tracker = Tracker(config.tracker)
        running: dict[str, list[tuple[int, Rule]]] = {}
        for key, rid, rule in zip(self._rule_keys, self._rule_ids, self.rules, strict=True):
            running.setdefault(key, []).append((rid, rule))
        rules: list[Rule] = []
        ids: list[int] = []
        kept = 0
        for key, new_rule in zip(built.keys, built.rules, strict=True):
            same = running.get(key) if keep else None
            if same:
                rid, rule = same.pop(0)
                kept += 1
            else:
                rid, rule = self._new_rule_id(), new_rule
            rules.append(rule)
            ids.append(rid)
        retired = [(rid, rule) for pairs in running.values() for rid, rule in pairs]
        now = time.monotonic()
        # old rules' events end before new ones start
        self._emit_all([_Emit(ev, self._last_frame, rid, reason="config_change")
                        for rid, rule in retired for ev in rule.close(now)])
        self.rules, self._rule_ids, self._rule_keys = rules, ids, list(built.keys)
        if "zones" in touched:
            self._zones = [Zone.from_config(z) for z in config.zones]
        self._rooms_config = config
        log.info("event=config_applied sections=%s rules_kept=%d rules_replaced=%d",
                 ",".join(sorted(touched)) or "-", kept, len(rules) - kept)

    def take_snapshot(self) -> dict[str, Any]:
        frame = self._last_frame
        if frame is None:
            raise CommandError("rejected", "no frame yet: the camera has not delivered one")
        name = f"{self.ident.node}-{self.boot}-cmd-{int(time.time() * 1000)}"
        snap = self._snapshot(name, frame, [])
        if snap is None:
            raise CommandError("internal", "the snapshot could not be encoded within "
                                           "snapshot.max_bytes")
        return snap

    def self_test(self) -> dict[str, Any]:
        checks: dict[str, dict[str, Any]] = {}
        age = time.monotonic() - self.stats.last_frame if self.stats.last_frame else None
        checks["camera"] = {"ok": self._camera_state == "online" and age is not None
                            and age < self.config.health.stale_frames_s,
                            "state": self._camera_state,
                            "last_frame_age_s": round(age, 2) if age is not None else None}
        inf = list(self.stats.inference_ms)
        checks["detector"] = {"ok": bool(inf), "runs": self.stats.detector_runs,
                              "mean_ms": round(sum(inf) / len(inf), 1) if inf else None}
        checks["broker"] = {"ok": self.uplink.connected}
        checks["spool"] = {"ok": True, "depth": self.spool.depth()}
        return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}

    def request_restart(self) -> None:
        log.info("event=restart_requested")
        self._exit_code = EXIT_RESTART
        self._stop.set()
