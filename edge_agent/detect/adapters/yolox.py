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
        self.size = (info.input_w, info.input_h)
        self._grids: dict[tuple[int, int], tuple[npt.NDArray[np.float32],
                                                 npt.NDArray[np.float32]]] = {}
        self.grid, self.stride = self._grid(self.size)

    def _grid(self, size: tuple[int, int]) -> tuple[npt.NDArray[np.float32],
                                                    npt.NDArray[np.float32]]:
        """Cell offsets and strides of every row for an input of `size` (width, height),
        made once per size (a dynamic model's crops come in a few sizes, multiples of 32)."""
        cached = self._grids.get(size)
        if cached is not None:
            return cached
        w, h = size
        grids, strides = [], []
        for s in STRIDES:
            hs, ws = h // s, w // s
            xv, yv = np.meshgrid(np.arange(ws), np.arange(hs))
            grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
            strides.append(np.full((hs * ws, 1), s))
        made = (np.concatenate(grids).astype(np.float32),
                np.concatenate(strides).astype(np.float32))
        self._grids[size] = made
        return made

    def decode(self, outputs: Sequence[npt.NDArray[np.generic]], score: float,
               size: tuple[int, int] | None = None) -> Candidates:
        out = np.asarray(outputs[0][0], np.float32)
        grid, stride_of = self._grid(size or self.size)
        if len(grid) != len(out):
            w, h = size or self.size
            raise ValueError(f"yolox output has {len(out)} rows, a {w}x{h} input has "
                             f"{len(grid)} grid cells")
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
        stride = stride_of[cand]
        xywh = np.empty((len(rows), 4), np.float32)
        xywh[:, :2] = (rows[:, :2] + grid[cand]) * stride
        xywh[:, 2:] = np.exp(np.minimum(rows[:, 2:4], 20.0)) * stride
        return Candidates(xywh_to_xyxy(xywh), scores[keep], ids[keep].astype(np.intp))
