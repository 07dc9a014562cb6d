"""The scenario clock: simulated seconds since a run's start, shared by the runner, the boards,
the recorder and the report, so an event and its cause are measured on one time line.

Pure arithmetic on the host clock; never sleeps and never sets a node's clock."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScenarioClock:
    """Scenario time = (real time - t0) * scale. Boards get the same t0 and scale (SimBoard's
    t0_us and time_scale), so their clocks read scenario time too."""

    t0_us: int
    """Real Unix microseconds at scenario time 0 (whole seconds: boards derive their epoch)."""
    scale: float

    @classmethod
    def starting_in(cls, delay_s: float, scale: float) -> ScenarioClock:
        """A clock whose time 0 is the first whole second at least delay_s from now."""
        return cls(math.ceil(time.time() + delay_s) * 1_000_000, scale)

    @property
    def t0_s(self) -> int:
        return self.t0_us // 1_000_000

    def now(self) -> float:
        return (time.time_ns() // 1000 - self.t0_us) * self.scale / 1e6

    def real_s(self, scenario_s: float) -> float:
        """How many real seconds a stretch of scenario time takes."""
        return scenario_s / self.scale

    def wait_until(self, scenario_s: float) -> float:
        """Real seconds until scenario time reaches scenario_s (0 when it has)."""
        return max(0.0, (scenario_s - self.now()) / self.scale)

    def from_board_ts(self, unix_s: float) -> float:
        """Scenario time of a board's timestamp: a board's clock runs on scenario time
        from the epoch t0, so its Unix time minus t0 is scenario time."""
        return unix_s - self.t0_s

    def from_real_ts(self, unix_s: float) -> float:
        """Scenario time of a host timestamp (camera nodes run on the real clock)."""
        return (unix_s - self.t0_s) * self.scale
