"""Loitering: a track staying inside a zone for longer than the allowed dwell time.

Decides start/end per track only; never publishes, numbers or serialises events."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_agent.config import LoiteringRule
from edge_agent.events.base import Phase, RuleEvent, Scene, box_json
from edge_agent.events.zones import Zone
from edge_agent.geometry import Box
from edge_agent.track import Track

EXIT_GRACE_S = 1.0
"""Time outside the zone that counts as having left: the anchor of someone standing on the
zone's edge jitters in and out, which must not restart their dwell clock."""


@dataclass(slots=True)
class _Stay:
    entered: float
    last_inside: float
    details: dict[str, object] = field(default_factory=dict)
    box: Box = (0.0, 0.0, 0.0, 0.0)
    started: float | None = None
    """When the event started (dwell exceeded); None while the dwell is still allowed."""


class Loitering:
    """Start once a track has been in the zone for dwell_s; end when it leaves or ends."""

    def __init__(self, cfg: LoiteringRule, zone: Zone) -> None:
        self.cfg = cfg
        self.zone = zone
        self._stays: dict[int, _Stay] = {}
        self._quiet_until: dict[int, float] = {}

    def update(self, scene: Scene) -> list[RuleEvent]:
        now = scene.now
        out: list[RuleEvent] = []
        live: set[int] = set()
        for t in scene.tracks:
            if t.label not in self.cfg.labels:
                continue
            live.add(t.track_id)
            if not self.zone.contains(t.anchor):
                continue
            stay = self._stays.get(t.track_id)
            if stay is None:
                stay = self._stays[t.track_id] = _Stay(now, now)
            stay.last_inside = now
            stay.details, stay.box = self._details(t, now - stay.entered), t.box
            if (stay.started is None and now - stay.entered >= self.cfg.dwell_s
                    and self._quiet_until.get(t.track_id, now) <= now):
                stay.started = now
                out.append(self._event("start", t.track_id, stay, None))
        for tid, stay in list(self._stays.items()):
            if tid not in live or now - stay.last_inside > EXIT_GRACE_S:
                out.extend(self._leave(tid, stay.last_inside))
        self._quiet_until = {k: v for k, v in self._quiet_until.items() if v > now}
        return out

    def close(self, now: float) -> list[RuleEvent]:
        out: list[RuleEvent] = []
        for tid in list(self._stays):
            out.extend(self._leave(tid, now))
        return out

    def _leave(self, tid: int, at: float) -> list[RuleEvent]:
        stay = self._stays.pop(tid)
        if stay.started is None:
            return []
        self._quiet_until[tid] = at + self.cfg.cooldown_s
        stay.details["dwell_s"] = round(at - stay.entered, 1)
        return [self._event("end", tid, stay, round(max(0.0, at - stay.started), 3))]

    def _details(self, t: Track, dwell: float) -> dict[str, object]:
        return {"zone": self.zone.name, "track_id": t.track_id, "label": t.label,
                "dwell_s": round(dwell, 1), "box": box_json(t.box)}

    def _event(self, phase: Phase, tid: int, stay: _Stay, duration: float | None) -> RuleEvent:
        return RuleEvent("loitering", phase, self.cfg.severity,
                         f"loitering:{self.zone.name}:{tid}", dict(stay.details), duration,
                         [stay.box])
