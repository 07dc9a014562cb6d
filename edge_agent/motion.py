"""Cheap motion gating: decides whether the detector needs to run on a frame.

Works on one small grayscale copy per frame; never runs the detector or keeps full frames."""

from __future__ import annotations

import math

import cv2
import numpy as np

from edge_agent.capture.frame import Frame, Image
from edge_agent.config import MotionConfig
from edge_agent.geometry import Box

BACKGROUND_TAU_S = 1.0
"""The background forgets a change after about this long, whatever the frame rate: a person
who stops stops counting as motion within a few seconds (the refresh re-checks them)."""

BLUR = (5, 5)
"""Smooths sensor noise and the aliasing of the cheap linear downscale."""


MAX_BOXES = 16
"""Separate motion boxes kept per frame; beyond it they become one (see `_boxes`)."""


class MotionGate:
    """Running-average background subtraction on a downscaled gray frame."""

    def __init__(self, cfg: MotionConfig, tau_s: float = BACKGROUND_TAU_S) -> None:
        self.cfg = cfg
        self.tau_s = tau_s
        self.fraction = 0.0
        """Share of the (downscaled) frame that changed on the latest call, for telemetry."""
        self._size: tuple[int, int] | None = None
        self._small: Image = np.empty((0, 0, 3), np.uint8)
        self._gray: Image = np.empty((0, 0), np.uint8)
        self._blurred: Image = np.empty((0, 0), np.uint8)
        self._bg = np.empty((0, 0), np.float32)
        self._bg8: Image = np.empty((0, 0), np.uint8)
        self._diff: Image = np.empty((0, 0), np.uint8)
        self._mask: Image = np.empty((0, 0), np.uint8)
        self._kernel = np.ones((3, 3), np.uint8)
        self._last_run: float | None = None
        self._last_t: float | None = None

    @property
    def gray(self) -> Image | None:
        """The latest downscaled gray frame (before blur); None before the first frame.
        A buffer reused on the next call: copy it to keep it."""
        return self._gray if self._size is not None else None

    def should_detect(self, frame: Frame) -> tuple[bool, list[Box]]:
        """(run the detector?, motion boxes in full-frame pixels)."""
        if not self.cfg.enabled:
            return True, []
        now = frame.monotonic
        first = self._prepare(frame.image)
        cv2.resize(frame.image, self._size, dst=self._small, interpolation=cv2.INTER_LINEAR)
        cv2.cvtColor(self._small, cv2.COLOR_BGR2GRAY, dst=self._gray)
        cv2.GaussianBlur(self._gray, BLUR, 0, dst=self._blurred)
        if first or self._last_t is None:
            self._bg[:] = self._blurred
            self._last_t = now
            self._last_run = now
            self.fraction = 0.0
            return True, []
        cv2.convertScaleAbs(self._bg, dst=self._bg8)
        cv2.absdiff(self._blurred, self._bg8, dst=self._diff)
        cv2.threshold(self._diff, self.cfg.threshold, 255, cv2.THRESH_BINARY, dst=self._mask)
        changed = cv2.countNonZero(self._mask)
        self.fraction = changed / self._mask.size
        dt = max(now - self._last_t, 0.0)
        self._last_t = now
        alpha = 1.0 - math.exp(-dt / self.tau_s) if dt > 0 else 0.0
        cv2.accumulateWeighted(self._blurred, self._bg, alpha)
        boxes = self._boxes(frame.width) if changed else []
        assert self._last_run is not None
        run = (changed > 0 and self.fraction >= self.cfg.min_area) \
            or now - self._last_run >= self.cfg.refresh_s
        if run:
            self._last_run = now
        return run, boxes

    def _prepare(self, image: Image) -> bool:
        """(Re)allocate the buffers when the frame size changes; True when it did."""
        h, w = image.shape[:2]
        sw = min(self.cfg.width, w)
        size = (sw, max(1, round(h * sw / w)))
        if size == self._size:
            return False
        self._size = size
        shape = (size[1], size[0])
        self._small = np.empty((*shape, 3), np.uint8)
        self._gray = np.empty(shape, np.uint8)
        self._blurred = np.empty(shape, np.uint8)
        self._bg = np.empty(shape, np.float32)
        self._bg8 = np.empty(shape, np.uint8)
        self._diff = np.empty(shape, np.uint8)
        self._mask = np.empty(shape, np.uint8)
        self._last_t = None
        return True

    def _boxes(self, full_width: int) -> list[Box]:
        """At most MAX_BOXES boxes: motion in more places than that (rain, snow, leaves in
        wind, a flickering light) is reported as one box around all of it, so the region
        planner looks at the whole area instead of hundreds of specks."""
        cv2.dilate(self._mask, self._kernel, dst=self._mask, iterations=2)
        contours, _ = cv2.findContours(self._mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        scale = full_width / self._mask.shape[1]
        if len(contours) > MAX_BOXES:
            x, y, w, h = cv2.boundingRect(np.concatenate(contours))
            return [(x * scale, y * scale, (x + w) * scale, (y + h) * scale)]
        boxes: list[Box] = []
        for c in contours:
            x, y, w, h = cv2.boundingRect(c)
            boxes.append((x * scale, y * scale, (x + w) * scale, (y + h) * scale))
        return boxes
