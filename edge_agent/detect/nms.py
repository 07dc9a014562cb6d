"""Class-aware non-maximum suppression, for the adapters whose models lack NMS.

Hot path on a Pi: runs in OpenCV's C++, never a Python loop (docs/performance.md)."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.geometry import iou

__all__ = ["iou", "nms"]


def nms(boxes: npt.NDArray[np.float32], scores: npt.NDArray[np.float32],
        class_ids: npt.NDArray[np.intp], iou_threshold: float,
        max_det: int = 300) -> npt.NDArray[np.intp]:
    """Indices of the kept boxes, best score first; a box is dropped when its IoU with a
    better box of the same class is above the threshold.

    Boxes of different classes never suppress each other: OpenCV's batched NMS shifts each
    class to its own region of the plane (the torchvision batched_nms trick)."""
    if len(boxes) == 0:
        return np.empty(0, np.intp)
    xywh = np.empty((len(boxes), 4), np.float32)
    xywh[:, :2] = boxes[:, :2]
    xywh[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    keep = cv2.dnn.NMSBoxesBatched(xywh, np.asarray(scores, np.float32),  # type: ignore[arg-type]
                                   np.asarray(class_ids, np.int32),  # type: ignore[arg-type]
                                   -np.inf, iou_threshold)
    return np.asarray(keep, np.intp).reshape(-1)[:max_det]
