"""Geometry the rules share: zones (polygons), lines (segments) and which side a point is on.

Plain arithmetic in source-frame pixels; never looks at frames, tracks or time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge_agent.config import LineConfig, ZoneConfig
from edge_agent.geometry import Point

Direction = Literal["a_to_b", "b_to_a"]


def point_in_polygon(p: Point, polygon: tuple[Point, ...]) -> bool:
    """Even-odd ray casting; a point exactly on an edge may fall either way."""
    x, y = p
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def cross(a: Point, b: Point, p: Point) -> float:
    """z of (b - a) x (p - a): positive when p is right of the directed line a->b on screen
    (image y grows downwards), negative when left, zero on the line."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """Whether the closed segments p1-p2 and q1-q2 share a point."""
    d1, d2 = cross(q1, q2, p1), cross(q1, q2, p2)
    d3, d4 = cross(p1, p2, q1), cross(p1, p2, q2)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return ((d1 == 0 and _on_segment(q1, q2, p1)) or (d2 == 0 and _on_segment(q1, q2, p2))
            or (d3 == 0 and _on_segment(p1, p2, q1)) or (d4 == 0 and _on_segment(p1, p2, q2)))


def _on_segment(a: Point, b: Point, p: Point) -> bool:
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    points: tuple[Point, ...]

    @classmethod
    def from_config(cls, cfg: ZoneConfig) -> Zone:
        return cls(cfg.name, tuple((float(x), float(y)) for x, y in cfg.points))

    def contains(self, p: Point) -> bool:
        return point_in_polygon(p, self.points)


@dataclass(frozen=True, slots=True)
class Line:
    """A directed segment a->b.

    Direction convention (image coordinates, y down): `a_to_b` is a crossing from the left of
    a->b to its right, as seen on screen when facing from a towards b. For a horizontal line
    with a on the left it means moving down the image; for a vertical line with a at the top
    it means moving from the right of the image to the left. `b_to_a` is the opposite."""

    name: str
    a: Point
    b: Point

    @classmethod
    def from_config(cls, cfg: LineConfig) -> Line:
        return cls(cfg.name, (float(cfg.a[0]), float(cfg.a[1])), (float(cfg.b[0]), float(cfg.b[1])))

    def side(self, p: Point) -> int:
        """+1 right of a->b, -1 left, 0 on the (infinite) line."""
        c = cross(self.a, self.b, p)
        return (c > 0) - (c < 0)

    def crossing(self, p0: Point, p1: Point) -> Direction | None:
        """The direction of a move p0 -> p1 across the segment, None when it does not cross.

        A move that only touches the line, or passes beyond its ends, does not cross."""
        s0, s1 = self.side(p0), self.side(p1)
        if s0 == 0 or s1 == 0 or s0 == s1 or not segments_intersect(p0, p1, self.a, self.b):
            return None
        return "a_to_b" if s0 < 0 else "b_to_a"
