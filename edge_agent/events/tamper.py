"""Camera tamper: the view blocked, defocused or moved, against a baseline learnt at start.

Judges the picture, never the tracks; never publishes, numbers or serialises events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.capture.frame import Image
from edge_agent.config import TamperRule
from edge_agent.events.base import Phase, RuleEvent, Scene

Reason = Literal["blocked", "defocused", "moved"]
Floats = npt.NDArray[np.float32]

CHECK_EVERY_S = 0.5
"""Tampering lasts seconds: a few checks per second are plenty and keep the cost negligible."""
WORK_WIDTH = 320
"""Brightness and sharpness are measured on a frame about this wide (integer downscale)."""
THUMB_WIDTH = 32
"""The view is compared as a thumbnail this wide: coarse enough that people walking through
the scene barely change it, fine enough that a turned camera changes it completely."""
UNIFORM_STD = 6.0
"""Gray-level standard deviation below which the picture is one flat colour: a cover or a
hand over the lens, however bright."""
CLEAR_HOLD_S = 1.0
"""Conditions must stay clear this long before an open tamper event ends."""
ADAPT_TAU_S = 600.0
"""While nothing is wrong the baseline follows slow changes (daylight) with this time
constant; a sudden change is faster than that and still counts."""


@dataclass(slots=True)
class Measure:
    mean: float
    std: float
    sharpness: float
    """Variance of the Laplacian divided by the variance of the image: dimming the scene
    scales both, so only a loss of detail (defocus) lowers it."""
    edges: Floats
    """Gradient magnitude of the thumbnail, compared by normalised cross-correlation: unlike
    raw brightness it ignores lighting and changes completely when the view moves."""


def measure(image: Image) -> Measure:
    """Cheap picture statistics: one integer-ratio downscale, then work on small images."""
    h, w = image.shape[:2]
    k = max(1, round(w / WORK_WIDTH))
    crop = image[: h - h % k, : w - w % k]  # exact integer ratio: OpenCV's fast area path
    small = cv2.resize(crop, (crop.shape[1] // k, crop.shape[0] // k),
                       interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    mean, std = cv2.meanStdDev(gray)
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    var = float(std[0, 0]) ** 2
    sharpness = float(lap.var()) / var if var > 1e-6 else 0.0
    th = max(8, round(THUMB_WIDTH * gray.shape[0] / gray.shape[1]))
    thumb = cv2.resize(gray, (THUMB_WIDTH, th), interpolation=cv2.INTER_AREA).astype(np.float32)
    gx = cv2.Sobel(thumb, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(thumb, cv2.CV_32F, 0, 1)
    edges = np.asarray(cv2.magnitude(gx, gy), np.float32)
    return Measure(float(mean[0, 0]), float(std[0, 0]), sharpness, edges)


def similarity(a: Floats, b: Floats) -> float:
    """Normalised cross-correlation clipped to 0..1 (1: the same view)."""
    if a.shape != b.shape:
        return 0.0
    da, db = a - a.mean(), b - b.mean()
    den = float(np.sqrt(float((da * da).sum()) * float((db * db).sum())))
    return max(0.0, min(1.0, float((da * db).sum()) / den)) if den > 1e-9 else 0.0


@dataclass(slots=True)
class _Baseline:
    std: float
    sharpness: float
    edges: Floats
    samples: int = 1


@dataclass(slots=True)
class _Open:
    started: float
    reason: Reason
    score: float


class Tamper:
    """Blocked: mean brightness below blocked_brightness, or a nearly uniform picture.
    Defocused: sharpness below defocus_ratio of the baseline. Moved: the edge thumbnail's
    similarity to the baseline below moved_ratio. Checked in that order, so a black frame is
    reported as blocked rather than as also defocused and moved.

    The baseline is learnt over learn_s of unblocked frames; blocked needs no baseline, so a
    camera started with a covered lens still reports it. A condition held for min_duration_s
    starts the event; a change of reason while open is an update; CLEAR_HOLD_S without any
    condition ends it. Score: 0..1, how much of the baseline's picture is lost."""

    KEY = "tamper"

    def __init__(self, cfg: TamperRule) -> None:
        self.cfg = cfg
        self._base: _Baseline | None = None
        self._learn_started: float | None = None
        self._learnt = False
        self._next_check = float("-inf")
        self._last_check: float | None = None
        self._pending: float | None = None
        self._clear_since: float | None = None
        self._open: _Open | None = None

    @property
    def learnt(self) -> bool:
        return self._learnt

    def update(self, scene: Scene) -> list[RuleEvent]:
        now = scene.now
        if now < self._next_check:
            return []
        self._next_check = now + CHECK_EVERY_S
        m = measure(scene.frame.image)
        found = self._judge(m)
        dt = now - self._last_check if self._last_check is not None else 0.0
        self._last_check = now
        if found is None and self._open is None:
            self._learn(m, now, dt)
        return self._advance(found, now)

    def close(self, now: float) -> list[RuleEvent]:
        return self._end(now) if self._open is not None else []

    def _judge(self, m: Measure) -> tuple[Reason, float] | None:
        base = self._base
        if m.mean < self.cfg.blocked_brightness or m.std < UNIFORM_STD:
            lost = 1.0 - min(m.mean / max(self.cfg.blocked_brightness, 1e-6),
                             m.std / (base.std if base else UNIFORM_STD), 1.0)
            return "blocked", round(max(lost, 0.0), 3)
        if base is None or not self._learnt:
            return None
        if base.sharpness > 0 and m.sharpness < self.cfg.defocus_ratio * base.sharpness:
            return "defocused", round(1.0 - m.sharpness / base.sharpness, 3)
        sim = similarity(m.edges, base.edges)
        if sim < self.cfg.moved_ratio:
            return "moved", round(1.0 - sim, 3)
        return None

    def _learn(self, m: Measure, now: float, dt: float) -> None:
        base = self._base
        if base is None or base.edges.shape != m.edges.shape:
            self._base = _Baseline(m.std, m.sharpness, m.edges.copy())
            self._learn_started, self._learnt = now, False
            return
        if self._learnt:
            a = 1.0 - float(np.exp(-dt / ADAPT_TAU_S))
        else:
            base.samples += 1
            a = 1.0 / base.samples  # a plain mean while learning
        base.std += a * (m.std - base.std)
        base.sharpness += a * (m.sharpness - base.sharpness)
        base.edges += a * (m.edges - base.edges)
        assert self._learn_started is not None
        if not self._learnt and now - self._learn_started >= self.cfg.learn_s:
            self._learnt = True

    def _advance(self, found: tuple[Reason, float] | None, now: float) -> list[RuleEvent]:
        if self._open is None:
            if found is None:
                self._pending = None
                return []
            self._pending = now if self._pending is None else self._pending
            if now - self._pending < self.cfg.min_duration_s:
                return []
            self._open = _Open(now, found[0], found[1])
            self._clear_since = None
            return [self._event("start", self._open, None)]
        if found is None:
            self._clear_since = now if self._clear_since is None else self._clear_since
            return self._end(now) if now - self._clear_since >= CLEAR_HOLD_S else []
        self._clear_since = None
        reason, score = found
        changed = reason != self._open.reason
        self._open.reason, self._open.score = reason, score
        return [self._event("update", self._open, None)] if changed else []

    def _end(self, now: float) -> list[RuleEvent]:
        assert self._open is not None
        ev, self._open, self._pending = self._open, None, None
        return [self._event("end", ev, round(now - ev.started, 3))]

    def _event(self, phase: Phase, ev: _Open, duration: float | None) -> RuleEvent:
        details: dict[str, object] = {"reason": ev.reason, "score": ev.score}
        return RuleEvent("tamper", phase, self.cfg.severity, self.KEY, details, duration)
