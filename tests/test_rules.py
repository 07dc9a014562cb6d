"""Event rules on synthetic scenes (clear logic) and on vtest.avi (tamper must stay quiet)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.capture.frame import Frame, Image
from edge_agent.config import (
    CrowdingRule,
    DetectorConfig,
    FallRule,
    IntrusionRule,
    LineCrossingRule,
    LoiteringRule,
    TamperRule,
    TrackerConfig,
    load_config,
)
from edge_agent.detect.types import Detection
from edge_agent.events import build_rules
from edge_agent.events.base import Rule, RuleEvent, Scene
from edge_agent.events.crowding import Crowding
from edge_agent.events.fall import Fall, InlineWorker, RegionDetector
from edge_agent.events.intrusion import Intrusion
from edge_agent.events.line_crossing import LineCrossing
from edge_agent.events.loitering import Loitering
from edge_agent.events.tamper import Tamper
from edge_agent.events.zones import Line, Zone, point_in_polygon, segments_intersect
from edge_agent.geometry import Box
from edge_agent.track import Track, Tracker
from edge_agent.uplink import messages
from edge_agent.uplink.messages import EventNumbering, Identity
from tests.mqtt_helpers import validator

ROOT = Path(__file__).resolve().parent.parent
FPS = 10.0
BLANK = np.zeros((576, 768, 3), np.uint8)
YARD = Zone("yard", ((100.0, 100.0), (400.0, 100.0), (400.0, 400.0), (100.0, 400.0)))


# -- helpers -------------------------------------------------------------------------------
def at(x: float, y: float, w: float = 30.0, h: float = 80.0) -> Box:
    """A box whose bottom-centre (the anchor rules use) is at (x, y)."""
    return (x - w / 2, y - h, x + w / 2, y)


def track(tid: int, box: Box, label: str = "person", score: float = 0.9, now: float = 0.0,
          missed: int = 0) -> Track:
    return Track(track_id=tid, label=label, class_id=0, score=score, box=box, first_seen=0.0,
                 last_seen=now, missed=missed, confirmed=True)


def scene(now: float, tracks: list[Track], image: Image = BLANK, detected: bool = True) -> Scene:
    return Scene(Frame(image, int(now * FPS), 1.7e9 + now, now), tracks, [], detected, now)


def run(rule: Rule, steps: Iterable[tuple[float, list[Track]]]) -> list[tuple[float, RuleEvent]]:
    out: list[tuple[float, RuleEvent]] = []
    for now, tracks in steps:
        out += [(now, ev) for ev in rule.update(scene(now, tracks))]
    return out


def walk(tid: int, start: tuple[float, float], velocity: tuple[float, float], t0: float,
         t1: float, **kw: Any) -> Iterator[tuple[float, list[Track]]]:
    """One track walking in a straight line, a scene every 0.1 s from t0 to t1 inclusive."""
    for i in range(round((t1 - t0) * FPS) + 1):
        now = round(t0 + i / FPS, 3)
        x = start[0] + velocity[0] * (now - t0)
        y = start[1] + velocity[1] * (now - t0)
        yield now, [track(tid, at(x, y), now=now, **kw)]


def phases(events: list[tuple[float, RuleEvent]]) -> list[tuple[float, str]]:
    return [(now, ev.phase) for now, ev in events]


def check_contract(events: Iterable[RuleEvent]) -> None:
    """Every event, numbered and serialised as the agent does, satisfies schemas/event.json."""
    numbering = EventNumbering(Identity("site-a", "cam-1", "camera", 1))
    for ev in events:
        event_id, seq = numbering.number(ev.key, ev.phase)
        doc = messages.event(Identity("site-a", "cam-1", "camera", 1), 1.7e9, event_id, seq,
                             ev.type, ev.phase, ev.severity, ev.details, ev.duration_s)
        validator("event").validate(json.loads(messages.dumps(doc)))


# -- geometry ------------------------------------------------------------------------------
def test_geometry() -> None:
    square = YARD.points
    assert point_in_polygon((250, 250), square)
    assert not point_in_polygon((50, 250), square)
    assert not point_in_polygon((250, 450), square)
    assert segments_intersect((0, 0), (10, 10), (0, 10), (10, 0))
    assert not segments_intersect((0, 0), (10, 10), (20, 0), (20, 10))
    assert segments_intersect((0, 0), (10, 0), (5, 0), (5, 5))  # touching counts


def test_build_rules_from_the_plaza_config() -> None:
    cfg = load_config(ROOT / "sim" / "cameras" / "vtest-plaza.toml")
    rules = build_rules(cfg)
    assert [type(r) for r in rules] == [Intrusion, Crowding, LineCrossing, Loitering, Tamper]
    intrusion = rules[0]
    assert isinstance(intrusion, Intrusion) and intrusion.zone.name == "walkway"
    assert intrusion.zone.contains((400, 300)) and not intrusion.zone.contains((400, 100))
    crossing = rules[2]
    assert isinstance(crossing, LineCrossing)
    assert (crossing.line.a, crossing.line.b) == ((384.0, 120.0), (384.0, 400.0))


# -- intrusion -----------------------------------------------------------------------------
def intrusion(**kw: Any) -> Intrusion:
    return Intrusion(IntrusionRule(type="intrusion", zone="yard", **kw), YARD)


def test_intrusion_starts_inside_and_ends_on_leaving() -> None:
    rule = intrusion()
    events = run(rule, walk(7, (55, 300), (100, 0), 0.0, 5.0))  # x 55 -> 555
    assert phases(events) == [(0.5, "start"), (3.5, "end")]  # in at x 105, out at x 405
    start, end = events[0][1], events[1][1]
    assert start.key == end.key == "intrusion:yard:7"
    assert start.details == {"zone": "yard", "track_id": 7, "label": "person", "score": 0.9,
                             "box": [90.0, 220.0, 120.0, 300.0]}
    assert start.severity == "warning" and start.boxes == [(90.0, 220.0, 120.0, 300.0)]
    assert end.duration_s == pytest.approx(3.0)
    assert end.details["track_id"] == 7 and end.details["zone"] == "yard"
    check_contract(ev for _, ev in events)


def test_intrusion_ends_when_the_track_ends() -> None:
    rule = intrusion()
    events = run(rule, walk(3, (200, 300), (0, 0), 0.0, 2.0))
    events += run(rule, [(2.1, []), (4.0, [])])  # the tracker dropped it
    assert phases(events) == [(0.0, "start"), (2.1, "end")]
    assert events[1][1].duration_s == pytest.approx(2.0)  # until it was last seen


def test_intrusion_stays_open_while_the_track_coasts() -> None:
    """Motion gating skipped the detector: the track coasts with its last box."""
    rule = intrusion()
    run(rule, walk(3, (200, 300), (0, 0), 0.0, 1.0))
    coasting = [track(3, at(200, 300), now=1.0)]
    for i in range(15):
        now = 1.1 + i / FPS
        assert rule.update(scene(now, coasting, detected=False)) == []


def test_intrusion_cooldown_per_track_and_zone() -> None:
    rule = intrusion(cooldown_s=5.0)
    events = run(rule, walk(1, (150, 300), (0, 0), 0.0, 1.0))  # inside
    events += run(rule, walk(1, (450, 300), (0, 0), 1.1, 2.0))  # out: end at 1.1
    events += run(rule, walk(1, (150, 300), (0, 0), 2.1, 3.0))  # back in within 5 s: nothing
    events += run(rule, walk(2, (160, 300), (0, 0), 2.1, 3.0))  # someone else: starts
    assert [(now, ev.phase, ev.details["track_id"]) for now, ev in events] == [
        (0.0, "start", 1), (1.1, "end", 1), (2.1, "start", 2)]
    later = run(rule, walk(1, (150, 300), (0, 0), 6.2, 6.5))  # cooldown over (6.1)
    assert [(now, ev.phase, ev.details["track_id"]) for now, ev in later] == [
        (6.2, "end", 2), (6.2, "start", 1)]


def test_intrusion_labels_and_min_score() -> None:
    rule = intrusion(labels=["person"], min_score=0.5)
    assert run(rule, walk(1, (200, 300), (0, 0), 0.0, 1.0, label="car")) == []
    assert run(rule, walk(2, (200, 300), (0, 0), 0.0, 1.0, score=0.3)) == []
    assert phases(run(rule, walk(3, (200, 300), (0, 0), 0.0, 1.0, score=0.6))) == [
        (0.0, "start")]


def test_intrusion_close_ends_every_open_event() -> None:
    rule = intrusion()
    run(rule, [(0.0, [track(1, at(150, 300)), track(2, at(250, 300))])])
    closed = rule.close(4.0)
    assert sorted((ev.key, ev.phase, ev.duration_s) for ev in closed) == [
        ("intrusion:yard:1", "end", 4.0), ("intrusion:yard:2", "end", 4.0)]
    assert rule.close(5.0) == []


# -- line crossing ---------------------------------------------------------------------------
DOWN = Line("door", (300.0, 100.0), (300.0, 500.0))
"""A vertical line drawn top to bottom: a_to_b is walking right to left on screen."""
ACROSS = Line("kerb", (100.0, 300.0), (500.0, 300.0))
"""A horizontal line drawn left to right: a_to_b is walking down the image."""


def crossing(line: Line = DOWN, **kw: Any) -> LineCrossing:
    return LineCrossing(LineCrossingRule(type="line_crossing", line=line.name, **kw), line)


def test_line_crossing_direction_convention() -> None:
    right_to_left = run(crossing(), walk(1, (400, 300), (-100, 0), 0.0, 2.0))
    left_to_right = run(crossing(), walk(2, (200, 300), (100, 0), 0.0, 2.0))
    downwards = run(crossing(ACROSS), walk(3, (300, 200), (0, 100), 0.0, 2.0))
    upwards = run(crossing(ACROSS), walk(4, (300, 400), (0, -100), 0.0, 2.0))
    assert [(now, ev.phase, ev.details["direction"]) for now, ev in right_to_left] == [
        (1.1, "instant", "a_to_b")]
    assert [ev.details["direction"] for _, ev in left_to_right] == ["b_to_a"]
    assert [ev.details["direction"] for _, ev in downwards] == ["a_to_b"]
    assert [ev.details["direction"] for _, ev in upwards] == ["b_to_a"]
    ev = right_to_left[0][1]
    assert ev.key == "line_crossing:door:1"
    assert ev.details == {"line": "door", "direction": "a_to_b", "track_id": 1,
                          "label": "person", "box": [275.0, 220.0, 305.0, 300.0]}
    check_contract(e for _, e in right_to_left + left_to_right + downwards + upwards)


def test_line_crossing_direction_filter() -> None:
    rule = crossing(direction="b_to_a")
    assert run(rule, walk(1, (400, 300), (-100, 0), 0.0, 2.0)) == []
    assert len(run(rule, walk(2, (200, 300), (100, 0), 0.0, 2.0))) == 1


def test_passing_beyond_the_end_of_the_line_is_no_crossing() -> None:
    rule = crossing()
    assert run(rule, walk(1, (400, 550), (-100, 0), 0.0, 2.0)) == []  # below b
    assert run(rule, walk(2, (400, 50), (-100, 0), 0.0, 2.0)) == []  # above a


def test_line_crossing_counts_once_per_cooldown_and_after_a_stop_on_the_line() -> None:
    rule = crossing(cooldown_s=5.0)
    events = run(rule, walk(1, (280, 300), (100, 0), 0.0, 0.5))  # crosses at ~0.2
    events += run(rule, walk(1, (330, 300), (-100, 0), 0.6, 1.2))  # back within cooldown
    assert len(events) == 1
    events = run(rule, walk(1, (250, 300), (100, 0), 6.0, 6.8))  # after cooldown
    assert [e.details["direction"] for _, e in events] == ["b_to_a"]
    rule = crossing()
    steps = list(walk(2, (250, 300), (100, 0), 0.0, 0.5))  # reaches x 300: on the line
    steps += [(0.6 + i / FPS, [track(2, at(300, 300))]) for i in range(10)]  # stands there
    steps += list(walk(2, (310, 300), (100, 0), 1.7, 2.0))  # walks on
    assert [now for now, _ in run(rule, steps)] == [1.7]


# -- loitering -------------------------------------------------------------------------------
def loitering(**kw: Any) -> Loitering:
    return Loitering(LoiteringRule(type="loitering", zone="yard", dwell_s=5.0, **kw), YARD)


def test_loitering_after_dwell_and_end_on_leaving() -> None:
    rule = loitering()
    events = run(rule, walk(4, (52, 300), (50, 0), 0.0, 10.0))  # inside from 1.0 to 6.9
    assert [ev.phase for _, ev in events] == ["start", "end"]
    (t_start, start), (t_end, end) = events
    assert t_start == 6.0 and start.details["dwell_s"] == 5.0
    assert start.key == end.key == "loitering:yard:4"
    assert t_end == pytest.approx(7.9, abs=0.11)  # one EXIT_GRACE_S after it left
    assert end.details["dwell_s"] == 5.9  # what it spent inside
    assert end.duration_s == pytest.approx(0.9)
    check_contract(ev for _, ev in events)


def test_loitering_ends_when_the_track_ends() -> None:
    rule = loitering()
    events = run(rule, walk(4, (200, 300), (0, 0), 0.0, 6.0))
    events += run(rule, [(6.1, []), (9.0, [])])
    assert phases(events) == [(5.0, "start"), (6.1, "end")]
    assert events[1][1].duration_s == pytest.approx(1.0)  # last seen at 6.0


def test_walking_through_is_not_loitering() -> None:
    assert run(loitering(), walk(1, (50, 300), (200, 0), 0.0, 3.0)) == []


def test_jitter_over_the_zone_edge_does_not_reset_the_dwell() -> None:
    rule = loitering()
    steps = []
    for i in range(80):  # standing on the edge: the anchor flickers in and out
        now = i / FPS
        x = 95 if i % 7 == 3 else 105
        steps.append((now, [track(1, at(x, 300))]))
    assert phases(run(rule, steps)) == [(5.0, "start")]
    assert [ev.phase for ev in rule.close(8.0)] == ["end"]


# -- crowding --------------------------------------------------------------------------------
def crowd(now: float, inside: int, outside: int = 0) -> tuple[float, list[Track]]:
    tracks = [track(i + 1, at(120 + 25 * i, 300)) for i in range(inside)]
    tracks += [track(100 + i, at(500 + 20 * i, 300)) for i in range(outside)]
    return now, tracks


def crowding(**kw: Any) -> Crowding:
    return Crowding(CrowdingRule(type="crowding", zone="yard", max_count=2,
                                 min_duration_s=1.0, **kw), YARD)


def test_crowding_start_update_end() -> None:
    rule = crowding()
    counts = [2] * 10 + [3] * 30 + [6] * 30 + [3] * 30 + [2] * 30
    events = run(rule, [crowd(i / FPS, n, outside=4) for i, n in enumerate(counts)])
    got = [(round(now, 1), ev.phase, ev.details["count"]) for now, ev in events]
    assert got == [(2.0, "start", 3), (4.0, "update", 6), (7.0, "update", 3), (11.5, "end", 2)]
    ev = events[0][1]
    assert ev.key == "crowding:yard:person" and len(ev.boxes) == 3
    assert ev.details == {"zone": "yard", "label": "person", "count": 3, "threshold": 2}
    assert events[-1][1].duration_s == pytest.approx(9.5)
    check_contract(e for _, e in events)


def test_crowding_needs_min_duration_and_holds_through_flicker() -> None:
    rule = crowding()
    assert run(rule, [crowd(i / FPS, 3) for i in range(9)]) == []  # 0.8 s: too short
    rule = crowding()
    counts = [3] * 20 + [2, 2, 3] * 10 + [3] * 5  # drops to 2 for 0.2 s at a time
    events = run(rule, [crowd(i / FPS, n) for i, n in enumerate(counts)])
    assert phases(events) == [(1.0, "start")]
    assert [ev.phase for ev in rule.close(7.0)] == ["end"]


def test_crowding_updates_are_rate_limited_and_need_a_notable_change() -> None:
    rule = crowding()
    counts = [8] * 20 + [7, 8] * 30 + [9] * 5 + [12] * 5 + [4] * 30
    events = run(rule, [crowd(i / FPS, n) for i, n in enumerate(counts)])
    got = [(round(now, 1), ev.phase, ev.details["count"]) for now, ev in events]
    assert got == [(1.0, "start", 8), (8.5, "update", 12), (10.5, "update", 4)]


def test_crowding_cooldown_after_an_end() -> None:
    rule = crowding(cooldown_s=10.0)
    counts = [3] * 20 + [0] * 20 + [3] * 50
    events = run(rule, [crowd(i / FPS, n) for i, n in enumerate(counts)])
    assert phases(events) == [(1.0, "start"), (3.5, "end")]
    events = run(rule, [crowd(13.5 + i / FPS, 3) for i in range(5)])
    assert phases(events) == [(13.5, "start")]


# -- fall (shape) ----------------------------------------------------------------------------
def fall(**kw: Any) -> Fall:
    return Fall(FallRule(type="fall", min_duration_s=1.0, **kw))


def upright_then_lying(tid: int, t_fall: float, t_end: float,
                       x: float = 300) -> Iterator[tuple[float, list[Track]]]:
    for i in range(round(t_end * FPS) + 1):
        now = i / FPS
        box = at(x, 400, 40, 100) if now < t_fall else at(x, 400, 110, 45)
        yield now, [track(tid, box)]


def test_shape_fall_fires_once_for_upright_then_lying() -> None:
    events = run(fall(), upright_then_lying(5, t_fall=2.0, t_end=10.0))
    assert [(now, ev.phase) for now, ev in events] == [(3.0, "instant")]
    ev = events[0][1]
    assert ev.severity == "critical" and ev.key == "fall:5"
    assert ev.details["method"] == "shape" and ev.details["track_id"] == 5
    assert ev.details["box"] == [245.0, 355.0, 355.0, 400.0]
    check_contract([ev])


def test_a_person_walking_is_no_fall() -> None:
    rule = fall()
    steps = []
    for i in range(200):  # walking, box width breathing with the stride
        now = i / FPS
        w = 30 + 15 * abs(np.sin(i / 3))
        steps.append((now, [track(1, at(100 + 3 * i, 300, w, 80))]))
    assert run(rule, steps) == []


def test_no_fall_without_having_been_upright_or_when_cut_by_the_frame_edge() -> None:
    lying = [(i / FPS, [track(1, at(300, 400, 110, 45))]) for i in range(50)]
    assert run(fall(), lying) == []  # lying there since the camera started
    rule = fall()
    steps = [(i / FPS, [track(2, at(300, 560, 40, 100))]) for i in range(20)]
    steps += [(2 + i / FPS, [track(2, (200.0, 520.0, 400.0, 576.0))]) for i in range(30)]
    assert run(rule, steps) == []  # walking out of the bottom of the frame


def test_fall_cooldown_per_track() -> None:
    rule = fall(cooldown_s=10.0)
    steps = list(upright_then_lying(5, t_fall=1.0, t_end=3.0))
    steps += [(3.1 + i / FPS, [track(5, at(300, 400, 40, 100))]) for i in range(10)]  # gets up
    steps += [(4.1 + i / FPS, [track(5, at(300, 400, 110, 45))]) for i in range(30)]  # falls
    assert [now for now, _ in run(rule, steps)] == [2.0]
    steps = [(12.0 + i / FPS, [track(5, at(300, 400, 40, 100))]) for i in range(10)]
    steps += [(13.0 + i / FPS, [track(5, at(300, 400, 110, 45))]) for i in range(15)]
    assert [now for now, _ in run(rule, steps)] == [14.0]


# -- fall (model) ----------------------------------------------------------------------------
class FakeFallModel:
    """Stands in for the fall detector: reports a fall on the boxes it is told about."""

    def __init__(self) -> None:
        self.falls: list[Box] = []
        self.calls: list[tuple[float, tuple[int, int, int, int]]] = []
        self.clock = 0.0

    def detect_region(self, image: Image, region: tuple[int, int, int, int], /
                      ) -> list[Detection]:
        self.calls.append((self.clock, region))
        return [Detection("Fall", 1, 0.8, b) for b in self.falls] + [
            Detection("Normal", 0, 0.9, (0.0, 0.0, 50.0, 50.0))]


def test_model_fall_runs_at_most_once_a_second_and_needs_min_duration() -> None:
    model = FakeFallModel()
    rule = Fall(FallRule(type="fall", model=Path("fall.onnx"), min_duration_s=1.0), model,
                InlineWorker())
    person = track(9, at(300, 400, 110, 45))
    events = []
    for i in range(60):
        now = model.clock = i / FPS
        if now >= 2.0:
            model.falls = [(250.0, 350.0, 360.0, 405.0)]
        events += [(now, ev) for ev in rule.update(scene(now, [person]))]
    assert [c[0] for c in model.calls] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    x1, y1, x2, y2 = model.calls[0][1]
    assert x1 <= 245 and y1 <= 355 and x2 >= 355 and y2 >= 400  # around the person
    assert [(now, ev.details["method"], ev.details["score"]) for now, ev in events] == [
        (3.0, "model", 0.8)]
    check_contract(ev for _, ev in events)


def test_model_fall_is_not_run_without_people() -> None:
    model = FakeFallModel()
    rule = Fall(FallRule(type="fall", model=Path("fall.onnx")), model, InlineWorker())
    for i in range(30):
        rule.update(scene(i / FPS, [track(1, at(300, 400), label="car")]))
    assert model.calls == []


class GatedModel(FakeFallModel):
    """A slow model: each run waits until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Semaphore(0)
        self.threads: list[str] = []

    def detect_region(self, image: Image, region: tuple[int, int, int, int], /
                      ) -> list[Detection]:
        self.threads.append(threading.current_thread().name)
        assert self.release.acquire(timeout=10)
        return super().detect_region(image, region)


