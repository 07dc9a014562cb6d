"""YOLOX output family: one [1, N, 5+nc] raw grid (offsets, log sizes, objectness, classes).

Decodes only the cells whose objectness can pass the threshold; it must never decode all N."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge_agent.detect.adapters.base import (
    STRIDES,
    Adapter,
    Candidates,
    ModelInfo,
    empty,
    single_3d,
    xywh_to_xyxy,
)


class Yolox(Adapter):
    key = "yolox"
    centre = False
    rgb = False
    unit_scale = False

    @classmethod
    def claims(cls, info: ModelInfo) -> bool:
        dims = single_3d(info)
        return (dims is not None and not info.ultralytics_meta and dims[0] == info.grid_cells
                and dims[1] >= 6)

    def __init__(self, info: ModelInfo) -> None:
        dims = single_3d(info)
        if dims is None or dims[0] != info.grid_cells or dims[1] < 6:
            raise info.error(
                f"format yolox needs one output [1,{info.grid_cells},5+classes] (the grid "
                f"cells of strides 8/16/32 for its {info.input_w}x{info.input_h} input)")
        self.num_classes = dims[1] - 5
        grids, strides = [], []
        for s in STRIDES:
            hs, ws = info.input_h // s, info.input_w // s
            xv, yv = np.meshgrid(np.arange(ws), np.arange(hs))
            grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
            strides.append(np.full((hs * ws, 1), s))
        self.grid = np.concatenate(grids).astype(np.float32)
        self.stride = np.concatenate(strides).astype(np.float32)

    def decode(self, outputs: Sequence[npt.NDArray[np.generic]], score: float) -> Candidates:
        out = np.asarray(outputs[0][0], np.float32)
        # class scores are sigmoids (<= 1), so obj * cls >= score needs obj >= score
        cand = np.flatnonzero(out[:, 4] >= score)
        if cand.size == 0:
            return empty()
        rows = out[cand]
        cls_scores = rows[:, 5:] * rows[:, 4:5]
        ids = cls_scores.argmax(1)
        scores = cls_scores[np.arange(len(ids)), ids]
        keep = scores >= score
        rows, cand = rows[keep], cand[keep]
        stride = self.stride[cand]
        xywh = np.empty((len(rows), 4), np.float32)
        xywh[:, :2] = (rows[:, :2] + self.grid[cand]) * stride
        xywh[:, 2:] = np.exp(np.minimum(rows[:, 2:4], 20.0)) * stride
        return Candidates(xywh_to_xyxy(xywh), scores[keep], ids[keep].astype(np.intp))
