"""Class-aware non-maximum suppression in numpy, for the adapters whose models lack NMS.

Hot path on a Pi: vectorised per kept box, never a Python loop over box pairs."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def iou(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """IoU matrix [len(a), len(b)] of x1, y1, x2, y2 boxes."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out: npt.NDArray[np.float32] = np.where(union > 0, inter / np.maximum(union, 1e-9), 0)
    return out.astype(np.float32, copy=False)


def nms(boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32],
        class_ids: npt.NDArray[np.intp], iou_threshold: float,
        max_det: int = 300) -> npt.NDArray[np.intp]:
    """Indices of the kept boxes, best score first.

    Boxes of different classes never suppress each other: each class is shifted to its own
    region of the plane (the torchvision batched_nms trick), so one greedy pass does all."""
    if len(boxes) == 0:
        return np.empty(0, np.intp)
    span = float(boxes.max() - min(0.0, float(boxes.min()))) + 1.0
    shifted = boxes + (class_ids.astype(np.float32) * span)[:, None]
    x1, y1, x2, y2 = shifted[:, 0], shifted[:, 1], shifted[:, 2], shifted[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_det:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
        union = areas[i] + areas[rest] - inter
        order = rest[inter <= iou_threshold * union]
    return np.asarray(keep, np.intp)