def test_the_fall_model_runs_off_the_pipeline_thread_and_its_result_still_fires() -> None:
    model = GatedModel()
    rule = Fall(FallRule(type="fall", model=Path("fall.onnx"), min_duration_s=0.0), model)
    person = track(9, at(300, 400, 110, 45))
    model.falls = [(250.0, 350.0, 360.0, 405.0)]
    assert rule.update(scene(0.0, [person])) == []  # returns with the model still running
    for i in range(1, 15):  # 1.4 s of frames while the model is busy: no second run
        assert rule.update(scene(i / FPS, [person])) == []
    deadline = time.monotonic() + 10
    while not model.threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert model.threads == ["fall-model"], "one run, on the worker thread"
    model.release.release()
    events: list[RuleEvent] = []
    deadline = time.monotonic() + 10
    i = 15
    while not events and time.monotonic() < deadline:
        events = rule.update(scene(i / FPS, [person]))
        i += 1
        time.sleep(0.01)
    [ev] = events
    assert ev.type == "fall" and ev.details["method"] == "model" and ev.details["track_id"] == 9
    model.release.release()  # the run started after the result was judged may finish too


class CountingModel:
    def __init__(self, inner: RegionDetector) -> None:
        self.inner = inner
        self.calls = 0

    def detect_region(self, image: Image, region: tuple[int, int, int, int], /
                      ) -> list[Detection]:
        self.calls += 1
        return self.inner.detect_region(image, region)


