"""Multi-object tracking: gives detections stable ids across frames.

Pure computation on boxes; never touches frames, models or the network."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edge_agent.config import TrackerConfig
from edge_agent.geometry import Box, iou

if TYPE_CHECKING:
    from edge_agent.detect.types import Detection


VELOCITY_WINDOW_S = 1.0
"""Velocity is measured over about this much history: long enough to average out box jitter,
short enough to follow a person who turns."""


@dataclass(slots=True)
class Track:
    track_id: int
    label: str
    class_id: int
    score: float
    box: Box
    first_seen: float
    """Monotonic seconds of the first detection."""
    last_seen: float
    """Monotonic seconds of the latest matched detection."""
    hits: int = 1
    missed: int = 0
    """Detector runs since the last match (0: matched on the latest run)."""
    confirmed: bool = False
    history: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=64))
    """(monotonic time, bottom-centre x, bottom-centre y), newest last."""
    _velocity_of: tuple[float, float, float] | None = field(default=None, repr=False,
                                                            compare=False)
    _velocity: tuple[float, float] = field(default=(0.0, 0.0), repr=False, compare=False)
    """The velocity over VELOCITY_WINDOW_S as of the history point `_velocity_of`: rules,
    prediction and redaction all ask for it on every frame, the history changes only when
    the detector matched the track."""

    @property
    def anchor(self) -> tuple[float, float]:
        """Bottom-centre of the box: where the object stands on the ground."""
        x1, _, x2, y2 = self.box
        return ((x1 + x2) / 2.0, y2)

    def swept(self, now: float) -> Box:
        """Where the track was last matched joined with where its velocity has taken it
        since: on frames the detector skipped, the object has moved on from its box."""
        vx, vy = self.velocity()
        dt = max(0.0, now - self.last_seen)
        x1, y1, x2, y2 = self.box
        dx, dy = vx * dt, vy * dt
        return (min(x1, x1 + dx), min(y1, y1 + dy), max(x2, x2 + dx), max(y2, y2 + dy))

    def velocity(self, window_s: float = VELOCITY_WINDOW_S) -> tuple[float, float]:
        """Anchor pixels per second over the recent history; (0, 0) until there are two points.

        Measured across the window rather than between the last two points, because
        consecutive detections of a walking person jitter by several pixels."""
        if len(self.history) < 2:
            return (0.0, 0.0)
        newest = self.history[-1]
        if window_s == VELOCITY_WINDOW_S and self._velocity_of is newest:
            return self._velocity
        v = self._measure(window_s)
        if window_s == VELOCITY_WINDOW_S:
            self._velocity_of, self._velocity = newest, v
        return v

    def _measure(self, window_s: float) -> tuple[float, float]:
        points = list(self.history)
        t1, x1, y1 = points[-1]
        t0, x0, y0 = points[-2]
        for t, x, y in reversed(points[:-2]):
            if t1 - t > window_s:
                break
            t0, x0, y0 = t, x, y
        dt = t1 - t0
        if dt <= 0:
            return (0.0, 0.0)
        return ((x1 - x0) / dt, (y1 - y0) / dt)


LAST_BOX_WEIGHT = 0.9
"""The unpredicted box also counts, a little less than the prediction (which wins ties, as
when two people cross): someone who stops or turns, or whose box jittered into a wrong
velocity, is still where they were last seen: fewer ids for the same people
(docs/performance.md)."""

NEAR_THRESHOLD = 0.5
"""Nearness (see `_nearness`) a track without velocity needs to take a box it does not
overlap enough: at a low detector rate its next box may not overlap the last at all
(docs/performance.md)."""


def _nearness(a: list[Box], b: list[Box]) -> npt.NDArray[np.float64]:
    """1 for the same centre, falling to 0 at a centre distance of one box height of `a`;
    0 when the areas differ by more than a factor of two (another object, not a move)."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    aa = np.asarray(a, dtype=np.float64)[:, None, :]
    bb = np.asarray(b, dtype=np.float64)[None, :, :]
    dx = (aa[..., 0] + aa[..., 2] - bb[..., 0] - bb[..., 2]) / 2
    dy = (aa[..., 1] + aa[..., 3] - bb[..., 1] - bb[..., 3]) / 2
    size = np.maximum(aa[..., 3] - aa[..., 1], 1e-9)
    area_a = (aa[..., 2] - aa[..., 0]) * (aa[..., 3] - aa[..., 1])
    area_b = (bb[..., 2] - bb[..., 0]) * (bb[..., 3] - bb[..., 1])
    ratio = np.minimum(area_a, area_b) / np.maximum(np.maximum(area_a, area_b), 1e-9)
    near: npt.NDArray[np.float64] = np.where(
        ratio >= 0.5, np.clip(1.0 - np.hypot(dx, dy) / size, 0.0, 1.0), 0.0)
    return near


