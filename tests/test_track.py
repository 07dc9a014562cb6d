"""Tracker behaviour: stable ids through crossings and short misses, confirmation, coasting."""

from __future__ import annotations

from edge_agent.config import TrackerConfig
from edge_agent.detect.types import Detection
from edge_agent.geometry import Box
from edge_agent.track import Track, Tracker

FPS = 10.0


def person(box: Box, score: float = 0.9, label: str = "person") -> Detection:
    return Detection(label, 0 if label == "person" else 2, score, box)


def at(x: float, y: float, w: float = 30.0, h: float = 80.0) -> Box:
    """A box whose bottom-centre (anchor) is at (x, y)."""
    return (x - w / 2, y - h, x + w / 2, y)


def ids_by_anchor_x(tracks: list[Track]) -> list[int]:
    return [t.track_id for t in sorted(tracks, key=lambda t: t.anchor[0])]


def test_ids_start_at_one_and_need_min_hits() -> None:
    tr = Tracker(TrackerConfig(min_hits=3))
    assert tr.update([person(at(100, 300))], 0.0) == []
    assert tr.update([person(at(102, 300))], 0.1) == []
    [t] = tr.update([person(at(104, 300))], 0.2)
    assert (t.track_id, t.hits, t.confirmed) == (1, 3, True)
    assert [p[1] for p in t.history] == [100, 102, 104]  # one anchor per match
    assert t.history[-1] == (0.2, 104, 300)


def test_a_one_frame_false_positive_uses_no_id() -> None:
    tr = Tracker(TrackerConfig(min_hits=2))
    tr.update([person(at(500, 300))], 0.0)  # a blip, never seen again
    tr.update([person(at(100, 300))], 0.1)
    [t] = tr.update([person(at(102, 300))], 0.2)
    assert t.track_id == 1


def test_two_people_crossing_keep_their_ids() -> None:
    """Walking towards each other along nearly the same line, boxes overlapping fully at
    the crossing: the velocity prediction tells them apart."""
    tr = Tracker(TrackerConfig(min_hits=2))
    first: dict[str, int] = {}
    for i in range(40):
        now = i / FPS
        left = at(100 + 10 * i, 300 + 0.5 * i)  # walking right
        right = at(500 - 10 * i, 305 - 0.5 * i)  # walking left
        tracks = tr.update([person(left), person(right)], now)
        if i == 1:
            a, b = ids_by_anchor_x(tracks)
            first = {"rightwards": a, "leftwards": b}
    final = ids_by_anchor_x(tracks)  # by now they have swapped sides
    assert final == [first["leftwards"], first["rightwards"]]
    assert {t.track_id for t in tracks} == {1, 2}


def test_crossing_at_a_low_detector_rate() -> None:
    """Two runs a second (a Pi with motion gating): boxes move half their width per run."""
    tr = Tracker(TrackerConfig(min_hits=2))
    for i in range(16):
        now = i * 0.5
        tracks = tr.update([person(at(100 + 25 * i, 300)), person(at(500 - 25 * i, 310))], now)
        if i == 1:
            start = ids_by_anchor_x(tracks)
    assert ids_by_anchor_x(tracks) == start[::-1]


def test_a_short_miss_keeps_the_id_a_long_one_does_not() -> None:
    tr = Tracker(TrackerConfig(max_age_s=1.0, min_hits=2))
    for i in range(5):
        tracks = tr.update([person(at(100 + 5 * i, 300))], i / FPS)
    tid = tracks[0].track_id
    assert tr.update([], 0.5)[0].missed == 1  # still reported while coasting
    for i in range(6, 10):  # 0.6 s gap: within max_age
        tracks = tr.update([person(at(100 + 5 * i, 300))], i / FPS)
    assert [t.track_id for t in tracks] == [tid]
    assert tracks[0].missed == 0
    tracks = tr.update([], 2.5)  # 1.6 s after the last match: gone
    assert tracks == []
    tr.update([person(at(145, 300))], 2.6)
    [t] = tr.update([person(at(150, 300))], 2.7)
    assert t.track_id == tid + 1


def test_a_new_object_gets_a_new_id_and_labels_never_mix() -> None:
    tr = Tracker(TrackerConfig(min_hits=1))
    [a] = tr.update([person(at(100, 300))], 0.0)
    got = tr.update([person(at(100, 300)), person(at(400, 300))], 0.1)
    assert sorted(t.track_id for t in got) == [1, 2]
    # a car where the person stood: not the person's track
    got = tr.update([person(at(100, 300), label="car")], 0.2)
    car = [t for t in got if t.label == "car"]
    assert len(car) == 1 and car[0].track_id == 3


def test_coast_keeps_boxes_and_expires_only_by_age() -> None:
    tr = Tracker(TrackerConfig(max_age_s=2.0, min_hits=1))
    tr.update([person(at(100, 300))], 0.0)
    [t] = tr.update([person(at(110, 300))], 0.1)
    box, hits = t.box, t.hits
    for now in (0.5, 1.0, 2.0):
        [t] = tr.coast(now)
        assert (t.box, t.hits, t.missed) == (box, hits, 0)
    assert tr.coast(2.2) == []


def test_a_still_person_survives_motion_gating_refresh() -> None:
    """Gating skips detection while nothing moves and re-runs it every refresh_s (2 s):
    with max_age_s 2 s the still person keeps one id all along."""
    tr = Tracker(TrackerConfig(max_age_s=2.0, min_hits=2))
    tr.update([person(at(100, 300))], 0.0)
    tr.update([person(at(100, 300))], 0.1)
    for k in range(1, 10):
        for j in range(1, 20):
            assert [t.track_id for t in tr.coast(0.1 + 2.0 * (k - 1) + j / FPS)] == [1]
        assert [t.track_id for t in tr.update([person(at(100, 300))], 0.1 + 2.0 * k)] == [1]


def test_velocity_follows_the_history() -> None:
    tr = Tracker(TrackerConfig(min_hits=1))
    for i in range(10):
        [t] = tr.update([person(at(100 + 20 * i, 300 - 5 * i))], i / FPS)
    vx, vy = t.velocity()
    assert abs(vx - 200) < 1e-6 and abs(vy + 50) < 1e-6
