"""Region planning: where on a frame the detector looks, from motion boxes and tracked objects.

Pure geometry on boxes; never touches pixels, runs the detector or changes a track."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.config import RegionsConfig
from edge_agent.detect.letterbox import crop_input
from edge_agent.geometry import Box, Region
from edge_agent.track import Track

STILL_SPEED = 0.1
"""Box heights per second below which a track counts as still. Still objects (parked cars,
a person waiting) keep their tracks through the whole-frame refresh; crops for them would
spread the regions over the frame for nothing."""

NO_GAIN = 0.8
"""A crop whose side is at least this share of the frame's sees people barely bigger than
the whole frame does, and costs the same inference: the whole frame is then used instead,
with no crop edge to cut anyone. With a dynamic model such crops would be kept if they cost
at most this share of the frame's own cost as a crop (a saving of a fifth is worth an
edge); crops that big never do in practice, since they run at (nearly) the frame's input.
The frame's own cost, not the whole-frame run's at the nominal size: a crop the size of a
4:3 frame runs at 416x320, cheaper than 416x416, only because it drops the padding."""


MAX_BOXES = 24
"""Motion and track boxes a frame's plan merges at most (merge_crops is O(n^3)); more than
that many separate things moving is a scene for the whole frame anyway."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What the detector is asked to do for one frame."""

    regions: list[Region] | None
    """None: the whole frame."""
    reason: str
    """Why: "regions", "first", "refresh", "nothing_moves", "too_many", "no_gain" or
    "costlier" (for telemetry and benchmarks)."""


class RegionPlanner:
    """Places at most `max_regions` crops with the model input's aspect around every motion
    box and every moving track (where it was and where its velocity takes it), each grown by
    `margin` and at least `min_size` wide.

    With a fixed-size model a crop costs one inference, like the whole frame, so regions
    are never more expensive than the whole frame when max_regions is 1: their gain is
    resolution (a person 60 px tall in a 768 px frame is 33 px in a 416 px model input, and
    60-100 px in a crop). With a `dynamic` model (input height/width symbolic, see
    `edge-agent models dynamic`) a crop runs at its own input size (`letterbox.crop_input`)
    and costs about (its input side / the nominal side)^2 of one: regions then gain CPU
    too, and the planner weighs that cost (`cost`): overlapping crops merge only when the
    merged crop costs no more than the two, the pair to merge when there are too many is the
    one that adds the least cost, a crop nearly as big as the frame is no gain unless
    the crops cost at most NO_GAIN of the frame as a crop, and crops that cost more than the
    whole frame ("costlier") give way to it: regions are used when they are cheaper. For a
    fixed model every rule is as described first.
    The whole frame is used on the first frame, every `full_frame_s`, when nothing moves and
    nothing is tracked, and when the crops would not be smaller than the frame."""

    def __init__(self, cfg: RegionsConfig, input_size: tuple[int, int],
                 dynamic: bool = False) -> None:
        self.cfg = cfg
        self.aspect = input_size[0] / input_size[1]
        self.nominal = input_size
        self.dynamic = dynamic
        self._last_full: float | None = None

    def plan(self, now: float, width: int, height: int, motion: list[Box],
             tracks: list[Track]) -> Plan:
        if not self.cfg.enabled:
            return Plan(None, "disabled")
        if self._last_full is None:
            return self._full(now, "first")
        if now - self._last_full >= self.cfg.full_frame_s:
            return self._full(now, "refresh")
        boxes = [*motion, *(t.swept(now) for t in tracks if _moving(t, motion))]
        if not boxes:
            return self._full(now, "nothing_moves")
        if len(boxes) > MAX_BOXES:  # merging is cubic in the boxes: bound the frame's work
            return self._full(now, "too_many")
        crops = merge_crops([self._crop(_grow(b, self.cfg.margin), width, height)
                             for b in boxes], self.cfg.max_regions,
                            lambda b: self._crop(b, width, height),
                            self.cost if self.dynamic else None)
        if len(crops) > self.cfg.max_regions:
            return self._full(now, "too_many")
        frame_cost = self.cost((0, 0, width, height))
        if (any(c[2] - c[0] >= NO_GAIN * width or c[3] - c[1] >= NO_GAIN * height
                for c in crops)
                and sum(map(self.cost, crops)) > NO_GAIN * frame_cost):
            return self._full(now, "no_gain")
        if self.dynamic and sum(map(self.cost, crops)) > frame_cost:
            # a 448 px crop runs at 416x416, dearer than the 768x576 frame's 416x320
            return self._full(now, "costlier")
        return Plan([_whole_pixels(c) for c in crops], "regions")

    def cost(self, crop: Box) -> float:
        """One crop's inference in whole-frame inferences: 1 with a fixed-size model; with a
        dynamic one the area of its input over the nominal input's."""
        if not self.dynamic:
            return 1.0
        w, h = crop_input(crop[2] - crop[0], crop[3] - crop[1], self.nominal)
        return w * h / (self.nominal[0] * self.nominal[1])

    def _full(self, now: float, reason: str) -> Plan:
        self._last_full = now
        return Plan(None, reason)

    def _crop(self, box: Box, width: int, height: int) -> Box:
        """The smallest crop with the model's aspect that holds `box` and is at least
        min_size wide, moved (not cut) to lie inside the frame where it fits."""
        x1, y1, x2, y2 = box
        w = max(x2 - x1, (y2 - y1) * self.aspect, float(self.cfg.min_size))
        h = w / self.aspect
        w, h = min(w, float(width)), min(h, float(height))
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        left = min(max(cx - w / 2, 0.0), width - w)
        top = min(max(cy - h / 2, 0.0), height - h)
        return (left, top, left + w, top + h)


