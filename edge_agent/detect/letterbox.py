"""Pre-processing: letterbox a BGR frame into the model's input tensor, and map boxes back.

Runs on every frame of a Pi: it must never allocate per frame; buffers change with frame size."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

PAD = 114
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
    """Owns the input tensor; `__call__` overwrites it, so one instance serves one thread."""

    def __init__(self, in_w: int, in_h: int, *, centre: bool, rgb: bool, unit_scale: bool,
                 dtype: type[np.floating] = np.float32) -> None:
        self.in_w, self.in_h = in_w, in_h
        self.centre, self.rgb = centre, rgb
        self.scale = np.asarray(1 / 255 if unit_scale else 1, dtype)  # keeps the product in dtype
        self.pad_value = float(np.asarray(PAD, dtype) * self.scale)  # as a 114 pixel gets
        self.tensor = np.full((1, 3, in_h, in_w), self.pad_value, dtype)
        self._resized: npt.NDArray[np.uint8] | None = None
        self._box: Letterbox | None = None
        self._new_size = (0, 0)

    def __call__(self, image: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.floating], Letterbox]:
        h, w = image.shape[:2]
        lb = self._box
        if lb is None or (lb.width, lb.height) != (w, h):
            lb = self._box = fit(w, h, self.in_w, self.in_h, self.centre)
            new_w, new_h = self._new_size = round(w * lb.scale_x), round(h * lb.scale_y)
            self.tensor.fill(self.pad_value)  # the old image may have covered today's padding
            same = (new_w, new_h) == (w, h)
            self._resized = None if same else np.empty((new_h, new_w, 3), np.uint8)
        new_w, new_h = self._new_size
        src: npt.NDArray[np.uint8] = image
        if self._resized is not None:
            src = self._resized
            cv2.resize(image, (new_w, new_h), dst=src, interpolation=cv2.INTER_LINEAR)
        chw = (src[:, :, ::-1] if self.rgb else src).transpose(2, 0, 1)
        region = self.tensor[0, :, lb.pad_y:lb.pad_y + new_h, lb.pad_x:lb.pad_x + new_w]
        np.multiply(chw, self.scale, out=region, casting="unsafe")
        return self.tensor, lb
