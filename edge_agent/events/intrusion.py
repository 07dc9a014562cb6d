"""Zone intrusion: an object of a watched label standing inside a zone.

Decides start/end per track only; never publishes, numbers or serialises events."""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.config import IntrusionRule
from edge_agent.events.base import Phase, RuleEvent, Scene, box_json
from edge_agent.events.zones import Zone
from edge_agent.geometry import Box
from edge_agent.track import Track


@dataclass(slots=True)
class _Open:
    started: float
    details: dict[str, object]
    box: Box
    seen: float
    """The track's last match: a track that ends was last there then, not max_age_s later."""


class Intrusion:
    """One event per track and zone, from the moment its feet (the box's bottom-centre) are
    in the zone until they leave or the track ends.

    A track that coasts because motion gating skipped the detector is still present: the
    tracker only drops it after max_age_s without a match."""

    def __init__(self, cfg: IntrusionRule, zone: Zone) -> None:
        self.cfg = cfg
        self.zone = zone
        self._open: dict[int, _Open] = {}
        self._quiet_until: dict[int, float] = {}
        """Track id -> no new start before this time (the cooldown after an end)."""

    def update(self, scene: Scene) -> list[RuleEvent]:
        now = scene.now
        inside = {t.track_id: t for t in scene.tracks
                  if t.label in self.cfg.labels and self.zone.contains(t.anchor)}
        live = {t.track_id for t in scene.tracks}
        out = [self._end(tid, now, now if tid in live else self._open[tid].seen)
               for tid in list(self._open) if tid not in inside]
        for tid, t in inside.items():
            current = self._open.get(tid)
            if current is not None:
                current.details, current.box, current.seen = self._details(t), t.box, t.last_seen
            elif t.score >= self.cfg.min_score and self._quiet_until.get(tid, now) <= now:
                self._open[tid] = _Open(now, self._details(t), t.box, t.last_seen)
                out.append(self._event("start", tid, self._open[tid].details, None, t.box))
        self._quiet_until = {k: v for k, v in self._quiet_until.items() if v > now}
        return out

    def close(self, now: float) -> list[RuleEvent]:
        return [self._end(tid, now, now) for tid in list(self._open)]

    def _end(self, tid: int, now: float, until: float) -> RuleEvent:
        ev = self._open.pop(tid)
        self._quiet_until[tid] = now + self.cfg.cooldown_s
        return self._event("end", tid, ev.details, round(max(0.0, until - ev.started), 3),
                           ev.box)

    def _details(self, t: Track) -> dict[str, object]:
        return {"zone": self.zone.name, "track_id": t.track_id, "label": t.label,
                "score": round(t.score, 3), "box": box_json(t.box)}

    def _event(self, phase: Phase, tid: int, details: dict[str, object],
               duration: float | None, box: Box) -> RuleEvent:
        return RuleEvent("intrusion", phase, self.cfg.severity,
                         f"intrusion:{self.zone.name}:{tid}", dict(details), duration, [box])
