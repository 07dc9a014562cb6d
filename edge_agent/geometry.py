"""The shared vocabulary of boxes and points, and the one IoU every room uses.

Pure arithmetic in frame pixels; imports nothing of the agent, so every room may use it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Point = tuple[float, float]
"""x, y in source-frame pixels."""
Box = tuple[float, float, float, float]
"""x1, y1, x2, y2 in source-frame pixels."""
Region = tuple[int, int, int, int]
"""A crop of the frame: x1, y1, x2, y2 in whole frame pixels."""


def iou(a: Sequence[Box] | npt.NDArray[np.floating],
        b: Sequence[Box] | npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Intersection over union of every box in `a` with every box in `b`: [len(a), len(b)]."""
    aa = np.asarray(a, np.float64).reshape(-1, 4)
    bb = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(aa[:, None, :2], bb[None, :, :2])
    rb = np.minimum(aa[:, None, 2:], bb[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (aa[:, 2] - aa[:, 0]) * (aa[:, 3] - aa[:, 1])
    area_b = (bb[:, 2] - bb[:, 0]) * (bb[:, 3] - bb[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out: npt.NDArray[np.float64] = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
    return out