def merge_crops(crops: list[Box], limit: int, refit: Callable[[Box], Box],
                cost: Callable[[Box], float] | None = None) -> list[Box]:
    """Overlapping crops merge (one inference instead of two over the same pixels); then the
    pair whose merged crop is smallest merges, until at most `limit` remain.

    With a `cost` per crop (a dynamic model, where a crop's inference grows with its size),
    overlapping crops merge only when the merged crop costs no more than the two apart, and
    the pair merged to meet `limit` is the one that adds the least cost (then the smallest).
    Without one every crop costs the same, so overlapping crops always merge."""
    crops = list(crops)

    def added(i: int, j: int) -> float:
        if cost is None:
            return -1.0  # two inferences become one
        return cost(refit(_union(crops[i], crops[j]))) - cost(crops[i]) - cost(crops[j])

    while len(crops) > 1:
        pairs = [(i, j) for i in range(len(crops)) for j in range(i + 1, len(crops))]
        overlapping = [(i, j) for i, j in pairs if _intersects(crops[i], crops[j])
                       and added(i, j) <= 1e-9]
        candidates = overlapping or (pairs if len(crops) > limit else [])
        if not candidates:
            break
        i, j = min(candidates, key=lambda p: (
            added(*p), _area(refit(_union(crops[p[0]], crops[p[1]])))))
        merged = refit(_union(crops[i], crops[j]))
        crops = [c for k, c in enumerate(crops) if k not in (i, j)] + [merged]
    return crops


def _moving(t: Track, motion: list[Box]) -> bool:
    """Moves on its own, or something moves where it is (it may be about to)."""
    if any(_intersects(t.box, m) for m in motion):
        return True
    vx, vy = t.velocity()
    return math.hypot(vx, vy) >= STILL_SPEED * max(t.box[3] - t.box[1], 1.0)


def _grow(b: Box, margin: float) -> Box:
    mx, my = (b[2] - b[0]) * margin, (b[3] - b[1]) * margin
    return (b[0] - mx, b[1] - my, b[2] + mx, b[3] + my)


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _intersects(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _whole_pixels(b: Box) -> Region:
    """Outward to whole pixels, so rounding never trims the margin."""
    return (int(b[0]), int(b[1]), int(-(-b[2] // 1)), int(-(-b[3] // 1)))
