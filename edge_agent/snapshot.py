"""Event snapshots: a redacted, annotated JPEG of the frame that caused an event.

Works on its own copy; never modifies the shared frame, never lets an unblurred person out."""

from __future__ import annotations

import cv2
import numpy as np

from edge_agent.capture.frame import Frame, Image
from edge_agent.config import SnapshotConfig
from edge_agent.geometry import Box
from edge_agent.track import Track

PERSON = "person"
REDACT_MARGIN = 0.1
"""Detector boxes are tight; the blur reaches this share of the box beyond each side."""
REDACT_CELLS = 4
"""A redacted person is reduced to at most this many cells along its longer side before it
is smoothed back up: nothing of a face survives, but the shape and colours still show an
operator that a person is there."""
BOX_COLOUR = (0, 0, 255)
MIN_QUALITY = 30
QUALITY_STEP = 10
SHRINK = 0.75
MIN_WIDTH = 160
"""Below this width a snapshot shows an operator nothing useful: give up instead."""


def render_snapshot(frame: Frame, boxes: list[Box], tracks: list[Track],
                    cfg: SnapshotConfig, base: Image | None = None) -> bytes:
    """JPEG of the frame with people blurred, privacy zones blacked out and `boxes` drawn,
    within cfg.max_bytes; ValueError when even the smallest, lowest-quality one is larger.

    `base`: `redacted(frame, tracks, cfg)` made once for all the events of one frame (a
    burst of events, as when a node starts with people in a zone, would otherwise redact
    the same frame once per event and hold back the later events' messages)."""
    img = (base if base is not None else redacted(frame, tracks, cfg)).copy()
    thickness = max(2, round(img.shape[1] / 320))
    for box in boxes:
        draw_box(img, box, thickness)
    if img.shape[1] > cfg.max_width:
        img = _scaled(img, cfg.max_width)
    return encode_within(img, cfg.jpeg_quality, cfg.max_bytes)


def redacted(frame: Frame, tracks: list[Track], cfg: SnapshotConfig) -> Image:
    """A copy of the frame with the people of `tracks` blurred and privacy zones blacked
    out. The node itself blurs what it found on the frame being encoded too
    (`emitter.Emitter.redaction`); this form serves where only tracks are known."""
    blur = [t.swept(frame.monotonic) for t in tracks if t.label == PERSON] \
        if cfg.redact_people else []
    return blurred(frame, blur, cfg)


def blurred(frame: Frame, blur: list[Box], cfg: SnapshotConfig) -> Image:
    """A copy of the frame with every box in `blur` made unrecognisable and the privacy
    zones blacked out: what may leave the node. Callers never draw on it (render_snapshot
    draws on its own copy)."""
    img = frame.image.copy()
    for box in blur:
        redact(img, box)
    for poly in cfg.privacy_zones:
        cv2.fillPoly(img, [np.round(np.asarray(poly)).astype(np.int32)], (0, 0, 0))
    return img


def redact(img: Image, box: Box) -> None:
    """Make a box unrecognisable in place: reduced to a few cells, then smoothed back up."""
    h, w = img.shape[:2]
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * REDACT_MARGIN, (y2 - y1) * REDACT_MARGIN
    ix1, iy1 = max(0, int(x1 - mx)), max(0, int(y1 - my))
    ix2, iy2 = min(w, int(np.ceil(x2 + mx))), min(h, int(np.ceil(y2 + my)))
    if ix2 - ix1 < 2 or iy2 - iy1 < 2:
        return
    roi = img[iy1:iy2, ix1:ix2]
    rh, rw = roi.shape[:2]
    scale = REDACT_CELLS / max(rh, rw)
    cells = cv2.resize(roi, (max(1, round(rw * scale)), max(1, round(rh * scale))),
                       interpolation=cv2.INTER_AREA)
    roi[:] = cv2.resize(cells, (rw, rh), interpolation=cv2.INTER_LINEAR)


def draw_box(img: Image, box: Box, thickness: int) -> None:
    """A coloured rectangle with a dark outline, visible on light and dark backgrounds."""
    p1 = (int(round(box[0])), int(round(box[1])))
    p2 = (int(round(box[2])), int(round(box[3])))
    cv2.rectangle(img, p1, p2, (0, 0, 0), thickness + 2)
    cv2.rectangle(img, p1, p2, BOX_COLOUR, thickness)


def _scaled(img: Image, width: int) -> Image:
    height = max(1, round(img.shape[0] * width / img.shape[1]))
    return np.asarray(cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA), np.uint8)


def encode_within(img: Image, quality: int, max_bytes: int) -> bytes:
    """Lower the quality first (cheap, keeps detail an operator needs), then the size."""
    while True:
        q = quality
        while True:
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
            if not ok:
                raise ValueError("JPEG encoding failed")
            if len(buf) <= max_bytes:
                return bytes(buf)
            if q <= MIN_QUALITY:
                break
            q = max(MIN_QUALITY, q - QUALITY_STEP)
        width = int(img.shape[1] * SHRINK)
        if width < MIN_WIDTH:
            raise ValueError(f"snapshot does not fit in {max_bytes} bytes even at "
                             f"{img.shape[1]} px wide and JPEG quality {MIN_QUALITY}")
        img = _scaled(img, width)
