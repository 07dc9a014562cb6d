"""Frames -> detections -> tracks -> rule events and zone occupancy, for one camera.

Per frame the pipeline thread gates, plans regions and letterboxes (`begin`), inference runs
on worker threads, and the pipeline thread decodes, tracks and applies the rules
(`complete`) in frame order, so its work on one frame overlaps inference of another. It
decides what happened; it never numbers, stores or sends it (`emitter`), and it knows
nothing of systemd, pins, commands or the broker (`agent`)."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from edge_agent import changes
from edge_agent.capture.frame import Frame
from edge_agent.changes import Built
from edge_agent.config import Config
from edge_agent.detect.detector import Detector, Prepared
from edge_agent.detect.pool import Done
from edge_agent.detect.types import Detection
from edge_agent.events.base import Rule, RuleEvent, Scene
from edge_agent.events.zones import Zone
from edge_agent.motion import MotionGate
from edge_agent.regions import Plan, RegionPlanner
from edge_agent.track import Track, Tracker

log = logging.getLogger(__name__)

Occupancy = dict[str, dict[str, int]]
"""Per zone name, the confirmed tracks standing in it by label."""
RuleEvents = list[tuple[int, RuleEvent]]
"""Events with the id of the rule that raised them (kept by a rule across live changes)."""


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

    def frame_age(self) -> float | None:
        last = self.last_frame
        return round(time.monotonic() - last, 2) if last is not None else None


@dataclass(frozen=True, slots=True)
class Pending:
    """A frame between `begin` and `complete`: what the gate and the planner decided."""

    frame: Frame
    plan: Plan | None
    """None: the gate skipped the detector for this frame."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one frame decided."""

    frame: Frame
    events: RuleEvents
    occupancy: Occupancy
    """Only the zones whose occupancy changed with this frame."""
    redact: list[Detection] | None
    """The redaction classes this frame's whole-frame detector run found; None when the
    detector did not run on the whole frame (a snapshot of it must find them itself)."""


