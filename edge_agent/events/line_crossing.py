"""Line crossing: a track's ground point passing over a counting line, with its direction.

Decides instant events per track only; never publishes, numbers or serialises events."""

from __future__ import annotations

from edge_agent.config import LineCrossingRule
from edge_agent.events.base import RuleEvent, Scene, box_json
from edge_agent.events.zones import Line
from edge_agent.geometry import Point


class LineCrossing:
    """An instant event when the anchor (bottom-centre) of a track moves from one side of the
    segment to the other through the segment itself; see `Line` for which way is a_to_b.

    Each track remembers the last place it was seen off the line, so a person who stops on
    the line and then walks on still counts once. The cooldown per track keeps a person
    dithering on the line from counting again and again."""

    def __init__(self, cfg: LineCrossingRule, line: Line) -> None:
        self.cfg = cfg
        self.line = line
        self._last: dict[int, Point] = {}
        """Track id -> latest anchor that was not on the line."""
        self._quiet_until: dict[int, float] = {}

    def update(self, scene: Scene) -> list[RuleEvent]:
        now = scene.now
        out: list[RuleEvent] = []
        seen: dict[int, Point] = {}
        for t in scene.tracks:
            if t.label not in self.cfg.labels:
                continue
            p = t.anchor
            prev = self._last.get(t.track_id)
            seen[t.track_id] = p if prev is None or self.line.side(p) != 0 else prev
            if prev is None:
                continue
            direction = self.line.crossing(prev, p)
            if direction is None or self._quiet_until.get(t.track_id, now) > now:
                continue
            if self.cfg.direction not in ("any", direction):
                continue
            self._quiet_until[t.track_id] = now + self.cfg.cooldown_s
            details: dict[str, object] = {"line": self.line.name, "direction": direction,
                                          "track_id": t.track_id, "label": t.label,
                                          "box": box_json(t.box)}
            out.append(RuleEvent("line_crossing", "instant", self.cfg.severity,
                                 f"line_crossing:{self.line.name}:{t.track_id}", details,
                                 None, [t.box]))
        self._last = seen
        self._quiet_until = {k: v for k, v in self._quiet_until.items() if v > now}
        return out

    def close(self, now: float) -> list[RuleEvent]:
        return []  # instant events only: nothing is ever open