def test_the_real_fall_model_sees_no_fall_in_people_walking(
        clip: list[Image], yolox_path: Path, fall_model_path: Path) -> None:
    from edge_agent.detect.detector import Detector

    people = Detector.from_config(DetectorConfig(model=yolox_path, classes=["person"]))
    tracker = Tracker(TrackerConfig())
    rule = Fall(FallRule(type="fall", model=fall_model_path), worker=InlineWorker())
    assert rule.detector is not None
    model = rule.detector = CountingModel(rule.detector)
    events: list[RuleEvent] = []
    for i, img in enumerate(clip[:80]):
        now = i / FPS
        events += rule.update(scene(now, tracker.update(people.detect(img), now), img))
    assert events == []
    assert model.calls == 8  # once a second, from the first confirmed track (at 0.1 s)


# -- tamper on vtest.avi -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip(vtest_path: Path) -> list[Image]:
    cap = cv2.VideoCapture(str(vtest_path))
    frames: list[Image] = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(np.asarray(img, np.uint8))
    cap.release()
    assert len(frames) > 700
    return frames


def tamper_run(rule: Tamper, images: Iterable[Image], t0: float) -> list[tuple[float, RuleEvent]]:
    out: list[tuple[float, RuleEvent]] = []
    for i, img in enumerate(images):
        now = round(t0 + i / FPS, 3)
        out += [(now, ev) for ev in rule.update(scene(now, [], img))]
    return out


