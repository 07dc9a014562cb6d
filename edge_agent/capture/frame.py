"""A captured frame and its timestamps.

Frames are never copied after capture; downstream rooms treat `image` as read-only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Frame:
    image: Image
    """BGR, uint8, HxWx3."""
    index: int
    """Position in the source since the agent started (counts dropped frames too)."""
    captured_at: float
    """Wall-clock UTC seconds (time.time()) when the frame was read."""
    monotonic: float
    """time.monotonic() at capture, for latency and durations."""

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])
