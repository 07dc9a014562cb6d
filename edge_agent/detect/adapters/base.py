"""What every output-family adapter shares: the model facts it judges, and its contract.

An adapter decodes tensors into input-pixel boxes; it must never touch images or frame pixels."""

from __future__ import annotations

import ast
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np
import numpy.typing as npt

from edge_agent.detect.errors import ModelError

STRIDES = (8, 16, 32)


@dataclass(frozen=True, slots=True)
class OutputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The facts format detection looks at; output shapes are concrete (dynamic dims resolved
    by one trial run)."""

    path: Path
    input_w: int
    input_h: int
    outputs: tuple[OutputSpec, ...]
    metadata: dict[str, str]

    @property
    def grid_cells(self) -> int:
        """Anchor-free grid size for strides 8/16/32: 3549 at 416x416, 8400 at 640x640."""
        return grid_cells(self.input_w, self.input_h)

    @property
    def ultralytics_meta(self) -> bool:
        return "names" in self.metadata and ("stride" in self.metadata
                                             or "imgsz" in self.metadata)

    @property
    def end2end_meta(self) -> bool:
        """Ultralytics marks models exported with NMS inside (nms=True, YOLOv10, YOLO26)."""
        if self.metadata.get("end2end", "").lower() == "true":
            return True
        try:
            args = ast.literal_eval(self.metadata.get("args", "{}"))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return False
        return isinstance(args, dict) and args.get("nms") is True

    def shapes(self) -> str:
        return ", ".join(f"{o.name} [{','.join(map(str, o.shape))}]" for o in self.outputs)

    def error(self, reason: str) -> ModelError:
        return ModelError(self.path, f"{reason}; model outputs: {self.shapes()}")


class Candidates(NamedTuple):
    """Boxes above the score threshold, x1, y1, x2, y2 in model-input pixels."""

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    class_ids: npt.NDArray[np.intp]


def grid_cells(width: int, height: int) -> int:
    return sum((height // s) * (width // s) for s in STRIDES)


def empty() -> Candidates:
    return Candidates(np.empty((0, 4), np.float32), np.empty(0, np.float32),
                      np.empty(0, np.intp))


def xywh_to_xyxy(xywh: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    out = np.empty_like(xywh)
    half = xywh[:, 2:4] * 0.5
    out[:, :2] = xywh[:, :2] - half
    out[:, 2:] = xywh[:, :2] + half
    return out


class Adapter(ABC):
    """One output family. Subclasses declare their format key and how their input is made."""

    key: ClassVar[str]
    centre: ClassVar[bool]
    """Letterbox centred (Ultralytics) or at the top-left (YOLOX)."""
    rgb: ClassVar[bool]
    unit_scale: ClassVar[bool]
    """Pixels divided by 255."""
    needs_nms: ClassVar[bool] = True

    num_classes: int | None
    """None when the layout does not tell (end-to-end models)."""

    @classmethod
    @abstractmethod
    def claims(cls, info: ModelInfo) -> bool:
        """Auto-detection: True only when the layout (and metadata) clearly is this family."""

    @abstractmethod
    def __init__(self, info: ModelInfo) -> None:
        """Raises ModelError when this family cannot decode the model's outputs."""

    @abstractmethod
    def decode(self, outputs: Sequence[npt.NDArray[np.generic]], score: float,
               size: tuple[int, int] | None = None) -> Candidates:
        """Outputs of session.run, in the model's output order; `size` is the (width, height)
        of the input they came from (a dynamic model's crop), None for the nominal size."""


def single_3d(info: ModelInfo) -> tuple[int, int] | None:
    """(A, B) of a lone [1, A, B] output, else None."""
    if len(info.outputs) != 1:
        return None
    shape = info.outputs[0].shape
    if len(shape) != 3 or shape[0] != 1:
        return None
    return shape[1], shape[2]
