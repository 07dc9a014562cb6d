"""How far two detectors agree on the same frames: boxes matched one to one by class and IoU.

Used to check an int8 model or another backend against the float onnxruntime reference;
it judges boxes only and never runs a model itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_agent.detect.types import Detection
from edge_agent.geometry import iou

MATCH_IOU = 0.5
"""The usual bar (PASCAL VOC, COCO AP50) for "the same object"."""


@dataclass(frozen=True, slots=True)
class Agreement:
    matched: int
    only_reference: int
    """Reference boxes the other detector missed."""
    only_other: int
    """Boxes of the other detector the reference does not have."""
    worst_iou: float
    """The lowest IoU among matched pairs (1.0 when nothing matched): how far boxes moved."""

    @property
    def f1(self) -> float:
        total = 2 * self.matched + self.only_reference + self.only_other
        return 2 * self.matched / total if total else 1.0

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(self.matched + other.matched,
                         self.only_reference + other.only_reference,
                         self.only_other + other.only_other,
                         min(self.worst_iou, other.worst_iou))


NONE = Agreement(0, 0, 0, 1.0)


def agree(reference: Sequence[Detection], other: Sequence[Detection],
          min_iou: float = MATCH_IOU) -> Agreement:
    """Greedy one-to-one matching, highest IoU first, same class only."""
    if not reference or not other:
        return Agreement(0, len(reference), len(other), 1.0)
    m = iou(np.array([d.box for d in reference]), np.array([d.box for d in other]))
    same = np.equal.outer([d.class_id for d in reference], [d.class_id for d in other])
    m = np.where(same, m, 0.0)
    used_r: set[int] = set()
    used_o: set[int] = set()
    worst = 1.0
    for flat in np.argsort(-m, axis=None, kind="stable"):
        r, o = divmod(int(flat), m.shape[1])
        if m[r, o] < min_iou:
            break
        if r in used_r or o in used_o:
            continue
        used_r.add(r)
        used_o.add(o)
        worst = min(worst, float(m[r, o]))
    n = len(used_r)
    return Agreement(n, len(reference) - n, len(other) - n, worst)
