"""Crowding: more objects of one label inside a zone than it should hold.

Decides start/update/end for the zone only; never publishes, numbers or serialises events."""

from __future__ import annotations

from edge_agent.config import CrowdingRule
from edge_agent.events.base import Phase, RuleEvent, Scene
from edge_agent.events.zones import Zone
from edge_agent.geometry import Box

END_HOLD_S = 1.5
"""The count must stay at or below max_count this long before the event ends: counts
flicker by one as people occlude each other, and each flicker must not end the event."""

UPDATE_EVERY_S = 2.0
"""At most one update per this many seconds."""
UPDATE_CHANGE = 0.25
"""An update needs the count to differ from the last reported one by this share (at least
one): a crowd of eight flickering to seven and back is not news."""


class Crowding:
    """One event per zone and label while the zone holds more than max_count objects.

    Starts after the count has stayed above max_count for min_duration_s."""

    def __init__(self, cfg: CrowdingRule, zone: Zone) -> None:
        self.cfg = cfg
        self.zone = zone
        self.key = f"crowding:{zone.name}:{cfg.label}"
        self._above_since: float | None = None
        self._below_since: float | None = None
        self._started: float | None = None
        self._reported = 0
        self._reported_at = 0.0
        self._quiet_until = float("-inf")

    def update(self, scene: Scene) -> list[RuleEvent]:
        now = scene.now
        boxes = [t.box for t in scene.tracks
                 if t.label == self.cfg.label and self.zone.contains(t.anchor)]
        count = len(boxes)
        over = count > self.cfg.max_count
        if self._started is None:
            if not over:
                self._above_since = None
            elif self._above_since is None:
                self._above_since = now
            if (self._above_since is not None and now >= self._quiet_until
                    and now - self._above_since >= self.cfg.min_duration_s):
                self._started = now
                self._below_since = None
                return [self._event("start", count, boxes, None, now)]
            return []
        if not over:
            if self._below_since is None:
                self._below_since = now
            if now - self._below_since >= END_HOLD_S:
                return self._end(now, count, boxes)
            return []
        self._below_since = None
        notable = max(1, round(self._reported * UPDATE_CHANGE))
        if abs(count - self._reported) >= notable and now - self._reported_at >= UPDATE_EVERY_S:
            return [self._event("update", count, boxes, None, now)]
        return []

    def close(self, now: float) -> list[RuleEvent]:
        return self._end(now, self._reported, []) if self._started is not None else []

    def _end(self, now: float, count: int, boxes: list[Box]) -> list[RuleEvent]:
        assert self._started is not None
        duration = round(now - self._started, 3)
        self._started = None
        self._above_since = None
        self._quiet_until = now + self.cfg.cooldown_s
        return [self._event("end", count, boxes, duration, now)]

    def _event(self, phase: Phase, count: int, boxes: list[Box], duration: float | None,
               now: float) -> RuleEvent:
        self._reported, self._reported_at = count, now
        details: dict[str, object] = {"zone": self.zone.name, "label": self.cfg.label,
                                      "count": count, "threshold": self.cfg.max_count}
        return RuleEvent("crowding", phase, self.cfg.severity, self.key, details, duration,
                         list(boxes))
