"""Pre-processing: letterbox a BGR frame into the model's input tensor, and map boxes back.

Runs on every frame of a Pi: it must never allocate per frame; buffers change with frame size."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.detect.adapters.base import STRIDES

PAD = 114
STRIDE = max(STRIDES)
"""The largest stride of the detector families we decode: a dynamic input's sides are
multiples of it, as the nominal size's are."""
Boxes = npt.NDArray[np.float32]
"""[N, 4] x1, y1, x2, y2."""


@dataclass(frozen=True, slots=True)
class Letterbox:
    """Where the source image sits in the model input: input = source * scale + pad.

    Scales are per axis (the resized size over the source size), so mapping back inverts
    exactly what cv2.resize did, not the nominal min(W/w, H/h)."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    width: int
    height: int
    """Source image size in pixels."""

    def to_input(self, boxes: Boxes) -> Boxes:
        out = np.empty_like(boxes)
        out[:, 0::2] = boxes[:, 0::2] * self.scale_x + self.pad_x
        out[:, 1::2] = boxes[:, 1::2] * self.scale_y + self.pad_y
        return out

    def to_source(self, boxes: Boxes, clip: bool = True) -> Boxes:
        """In place: these are the detector's own scratch boxes."""
        boxes[:, 0::2] -= self.pad_x
        boxes[:, 0::2] /= self.scale_x
        boxes[:, 1::2] -= self.pad_y
        boxes[:, 1::2] /= self.scale_y
        if clip:
            np.clip(boxes[:, 0::2], 0, self.width, out=boxes[:, 0::2])
            np.clip(boxes[:, 1::2], 0, self.height, out=boxes[:, 1::2])
        return boxes


def crop_input(width: float, height: float, nominal: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of the input a crop of this size runs at on a model with a dynamic
    input made for `nominal` (width, height).

    The crop at scale min(1, the scale the nominal input would give it), each side rounded
    up to a multiple of STRIDE and at most the nominal side. Its pixels are never shrunk
    more than at the nominal size, so the resolution that regions buy is kept, and never
    enlarged beyond the rounding: enlarging adds no detail, only cost, which grows with the
    input's area (a 300 px crop runs at 320 px: (320/416)^2 = 0.59 of a 416 inference)."""
    nom_w, nom_h = nominal
    r = min(1.0, nom_w / width, nom_h / height)
    return min(nom_w, _stride_ceil(width * r)), min(nom_h, _stride_ceil(height * r))


def _stride_ceil(side: float) -> int:
    """The smallest multiple of STRIDE that holds `side` pixels (float noise forgiven)."""
    return max(STRIDE, math.ceil(side / STRIDE - 1e-9) * STRIDE)


def fit(width: int, height: int, in_w: int, in_h: int, centre: bool) -> Letterbox:
    """YOLOX puts the image at the top-left; Ultralytics centres it (its LetterBox rounding)."""
    r = min(in_w / width, in_h / height)
    new_w = min(in_w, max(1, int(round(width * r))))
    new_h = min(in_h, max(1, int(round(height * r))))
    if centre:
        pad_x = int(round((in_w - new_w) / 2 - 0.1))
        pad_y = int(round((in_h - new_h) / 2 - 0.1))
    else:
        pad_x = pad_y = 0
    return Letterbox(new_w / width, new_h / height, pad_x, pad_y, width, height)


class Letterboxer:
    """Owns one input tensor; `__call__` overwrites it, so one instance serves one frame or
    crop at a time (the detector keeps a ring of them for frames in flight).

    The image is resized into a reused uint8 buffer, split into three contiguous planes and
    each plane converted into the tensor in one pass: a strided HWC -> CHW float conversion
    costs more than the resize itself. Only the padding outside the new image is refilled.

    For a model with a dynamic input, `__call__` may ask for any input size up to the one
    given here: the tensor is then a view on the front of the same buffer (nothing is
    allocated), and a change of size refills its padding like a change of image size."""

    def __init__(self, in_w: int, in_h: int, *, centre: bool, rgb: bool, unit_scale: bool,
                 dtype: type[np.floating] = np.float32) -> None:
        self.in_w, self.in_h = in_w, in_h
        self.capacity = (in_w, in_h)
        self.centre, self.rgb = centre, rgb
        self.scale = np.asarray(1 / 255 if unit_scale else 1, dtype)  # keeps the product in dtype
        self._plain = not unit_scale
        """Pixels go in as they are (YOLOX): a copy, no multiply."""
        self.pad_value = float(np.asarray(PAD, dtype) * self.scale)  # as a 114 pixel gets
        self._buffer = np.full(3 * in_h * in_w, self.pad_value, dtype)
        self.tensor = self._buffer.reshape(1, 3, in_h, in_w)
        self._resized = np.empty(in_h * in_w * 3, np.uint8)
        self._planes = np.empty(3 * in_h * in_w, np.uint8)
        self._box: Letterbox | None = None
        self._new_size = (0, 0)

    def __call__(self, image: npt.NDArray[np.uint8], size: tuple[int, int] | None = None
                 ) -> tuple[npt.NDArray[np.floating], Letterbox]:
        """`size`: (width, height) of the input tensor, at most the capacity; None keeps the
        current one."""
        if size is not None and size != (self.in_w, self.in_h):
            self._resize_input(*size)
        h, w = image.shape[:2]
        lb = self._box
        if lb is None or (lb.width, lb.height) != (w, h):
            lb = self._refit(w, h)
        new_w, new_h = self._new_size
        src = image
        if (new_w, new_h) != (w, h):
            src = self._resized[:new_h * new_w * 3].reshape(new_h, new_w, 3)
            cv2.resize(image, (new_w, new_h), dst=src, interpolation=cv2.INTER_LINEAR)
        n = new_h * new_w
        planes = [self._planes[i * n:(i + 1) * n].reshape(new_h, new_w) for i in range(3)]
        cv2.split(src, planes)  # fills the given planes in place, allocates nothing
        if self.rgb:
            planes.reverse()
        y, x = lb.pad_y, lb.pad_x
        for c in range(3):
            out = self.tensor[0, c, y:y + new_h, x:x + new_w]
            if self._plain:
                np.copyto(out, planes[c], casting="unsafe")
            else:
                np.multiply(planes[c], self.scale, out=out, casting="unsafe")
        return self.tensor, lb

    def _resize_input(self, in_w: int, in_h: int) -> None:
        cap_w, cap_h = self.capacity
        if not (0 < in_w <= cap_w and 0 < in_h <= cap_h):
            raise ValueError(f"input size {in_w}x{in_h} is outside this letterboxer's "
                             f"{cap_w}x{cap_h}")
        self.in_w, self.in_h = in_w, in_h
        self.tensor = self._buffer[:3 * in_h * in_w].reshape(1, 3, in_h, in_w)
        self._box = None  # the next image is placed afresh and all its padding refilled

    def _refit(self, w: int, h: int) -> Letterbox:
        """A new source size: new placement, and padding wherever the image no longer is."""
        lb = self._box = fit(w, h, self.in_w, self.in_h, self.centre)
        new_w, new_h = self._new_size = round(w * lb.scale_x), round(h * lb.scale_y)
        t, y, x, v = self.tensor, lb.pad_y, lb.pad_x, self.pad_value
        t[:, :, :y, :] = v
        t[:, :, y + new_h:, :] = v
        t[:, :, y:y + new_h, :x] = v
        t[:, :, y:y + new_h, x + new_w:] = v
        return lb
