"""Ultralytics output families: YOLOv8/11 [1, 4+nc, N] and YOLOv5 [1, N, 5+nc], decoded boxes.

Boxes are already in input pixels; this adapter must never re-apply grid or anchor maths."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge_agent.detect.adapters.base import (
    Adapter,
    Candidates,
    ModelInfo,
    empty,
    single_3d,
    xywh_to_xyxy,
)

log = logging.getLogger(__name__)


class Ultralytics(Adapter):
    key = "ultralytics"
    centre = True
    rgb = True
    unit_scale = True

    @classmethod
    def claims(cls, info: ModelInfo) -> bool:
        dims = single_3d(info)
        if dims is None or info.end2end_meta or info.metadata.get("task", "detect") != "detect":
            return False
        a, b = dims
        if a < b:  # v8/v11: channels first
            return a >= 5 and (info.ultralytics_meta or b == info.grid_cells)
        return b >= 6 and (info.ultralytics_meta or a == 3 * info.grid_cells)

    def __init__(self, info: ModelInfo) -> None:
        dims = single_3d(info)
        if dims is None or (dims[0] < dims[1] and dims[0] < 5) or (
                dims[0] >= dims[1] and dims[1] < 6):
            raise info.error("format ultralytics needs one output [1,4+classes,N] (YOLOv8/11) "
                             "or [1,N,5+classes] (YOLOv5)")
        task = info.metadata.get("task", "detect")
        if task != "detect":
            raise info.error(f"Ultralytics task {task!r} is not object detection")
        a, b = dims
        self.transposed = a < b
        self.num_classes = a - 4 if self.transposed else b - 5
        if not self.transposed and a == info.grid_cells and not info.ultralytics_meta:
            # YOLOv6-style decoded outputs look like this too, so the override is honoured.
            log.warning("event=format_override model=%s format=ultralytics output=[1,%d,%d] "
                        "note=looks_like_yolox_raw_grid", info.path, a, b)

    def decode(self, outputs: Sequence[npt.NDArray[np.generic]], score: float,
               size: tuple[int, int] | None = None) -> Candidates:
        out = np.asarray(outputs[0][0], np.float32)
        if self.transposed:  # [4+nc, N]: no objectness
            cls = out[4:]
            best = cls.max(0)
            cand = np.flatnonzero(best >= score)
            if cand.size == 0:
                return empty()
            ids = cls[:, cand].argmax(0)
            xywh = np.ascontiguousarray(out[:4, cand].T)
            return Candidates(xywh_to_xyxy(xywh), best[cand], ids.astype(np.intp))
        cand = np.flatnonzero(out[:, 4] >= score)  # [N, 5+nc]: objectness gates the rest
        if cand.size == 0:
            return empty()
        rows = out[cand]
        cls_scores = rows[:, 5:] * rows[:, 4:5]
        ids = cls_scores.argmax(1)
        scores = cls_scores[np.arange(len(ids)), ids]
        keep = scores >= score
        return Candidates(xywh_to_xyxy(rows[keep, :4]), scores[keep],
                          ids[keep].astype(np.intp))