def blur(img: Image) -> Image:
    """A lens knocked out of focus (or smeared)."""
    return np.asarray(cv2.GaussianBlur(img, (41, 41), 0), np.uint8)


def learnt_tamper(clip: list[Image]) -> Tamper:
    rule = Tamper(TamperRule(type="tamper", learn_s=5.0, min_duration_s=2.0))
    assert tamper_run(rule, clip[:100], 0.0) == []
    assert rule.learnt
    return rule


def test_tamper_is_quiet_on_people_walking(clip: list[Image]) -> None:
    rule = Tamper(TamperRule(type="tamper"))
    assert tamper_run(rule, clip, 0.0) == []
    assert rule.learnt


def test_tamper_is_quiet_when_the_light_dims(clip: list[Image]) -> None:
    rule = learnt_tamper(clip)
    dim = (np.clip(img.astype(np.float32) * 0.35, 0, 255).astype(np.uint8) for img in clip[100:300])
    assert tamper_run(rule, dim, 10.0) == []


def test_blocked_then_cleared(clip: list[Image]) -> None:
    rule = learnt_tamper(clip)
    black = [np.zeros_like(clip[0])] * 40
    events = tamper_run(rule, black, 10.0)
    events += tamper_run(rule, clip[140:200], 14.0)
    assert [(now, ev.phase, ev.details["reason"]) for now, ev in events] == [
        (12.0, "start", "blocked"), (15.0, "end", "blocked")]
    start, end = events[0][1], events[1][1]
    assert start.key == end.key == "tamper" and start.details["score"] == 1.0
    assert end.duration_s == pytest.approx(3.0)
    check_contract(ev for _, ev in events)