def _greedy(score: npt.NDArray[np.float64], threshold: float) -> list[tuple[int, int]]:
    """(row, column) pairs, best score first, each row and column used once."""
    pairs: list[tuple[int, int]] = []
    if not score.size:
        return pairs
    rows: set[int] = set()
    cols: set[int] = set()
    for flat in np.argsort(-score, axis=None, kind="stable"):
        r, c = divmod(int(flat), score.shape[1])
        if score[r, c] < threshold:
            break
        if r not in rows and c not in cols:
            rows.add(r)
            cols.add(c)
            pairs.append((r, c))
    return pairs


def _shift(box: Box, dx: float, dy: float) -> Box:
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


class Tracker:
    """IoU tracker with constant-velocity prediction, greedy by best overlap.

    A track matches a detection of its own label by the better of two overlaps: with the
    box moved by the track's velocity, or (weighted LAST_BOX_WEIGHT) with the box where it
    was; a track seen only once may also take a near box of similar size. Tentative tracks
    die at their first miss; confirmed ones live max_age_s past their last match.

    Greedy matching is enough here: with prediction, the ambiguous case (two boxes over the
    same detection) is rare, and the few objects per frame make an optimal assignment not
    worth a dependency. Ids are given on confirmation, so a one-frame false positive does
    not use up an id: confirmed ids count 1, 2, 3... as users see them in events."""

    def __init__(self, cfg: TrackerConfig) -> None:
        self.cfg = cfg
        self._tracks: list[Track] = []
        self._next_id = 1

    @property
    def tracks(self) -> list[Track]:
        """Every live track, tentative ones (track_id 0) included."""
        return list(self._tracks)

    def update(self, detections: list[Detection], now: float) -> list[Track]:
        """Match one detector run; returns confirmed tracks, matched or still within max_age."""
        tracks = self._tracks
        same = np.array([[t.label == d.label for d in detections] for t in tracks], dtype=bool)
        same = same.reshape(len(tracks), len(detections))
        boxes = [d.box for d in detections]
        overlap = np.maximum(iou([self._predict(t, now) for t in tracks], boxes),
                             LAST_BOX_WEIGHT * iou([t.box for t in tracks], boxes))
        pairs = _greedy(np.where(same, overlap, 0.0), self.cfg.iou_threshold)
        # A track seen once has no velocity yet; at a low detector rate its next box may
        # not overlap the last at all, so it may also take a near, similar-sized box.
        free = same & np.array([len(t.history) < 2 for t in tracks], dtype=bool)[:, None]
        for ti, di in pairs:
            free[ti, :] = False
            free[:, di] = False
        near = _nearness([t.box for t in tracks], boxes)
        pairs += _greedy(np.where(free, near, 0.0), NEAR_THRESHOLD)
        for ti, di in pairs:
            self._match(tracks[ti], detections[di], now)
        matched_t = {ti for ti, _ in pairs}
        matched_d = {di for _, di in pairs}
        kept: list[Track] = []
        for i, t in enumerate(tracks):
            if i not in matched_t:
                t.missed += 1
                if not t.confirmed or now - t.last_seen > self.cfg.max_age_s:
                    continue  # a tentative track gets no grace: false positives rarely repeat
            kept.append(t)
        for i, d in enumerate(detections):
            if i not in matched_d:
                kept.append(self._new(d, now))
        self._tracks = kept
        return [t for t in kept if t.confirmed]

    def coast(self, now: float) -> list[Track]:
        """A frame the detector skipped: nothing is known to have moved or gone, so tracks
        keep their boxes and only age out."""
        self._tracks = [t for t in self._tracks
                        if now - t.last_seen <= self.cfg.max_age_s]
        return [t for t in self._tracks if t.confirmed]

    def _predict(self, t: Track, now: float) -> Box:
        vx, vy = t.velocity()
        dt = min(now - t.last_seen, self.cfg.max_age_s)
        return _shift(t.box, vx * dt, vy * dt)

    def _match(self, t: Track, d: Detection, now: float) -> None:
        t.box = d.box
        t.score = d.score
        t.class_id = d.class_id
        t.last_seen = now
        t.hits += 1
        t.missed = 0
        ax, ay = t.anchor
        t.history.append((now, ax, ay))
        if not t.confirmed and t.hits >= self.cfg.min_hits:
            self._confirm(t)

    def _new(self, d: Detection, now: float) -> Track:
        t = Track(track_id=0, label=d.label, class_id=d.class_id, score=d.score, box=d.box,
                  first_seen=now, last_seen=now)
        ax, ay = t.anchor
        t.history.append((now, ax, ay))
        if self.cfg.min_hits <= 1:
            self._confirm(t)
        return t

    def _confirm(self, t: Track) -> None:
        t.confirmed = True
        t.track_id = self._next_id
        self._next_id += 1
