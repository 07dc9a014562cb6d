"""One camera node, supervised: the lifecycle, systemd, health, the camera's and the
broker's state, the pins' inputs, telemetry, commands and config changes, over the
pipeline (frames -> events), the emitter (events -> messages) and the uplink.

The failure boundaries show in the shape: the pipeline thread runs this loop, which never
waits on the camera (capture has its own thread and restarts itself), the broker (the
uplink spools) or a command (its own thread hands changes over a queue)."""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent import __version__, changes, retention
from edge_agent.capture import FrameGrabber, open_source
from edge_agent.capture.frame import Frame
from edge_agent.changes import Built
from edge_agent.commands import LIVE_SECTIONS, CommandError, Commands, handlers
from edge_agent.config import Config, IntrusionRule
from edge_agent.detect.detector import Detector
from edge_agent.detect.pool import Done, InferencePool
from edge_agent.emitter import Emit, Emitter
from edge_agent.events.base import RuleEvent
from edge_agent.gpio import Gpio
from edge_agent.health import HealthServer, MetricValue, host_metrics
from edge_agent.pipeline import Outcome, Pending, Pipeline, RuleEvents, Stats
from edge_agent.service import Notifier, Watchdog
from edge_agent.uplink import messages
from edge_agent.uplink.boot import instance, next_boot
from edge_agent.uplink.client import Uplink
from edge_agent.uplink.discovery import Discovery, discovery_messages
from edge_agent.uplink.messages import Identity
from edge_agent.uplink.spool import Spool
from edge_agent.uplink.topics import Topics

log = logging.getLogger(__name__)

