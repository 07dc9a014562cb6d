"""What a detector reports for one object, in original image pixels."""

from __future__ import annotations

from dataclasses import dataclass

NOMINAL_KEY = "nominal_input"
"""Model metadata key for the size a dynamic-input model was trained and exported at, "WxH"
(e.g. "416x416"): the whole frame still runs at this size (`edge-agent models dynamic`
writes it)."""


@dataclass(frozen=True, slots=True)
class Detection:
    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]
    """x1, y1, x2, y2 in original image pixels."""

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def to_json(self) -> dict[str, object]:
        return {
            "label": self.label,
            "class_id": self.class_id,
            "score": round(self.score, 4),
            "box": [round(v, 1) for v in self.box],
        }