def test_a_uniform_cover_is_blocked_however_bright(clip: list[Image]) -> None:
    rule = learnt_tamper(clip)
    grey = [np.full_like(clip[0], 200)] * 30
    events = tamper_run(rule, grey, 10.0)
    assert [(ev.phase, ev.details["reason"]) for _, ev in events] == [("start", "blocked")]


def test_defocused(clip: list[Image]) -> None:
    rule = learnt_tamper(clip)
    blurred = [blur(img) for img in clip[100:140]]
    events = tamper_run(rule, blurred, 10.0)
    assert [(now, ev.phase, ev.details["reason"]) for now, ev in events] == [
        (12.0, "start", "defocused")]
    score = events[0][1].details["score"]
    assert isinstance(score, float) and 0.75 < score <= 1.0
    assert [ev.phase for ev in rule.close(14.0)] == ["end"]


@pytest.mark.parametrize("how", ["rolled", "rotated", "elsewhere"])
def test_moved(clip: list[Image], how: str) -> None:
    rule = learnt_tamper(clip)
    h, w = clip[0].shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), 15, 1.0)
    other = np.ascontiguousarray(np.roll(clip[0], h // 2, axis=0)[:, ::-1])  # another view
    moved: dict[str, list[Image]] = {
        "rolled": [np.roll(img, w // 4, axis=1) for img in clip[100:140]],
        "rotated": [np.asarray(cv2.warpAffine(img, turn, (w, h),
                                              borderMode=cv2.BORDER_REFLECT), np.uint8)
                    for img in clip[100:140]],
        "elsewhere": [other] * 40,
    }
    events = tamper_run(rule, moved[how], 10.0)
    assert [(now, ev.phase, ev.details["reason"]) for now, ev in events] == [
        (12.0, "start", "moved")]


def test_a_reason_change_while_open_is_an_update(clip: list[Image]) -> None:
    rule = learnt_tamper(clip)
    events = tamper_run(rule, [blur(clip[100])] * 30, 10.0)
    events += tamper_run(rule, [np.zeros_like(clip[0])] * 10, 13.0)
    assert [(ev.phase, ev.details["reason"]) for _, ev in events] == [
        ("start", "defocused"), ("update", "blocked")]