AUDITED = frozenset({"set_config", "snapshot", "restart"})
"""Commands that change the node or take a picture of the scene: each leaves an audit record."""
SNAPSHOT_WAIT_S = 10.0
"""A `snapshot` command waits this long for the pipeline thread to take it."""
EXIT_RESTART = 75
"""Exit code after a `restart` command: non-zero, so systemd's Restart=on-failure starts
the unit again (EX_TEMPFAIL)."""


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
        self.pipeline = Pipeline(config, built)
        self.boot = next_boot(node.state_dir)
        self.ident = Identity(node.site, node.id, "camera", self.boot,
                              instance(node.state_dir))
        self.topics = Topics(config.mqtt.topic_prefix, node.site, node.id)
        self.spool = Spool(node.state_dir / "spool.db", config.spool.max_bytes,
                           config.spool.max_age_s)
        self.commands = Commands(self.ident, handlers(self))
        self.discovery: Discovery | None = None
        if config.discovery.enabled:
            msgs = discovery_messages(self.topics, "camera", prefix=config.discovery.prefix,
                                      event_types=self._event_types(),
                                      zones=_watched_zones(config))
            self.discovery = Discovery(msgs, lambda *a: None, config.discovery.prefix)
        self.uplink = Uplink(config.mqtt, self.topics, self.ident, self.spool,
                             on_command=self._command, on_connect=self._on_connect)
        if self.discovery is not None:
            self.discovery.attach(self.uplink.client)
        if remote_config is not None:
            self.uplink.set_status(remote_config=remote_config)
        self._inputs: queue.SimpleQueue[_InputEvent] = queue.SimpleQueue()
        self._pending: queue.SimpleQueue[tuple[Config, Built]] = queue.SimpleQueue()
        self.gpio = Gpio.from_config(config.gpio, self._on_input)
        self.emitter = Emitter(self.ident, self.topics, lambda: self.config, self.uplink,
                               self.spool, self.gpio, self.pipeline.stats,
                               self.pipeline.detector.detect_redaction,
                               "person" not in self.pipeline.redact_missing)
        if "person" in self.pipeline.redact_missing:
            log.warning("event=redaction_impossible model=%s reason=\"the model has no person "
                        "class: snapshots are sent with redacted=false\"",
                        config.detector.model)
        self.uplink.set_status(privacy=_privacy_status(
            config, "person" not in self.pipeline.redact_missing))
        self.purged = 0
        """Snapshots deleted for being older than the retention period, since start."""
        self._requests: queue.SimpleQueue[tuple[Future[dict[str, Any]], float]] = \
            queue.SimpleQueue()
        """On-demand snapshots, served by the pipeline thread (which owns the detector)."""
        self._running = False
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

    @property
    def detector(self) -> Detector:
        return self.pipeline.detector

    @property
    def stats(self) -> Stats:
        return self.pipeline.stats

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
        next_purge = 0.0
        pipeline = self.pipeline
        self._running = True
        pool: InferencePool[Pending] = InferencePool(
            pipeline.detector, self.config.detector.workers, pipeline.depth,
            on_done=self.grabber.wake)
        try:
            while not self._stop.is_set():
                frame = None
                if not pool.full:  # else the grabber keeps only the newest frame meanwhile
                    frame = self.grabber.get(timeout=0.2)
                    if frame is not None:
                        pool.submit(*pipeline.begin(frame))
                for done in pool.ready(wait=pool.full or frame is None):
                    self._complete(done)
                if frame is None and not len(pool) and self._ended.is_set():
                    log.info("event=source_ended frames=%d", self.stats.frames)
                    break
                self._drain_inputs()
                self._serve_requests()
                self._apply_pending()
                self._tend_service()
                if time.monotonic() >= next_purge:
                    self._purge()
                    next_purge = time.monotonic() + retention.EVERY_S
                if time.monotonic() >= next_telemetry:
                    self._publish_telemetry()
                    next_telemetry = time.monotonic() + self.config.mqtt.telemetry_interval_s
        finally:
            try:
                for done in pool.drain():
                    self._complete(done)
            finally:
                pool.close()
                self._running = False
                self._serve_requests()
                self._shutdown()
        return self._exit_code

    def _complete(self, done: Done[Pending]) -> list[RuleEvent]:
        return self._emit_outcome(self.pipeline.complete(done))

    def process(self, frame: Frame) -> list[RuleEvent]:
        """One frame through the pipeline and out, inference on this thread: for callers
        that feed frames themselves (tests, benchmarks); `run` overlaps the stages."""
        return self._emit_outcome(self.pipeline.process(frame))

    def _emit_outcome(self, out: Outcome) -> list[RuleEvent]:
        self.emitter.zones(out.occupancy, out.frame.captured_at)
        if out.events:
            self.emitter.frame(out.frame, self.pipeline.tracker.tracks,
                               [Emit(ev, out.frame, rid) for rid, ev in out.events],
                               out.redact)
        return [ev for _, ev in out.events]

    def _purge(self) -> None:
        try:
            self.purged += retention.purge(self.config.node.state_dir / "snapshots",
                                           self.spool, self.config.privacy.retention_s)
        except (OSError, sqlite3.Error) as exc:  # a failing card: try again next time
            log.error("event=purge_failed reason=%r", str(exc))

    def _command(self, payload: bytes, button: str | None = None) -> dict[str, Any]:
        """Every command gets its ack; the ones that change the node or take a picture also
        leave an audit record (logged and published on the audit topic)."""
        ack = self.commands.handle(payload, button)
        if ack.get("cmd") in AUDITED:
            doc = messages.audit(self.ident, time.time(), ack)
            log.info("event=audit command_id=%s cmd=%s ok=%s changed=%s error=%s",
                     doc["command_id"], doc["cmd"], doc["ok"],
                     ",".join(doc.get("changed", [])) or "-", doc.get("error", "-"))
            try:
                self.uplink.publish("audit", self.topics.audit, messages.dumps(doc), 1)
            except (sqlite3.Error, OSError) as exc:
                log.error("event=audit_not_stored reason=%r", str(exc))
        return ack

    def _end(self, ended: RuleEvents, reason: str) -> None:
        self.emitter.events([Emit(ev, self.pipeline.last_frame, rid, reason=reason)
                             for rid, ev in ended])

    def _tend_service(self) -> None:
        """Called once per loop turn: the watchdog follows this loop only (a camera or a
        broker that is away is reported and retried here, never a reason to be killed);
        camera loss ends the rules' events; systemd's STATUS and the LED follow."""
        self.watchdog.kick_if(True)
        lost = self._camera_state != "online" or not self._frames_flowing()
        if lost and not self._camera_lost:
            self._camera_lost = True
            log.warning("event=camera_lost state=%s last_frame_age_s=%s", self._camera_state,
                        self.stats.frame_age())
            ended, empty = self.pipeline.forget_scene()
            self._end(ended, "camera_lost")
            self.emitter.zones(empty, time.time())
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

    def _shutdown(self) -> None:
        self.notifier.stopping("stopping: flushing events")
        self.grabber.stop()
        self._drain_inputs()
        self._end(self.pipeline.close_rules(), "shutdown")
        now = time.time()
        self.emitter.events([Emit(RuleEvent(
            "tamper_switch", "end", "warning", f"tamper_switch:{name}", {"input": name},
            max(now - started, 0.0)), None, "input", ts=now, reason="shutdown")
            for name, started in self._open_inputs.items()])
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
            self.emitter.events([Emit(ev, None, "input", ts=item.at)])

    def _on_connect(self, client: Any) -> None:
        if self.discovery is not None:
            self.discovery.on_connect(client)
        self.emitter.republish_zones(client, self.pipeline.occupancy)

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
            "spool_dropped_snapshots": dropped["snapshot"],
            "snapshots_failed": self.emitter.snapshots_failed,
            "purged_snapshots": self.purged,
            "last_frame_age_s": self.stats.frame_age(),
            "camera": self._camera_state,
            "broker": "online" if self.uplink.connected else "offline",
            **host_metrics(),
        }

    def _publish_telemetry(self) -> None:
        doc = messages.telemetry(self.ident, time.time(),
                                 time.monotonic() - self.stats.started, self.metrics())
        self.uplink.publish("telemetry", self.topics.telemetry, messages.dumps(doc), 0)

    # -- commands.Node: what commands may do (command thread) -----------------------------
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
            update={k: getattr(config, k) for k in LIVE_SECTIONS})
        log.info("event=config_changed fields=%s", ",".join(fields))
        self.uplink.set_status(remote_config={
            "state": "applied", "changed": fields,
            "at": messages.utc_iso(time.time())})
        self._pending.put((self.config, built))

    def _apply_pending(self) -> None:
        try:
            config, built = self._pending.get_nowait()
        except queue.Empty:
            return
        # the replaced rules' events end before any event of the new ones
        self._end(self.pipeline.rebuild(config, built), "config_change")

    def take_snapshot(self) -> dict[str, Any]:
        """Handed to the pipeline thread: the detector that finds the people to blur on the
        latest frame is that thread's."""
        if not self._running:
            return self._snapshot_now()
        done: Future[dict[str, Any]] = Future()
        self._requests.put((done, time.monotonic()))
        try:
            return done.result(timeout=SNAPSHOT_WAIT_S)
        except FutureTimeout:
            raise CommandError("busy", "the pipeline did not get to the snapshot in "
                                       f"{SNAPSHOT_WAIT_S:.0f} s") from None

    def _serve_requests(self) -> None:
        while True:
            try:
                done, _ = self._requests.get_nowait()
            except queue.Empty:
                return
            if not done.set_running_or_notify_cancel():
                continue
            try:
                done.set_result(self._snapshot_now())
            except Exception as exc:  # CommandError, or a fault the ack must report
                done.set_exception(exc)

    def _snapshot_now(self) -> dict[str, Any]:
        frame = self.pipeline.last_frame
        if frame is None:
            raise CommandError("rejected", "no frame yet: the camera has not delivered one")
        if self._camera_lost:
            raise CommandError("rejected", "the camera is lost: the latest frame is "
                                           f"{self.stats.frame_age()} s old")
        name = f"{self.ident.node}-{self.boot}-cmd-{int(time.time() * 1000)}"
        red = self.emitter.redaction(frame, self.pipeline.tracker.tracks)
        snap = self.emitter.snapshot(name, frame, red, [])
        if snap is None:
            raise CommandError("internal", "the snapshot could not be encoded within "
                                           "snapshot.max_bytes or written")
        return snap

    def self_test(self) -> dict[str, Any]:
        checks: dict[str, dict[str, Any]] = {}
        age = self.stats.frame_age()
        checks["camera"] = {"ok": self._camera_state == "online" and age is not None
                            and age < self.config.health.stale_frames_s,
                            "state": self._camera_state, "last_frame_age_s": age}
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


def _privacy_status(config: Config, finds_people: bool) -> dict[str, Any]:
    """The camera's notice (purpose, operator, contact, retention: the items of a PIPA
    Art. 25 notice board) and what its redaction does, for the retained status."""
    p, s = config.privacy, config.snapshot
    doc: dict[str, Any] = {k: v for k, v in (("purpose", p.purpose), ("operator", p.operator),
                                             ("contact", p.contact)) if v}
    return doc | {"retention_h": round(p.retention_s / 3600, 1),
                  "redaction": "on" if s.redact_people and finds_people else "off",
                  "redact_classes": list(s.redact_classes),
                  "privacy_zones": len(s.privacy_zones)}


def _watched_zones(config: Config) -> dict[str, list[str]]:
    """Every zone, with the labels its intrusion rules watch (for discovery)."""
    zones: dict[str, list[str]] = {z.name: [] for z in config.zones}
    for rule in config.rules:
        if isinstance(rule, IntrusionRule):
            zones[rule.zone] = list(dict.fromkeys([*zones[rule.zone], *rule.labels]))
    return zones
