"""What every event rule consumes and produces.

Rules are pure state machines over scenes; they never publish, number or serialise events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from edge_agent.capture.frame import Frame
from edge_agent.config import Severity
from edge_agent.detect.types import Detection
from edge_agent.geometry import Box
from edge_agent.track import Track

Phase = Literal["start", "update", "end", "instant"]


@dataclass(frozen=True, slots=True)
class Scene:
    """One processed frame: what the rules see."""

    frame: Frame
    tracks: list[Track]
    """Confirmed tracks matched or coasting at this frame."""
    detections: list[Detection]
    detected: bool
    """True when the detector ran on this frame (False when motion gating skipped it)."""
    now: float
    """Monotonic seconds (the frame's capture time)."""


@dataclass(frozen=True, slots=True)
class RuleEvent:
    type: str
    phase: Phase
    severity: Severity
    key: str
    """Identity of the thing observed across start/update/end, e.g. 'intrusion:plaza:12'."""
    details: dict[str, object]
    duration_s: float | None = None
    boxes: list[Box] = field(default_factory=list)
    """Boxes to draw on the snapshot."""


class Rule(Protocol):
    def update(self, scene: Scene) -> list[RuleEvent]:
        """Advance with one scene; return the events it causes."""
        ...

    def close(self, now: float) -> list[RuleEvent]:
        """End every open event (the agent is stopping)."""
        ...


def box_json(box: Box) -> list[float]:
    """A box as the contract carries it: four numbers, 0.1 px is finer than any detector."""
    return [round(float(v), 1) for v in box]
