"""End-to-end output family: models with NMS inside, giving final boxes in input pixels.

The model already chose its boxes: this adapter must never run NMS on them again."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge_agent.detect.adapters.base import Adapter, Candidates, ModelInfo, OutputSpec

EXPECTED = ("format e2e needs one output [1,K,6] or [K,6] (x1,y1,x2,y2,score,class), [K,7] "
            "(batch,x1,y1,x2,y2,class,score), or four outputs num_dets [1,1], boxes [1,K,4], "
            "scores [1,K], classes [1,K]")


def _rows(info: ModelInfo) -> int | None:
    """Row width (6 or 7) of a lone rows output, else None."""
    if len(info.outputs) != 1:
        return None
    shape = info.outputs[0].shape
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) == 2 and shape[1] in (6, 7):
        return shape[1]
    return None


def _four(outputs: tuple[OutputSpec, ...]) -> tuple[int, int, int, int] | None:
    """Indices of (num_dets, boxes, scores, classes) in the four-output form, else None."""
    if len(outputs) != 4:
        return None
    num = [i for i, o in enumerate(outputs) if int(np.prod(o.shape)) == 1 and len(o.shape) <= 2]
    boxes = [i for i, o in enumerate(outputs) if len(o.shape) == 3 and o.shape[0] == 1
             and o.shape[2] == 4]
    if len(num) != 1 or len(boxes) != 1:
        return None
    k = outputs[boxes[0]].shape[1]
    pair = [i for i, o in enumerate(outputs) if i not in (num[0], boxes[0])
            and o.shape in ((1, k), (1, k, 1))]
    if len(pair) != 2:
        return None

    def is_class(i: int) -> bool:
        o = outputs[i]
        return "int" in o.dtype or "class" in o.name.lower() or "label" in o.name.lower()

    first, second = pair
    if is_class(first) and not is_class(second):
        first, second = second, first
    return num[0], boxes[0], first, second


class E2E(Adapter):
    """Rows [1,K,6]/[K,6] x1,y1,x2,y2,score,class (Ultralytics nms=True, YOLOv10, YOLO26);
    rows [1,K,7]/[K,7] batch,x1,y1,x2,y2,class,score (YOLOv7 end2end); or four outputs
    num_dets, boxes, scores, classes (EfficientNMS). Input made the Ultralytics way."""

    key = "e2e"
    centre = True
    rgb = True
    unit_scale = True
    needs_nms = False

    @classmethod
    def claims(cls, info: ModelInfo) -> bool:
        if _four(info.outputs) is not None:
            return True
        width = _rows(info)
        if width is None:
            return False
        shape = info.outputs[0].shape
        if len(shape) == 2 or info.end2end_meta:
            return True
        return shape[1] not in (info.grid_cells, 3 * info.grid_cells)

    def __init__(self, info: ModelInfo) -> None:
        self.num_classes = None
        self.four = _four(info.outputs)
        self.width = _rows(info)
        if self.four is None and self.width is None:
            raise info.error(EXPECTED)

    def decode(self, outputs: Sequence[npt.NDArray[np.generic]], score: float,
               size: tuple[int, int] | None = None) -> Candidates:
        if self.four is not None:
            n_i, b_i, s_i, c_i = self.four
            n = int(np.asarray(outputs[n_i]).ravel()[0])
            boxes = np.asarray(outputs[b_i], np.float32)[0, :n]
            scores = np.asarray(outputs[s_i], np.float32).reshape(1, -1)[0, :n]
            ids = np.asarray(outputs[c_i]).reshape(1, -1)[0, :n]
        else:
            rows = np.asarray(outputs[0], np.float32).reshape(-1, self.width or 6)
            if self.width == 7:
                rows = rows[rows[:, 0] == 0]
                boxes, ids, scores = rows[:, 1:5], rows[:, 5], rows[:, 6]
            else:
                boxes, scores, ids = rows[:, :4], rows[:, 4], rows[:, 5]
        keep = scores >= score
        return Candidates(np.ascontiguousarray(boxes[keep], np.float32),
                          np.ascontiguousarray(scores[keep], np.float32),
                          ids[keep].astype(np.intp))
