"""Multi-object tracking: gives detections stable ids across frames.

Pure computation on boxes; never touches frames, models or the network."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

Box = tuple[float, float, float, float]


@dataclass(slots=True)
class Track:
    track_id: int
    label: str
    class_id: int
    score: float
    box: Box
    first_seen: float
    """Monotonic seconds of the first detection."""
    last_seen: float
    """Monotonic seconds of the latest matched detection."""
    hits: int = 1
    missed: int = 0
    """Detector runs since the last match (0: matched on the latest run)."""
    confirmed: bool = False
    history: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=64))
    """(monotonic time, bottom-centre x, bottom-centre y), newest last."""

    @property
    def anchor(self) -> tuple[float, float]:
        """Bottom-centre of the box: where the object stands on the ground."""
        x1, _, x2, y2 = self.box
        return ((x1 + x2) / 2.0, y2)