class Pipeline:
    def __init__(self, config: Config, built: Built) -> None:
        """`built`: `changes.build(config)` with its own detector (a start, not a change)."""
        assert built.detector is not None, "a pipeline starts with its own detector"
        self.detector: Detector = built.detector
        workers = config.detector.workers
        self.depth = workers + 1 if config.detector.threads == 1 else workers
        """Frames in flight. One-thread inferences leave no thread spinning, and one frame
        more than the workers keeps each busy while the pipeline thread prepares the next.
        A multi-thread inference spins its threads between layers and loses to work
        running beside it what the overlap gains, so its frames go one at a time and
        events are not delayed by the next frame's inference (docs/performance.md)."""
        self.stats = Stats()
        self.last_frame: Frame | None = None
        self.redact_missing = self.detector.set_redaction(
            ["person", *config.snapshot.redact_classes])
        """Redaction labels the model does not have: "person" here means people cannot be
        blurred with this model, and snapshots say `redacted: false`."""
        self._next_rule_id = 0
        self.gate = MotionGate(config.motion)
        self.planner = RegionPlanner(config.regions, self.detector.input_size,
                                     self.detector.dynamic)
        self.detector.reserve(self.depth * config.regions.max_regions + 1)
        self.tracker = Tracker(config.tracker)
        self.rules: list[Rule] = list(built.rules)
        self._rule_keys = list(built.keys)
        self._rule_ids = [self._new_rule_id() for _ in built.rules]
        """Each running rule's identity for event numbering: kept by a rule that survives
        a live change, so its open events keep their event_id whatever its position."""
        self._config = config
        """The config the rooms were built from."""
        self._zones = [Zone.from_config(z) for z in config.zones]
        self._occupancy: Occupancy = {}
        """As last reported, per zone."""

    def _new_rule_id(self) -> int:
        self._next_rule_id += 1
        return self._next_rule_id

    # -- per frame ---------------------------------------------------------------------
    def begin(self, frame: Frame) -> tuple[Pending, Prepared | None]:
        """Gate, plan and letterbox: everything before inference."""
        self.stats.frames += 1
        if self.stats.frames == 1:
            log.info("event=first_frame after_s=%.2f", time.monotonic() - self.stats.started)
        self.stats.frame_times.append(frame.monotonic)
        self.stats.last_frame = time.monotonic()
        self.last_frame = frame
        run, motion = self.gate.should_detect(frame)
        if not run:
            return Pending(frame, None), None
        plan = self.planner.plan(frame.monotonic, frame.width, frame.height, motion,
                                 self.tracker.tracks)
        return Pending(frame, plan), self.detector.prepare(frame.image, plan.regions)

    def complete(self, done: Done[Pending]) -> Outcome:
        """Decode, track and apply the rules, in frame order."""
        frame, plan = done.item.frame, done.item.plan
        detections: list[Detection] = []
        redact: list[Detection] | None = None
        if plan is not None and done.prepared is not None:
            detections, found = self.detector.split(
                self.detector.finish(done.prepared, done.outputs, everything=True))
            redact = found if plan.regions is None else None
            self.stats.inference_ms.append(done.infer_s * 1000)
            self.stats.detector_runs += 1
            self.stats.inferences += len(done.outputs)
            self.stats.region_runs += plan.regions is not None
            tracks = self.tracker.update(detections, frame.monotonic)
        else:
            tracks = self.tracker.coast(frame.monotonic)
        occupancy = self._occupancy_changes(tracks)
        scene = Scene(frame=frame, tracks=tracks, detections=detections,
                      detected=plan is not None, now=frame.monotonic)
        events = [(i, ev) for i, rule in zip(self._rule_ids, self.rules, strict=True)
                  for ev in rule.update(scene)]
        return Outcome(frame, events, occupancy, redact)

    def process(self, frame: Frame) -> Outcome:
        """One frame from gate to events, inference on this thread: for callers that feed
        frames themselves (tests, benchmarks); the agent's loop overlaps the stages."""
        pending, prepared = self.begin(frame)
        done: Done[Pending] = Done(pending, prepared)
        if prepared is not None:
            t0 = time.perf_counter()
            done.outputs = [self.detector.infer(c.tensor) for c in prepared.crops]
            done.infer_s = time.perf_counter() - t0
        return self.complete(done)

    def _occupancy_changes(self, tracks: list[Track]) -> Occupancy:
        changed: Occupancy = {}
        for zone in self._zones:
            labels: dict[str, int] = {}
            for t in tracks:
                if zone.contains(t.anchor):
                    labels[t.label] = labels.get(t.label, 0) + 1
            if zone.name not in self._occupancy or self._occupancy[zone.name] != labels:
                self._occupancy[zone.name] = changed[zone.name] = labels
        return changed

    # -- lifecycle of what the rules hold ----------------------------------------------
    @property
    def occupancy(self) -> Occupancy:
        return dict(self._occupancy)

    def close_rules(self) -> RuleEvents:
        """End every open event of the rules (the caller says why)."""
        now = time.monotonic()
        return [(i, ev) for i, rule in zip(self._rule_ids, self.rules, strict=True)
                for ev in rule.close(now)]

    def forget_scene(self) -> tuple[RuleEvents, Occupancy]:
        """The camera is gone: end the rules' events, and drop what the tracker and the
        motion gate hold of a scene no longer seen. Returns the ended events and the zones
        now empty."""
        ended = self.close_rules()
        self.gate = MotionGate(self._config.motion)
        self.tracker = Tracker(self._config.tracker)
        return ended, self._occupancy_changes([])

    def rebuild(self, config: Config, built: Built) -> RuleEvents:
        """Rebuild only what a live change touched: the motion gate, the region planner,
        the tracker, and the rules whose settings or geometry changed. A rule left alone
        keeps its tracks' state and its open events; a replaced one's events end, and are
        returned for the caller to send before any event of the new rules."""
        touched = set(changes.changed_sections(self._config, config))
        if "motion" in touched:
            self.gate = MotionGate(config.motion)
        if "regions" in touched:
            self.planner = RegionPlanner(config.regions, self.detector.input_size,
                                         self.detector.dynamic)
            self.detector.reserve(self.depth * config.regions.max_regions + 1)
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
        now = time.monotonic()
        ended = [(rid, ev) for pairs in running.values() for rid, rule in pairs
                 for ev in rule.close(now)]
        self.rules, self._rule_ids, self._rule_keys = rules, ids, list(built.keys)
        if "zones" in touched:
            self._zones = [Zone.from_config(z) for z in config.zones]
        self._config = config
        log.info("event=config_applied sections=%s rules_kept=%d rules_replaced=%d",
                 ",".join(sorted(touched)) or "-", kept, len(rules) - kept)
        return ended
