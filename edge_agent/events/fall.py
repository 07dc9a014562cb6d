"""Fall detection: a person who was upright and is now lying, from box shape or a fall model.

Decides instant events per person track only; never publishes, numbers or serialises events."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edge_agent.capture.frame import Image
from edge_agent.config import FallRule
from edge_agent.detect.types import Detection
from edge_agent.events.base import RuleEvent, Scene, box_json
from edge_agent.geometry import Box
from edge_agent.track import Track

log = logging.getLogger(__name__)

PERSON = "person"
MODEL_EVERY_S = 1.0
"""The fall model is slow on a Pi-class CPU (docs/performance.md): at most one run per
second, on its own worker thread (ModelWorker), so the pipeline thread never waits for it."""
WORKER_IDLE_S = 30.0
"""A worker thread with no run for this long ends; the next run starts a new one (a rule
replaced by a config change leaves no thread behind for long)."""
REGION_MARGIN = 0.25
"""Share of the person boxes' size added around them for the model: a falling person's box
changes shape faster than the tracker follows."""
MIN_OVERLAP = 0.3
"""A fall detection belongs to a person when it covers this share of the smaller box."""
EDGE_PX = 2.0
"""A box this close to the frame border is cut off by it and its shape says nothing."""


class RegionDetector(Protocol):
    """What the model method needs of a detector (edge_agent.detect.detector.Detector)."""

    def detect_region(self, image: Image, region: tuple[int, int, int, int], /
                      ) -> list[Detection]: ...


@dataclass(slots=True)
class _Person:
    upright_seen: bool = False
    since: float | None = None
    """When the current lying (shape) or fall (model) observation began."""
    armed: bool = True
    """False after an event, until the person is seen upright (shape) or not fallen (model):
    one event per fall, however long the person lies there."""
    score: float = 0.0


def _load_detector(cfg: FallRule) -> RegionDetector:
    """Imported here so the shape method never needs onnxruntime or a model file."""
    from edge_agent.config import DetectorConfig
    from edge_agent.detect.detector import Detector

    detector: RegionDetector = Detector.from_config(
        DetectorConfig(model=cfg.model, score=cfg.score, threads=cfg.threads, format="auto"))
    return detector


Job = tuple[float, list[Track]]
"""What a model run was asked about: the time and the person tracks (as they were then)."""


class ModelWorker:
    """Runs one model call at a time on its own daemon thread; the caller polls `take()`.

    A model call holds the GIL only between its native kernels, so the pipeline thread
    keeps deciding events for the frames that arrive meanwhile."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], list[Detection]], Job]] = \
            queue.SimpleQueue()
        self._lock = threading.Lock()
        self._busy = False
        self._done: tuple[Job, list[Detection]] | None = None
        self._thread: threading.Thread | None = None

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._busy

    def submit(self, fn: Callable[[], list[Detection]], job: Job) -> None:
        with self._lock:  # under the lock: an idle thread ending sees the job, or is gone
            self._busy = True
            self._jobs.put((fn, job))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fall-model",
                                                daemon=True)
                self._thread.start()

    def take(self) -> tuple[Job, list[Detection]] | None:
        """The finished run's job and detections, once; None while running or idle."""
        with self._lock:
            done, self._done = self._done, None
            if done is not None:
                self._busy = False
            return done

    def _run(self) -> None:
        while True:
            try:
                fn, job = self._jobs.get(timeout=WORKER_IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():
                        self._thread = None
                        return
                continue
            try:
                found = fn()
            except Exception as exc:  # a model fault costs this run, not the rule
                log.exception("event=fall_model_failed reason=%r", str(exc))
                found = []
            with self._lock:
                self._done = (job, found)


class InlineWorker(ModelWorker):
    """Runs the model on the caller's thread: for offline tools and deterministic tests."""

    def submit(self, fn: Callable[[], list[Detection]], job: Job) -> None:
        found = fn()
        with self._lock:
            self._busy, self._done = True, (job, found)


def _overlap(a: Box, b: Box) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller if smaller > 0 else 0.0


class Fall:
    """Without cfg.model (shape method): a confirmed person track whose box has been wider
    than tall (width/height > aspect_ratio) for min_duration_s, after having been upright
    earlier; a person who was never seen upright (e.g. someone lying on a bench when the
    camera started) is not a fall.

    With cfg.model (model method): a second detector runs around the person tracks at most
    once per MODEL_EVERY_S; a `cfg.label` detection on the same person for min_duration_s
    is a fall. The model runs on `worker` (its own thread by default); its result is judged
    at the first update after it finished, against the tracks as they were when it started.
    `detector` replaces the model for tests."""

    def __init__(self, cfg: FallRule, detector: RegionDetector | None = None,
                 worker: ModelWorker | None = None) -> None:
        self.cfg = cfg
        self.detector = detector if detector is not None or cfg.model is None \
            else _load_detector(cfg)
        self.worker = worker if worker is not None else ModelWorker()
        self._people: dict[int, _Person] = {}
        self._quiet_until: dict[int, float] = {}
        self._next_model = float("-inf")

    def update(self, scene: Scene) -> list[RuleEvent]:
        now = scene.now
        persons = [t for t in scene.tracks if t.label == PERSON]
        self._people = {t.track_id: self._people.get(t.track_id, _Person()) for t in persons}
        self._quiet_until = {k: v for k, v in self._quiet_until.items() if v > now}
        if self.detector is None:
            return self._shape(scene, persons)
        return self._model(scene, persons, self.detector)

    def close(self, now: float) -> list[RuleEvent]:
        return []  # instant events only: nothing is ever open

    def _shape(self, scene: Scene, persons: list[Track]) -> list[RuleEvent]:
        now, w_img, h_img = scene.now, scene.frame.width, scene.frame.height
        out: list[RuleEvent] = []
        for t in persons:
            p = self._people[t.track_id]
            x1, y1, x2, y2 = t.box
            if x1 <= EDGE_PX or y1 <= EDGE_PX or x2 >= w_img - EDGE_PX or y2 >= h_img - EDGE_PX:
                p.since = None
                continue
            w, h = x2 - x1, y2 - y1
            if h > w:
                p.upright_seen, p.armed, p.since = True, True, None
            elif h > 0 and w / h > self.cfg.aspect_ratio and p.upright_seen:
                p.since = now if p.since is None else p.since
                if self._due(t.track_id, p, now):
                    out.append(self._event(t, "shape", round(t.score, 3), now,
                                           {"aspect_ratio": round(w / h, 2)}))
            else:
                p.since = None  # sitting, bending: neither upright nor lying
        return out

    def _model(self, scene: Scene, persons: list[Track],
               detector: RegionDetector) -> list[RuleEvent]:
        now = scene.now
        out = self._judge(self.worker.take())
        if persons and now >= self._next_model and self.worker.idle:
            self._next_model = now + MODEL_EVERY_S
            region = self._region(persons, scene.frame.width, scene.frame.height)
            image = scene.frame.image.copy()  # the frame may be redacted while the model runs
            self.worker.submit(lambda: detector.detect_region(image, region),
                               (now, list(persons)))
            out += self._judge(self.worker.take())
        return out

    def _judge(self, done: tuple[Job, list[Detection]] | None) -> list[RuleEvent]:
        if done is None:
            return []
        (now, persons), found = done
        falls = [d for d in found if d.label == self.cfg.label and d.score >= self.cfg.score]
        out: list[RuleEvent] = []
        for t in persons:
            p = self._people.get(t.track_id)
            if p is None:
                continue  # the track ended while the model ran
            scores = [d.score for d in falls if _overlap(d.box, t.box) >= MIN_OVERLAP]
            if not scores:
                p.since, p.armed = None, True
                continue
            p.since = now if p.since is None else p.since
            p.score = max(scores)
            if self._due(t.track_id, p, now):
                out.append(self._event(t, "model", round(p.score, 3), now, {}))
        return out

    def _due(self, tid: int, p: _Person, now: float) -> bool:
        """Held long enough, not yet reported, not in cooldown; marks it reported."""
        assert p.since is not None
        if not p.armed or now - p.since < self.cfg.min_duration_s:
            return False
        if self._quiet_until.get(tid, now) > now:
            return False
        p.armed = False
        self._quiet_until[tid] = now + self.cfg.cooldown_s
        return True

    @staticmethod
    def _region(persons: list[Track], width: int, height: int) -> tuple[int, int, int, int]:
        x1 = min(t.box[0] for t in persons)
        y1 = min(t.box[1] for t in persons)
        x2 = max(t.box[2] for t in persons)
        y2 = max(t.box[3] for t in persons)
        mx, my = (x2 - x1) * REGION_MARGIN, (y2 - y1) * REGION_MARGIN
        return (max(0, int(x1 - mx)), max(0, int(y1 - my)),
                min(width, int(x2 + mx + 1)), min(height, int(y2 + my + 1)))

    def _event(self, t: Track, method: str, score: float, now: float,
               extra: dict[str, object]) -> RuleEvent:
        details: dict[str, object] = {"track_id": t.track_id, "box": box_json(t.box),
                                      "score": score, "method": method, **extra}
        return RuleEvent("fall", "instant", self.cfg.severity, f"fall:{t.track_id}", details,
                         None, [t.box])
