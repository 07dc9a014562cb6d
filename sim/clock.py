"""The scenario clock: simulated seconds since a run's start, shared by the runner, the boards,
the recorder and the report, so an event and its cause are measured on one time line. It can
jump ahead over stretches where nothing runs (every board in deep sleep).

Pure arithmetic on the host clock; never sleeps, never goes back, and never sets a node's
clock (a board woken after a jump starts with its t0 shifted by it: SimBoard.skip_s)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass(slots=True)
class ScenarioClock:
    """Scenario time = (real time - t0) * scale + skipped. Boards get the same t0 and scale
    (SimBoard's t0_us and time_scale) and the skipped time (SimBoard.skip_s), so their clocks
    read scenario time too."""

    t0_us: int
    """Real Unix microseconds at scenario time 0 (whole seconds: boards derive their epoch)."""
    scale: float
    skipped_s: float = 0.0
    """Scenario seconds jumped over (skip_to) since time 0."""

    @classmethod
    def starting_in(cls, delay_s: float, scale: float) -> ScenarioClock:
        """A clock whose time 0 is the first whole second at least delay_s from now."""
        return cls(math.ceil(time.time() + delay_s) * 1_000_000, scale)

    @property
    def t0_s(self) -> int:
        return self.t0_us // 1_000_000

    def now(self) -> float:
        return (time.time_ns() // 1000 - self.t0_us) * self.scale / 1e6 + self.skipped_s

    def skip_to(self, scenario_s: float) -> float:
        """Jump ahead so that scenario time reads scenario_s now; returns the seconds skipped
        (0 if that time has already come: the clock never goes back)."""
        gap = scenario_s - self.now()
        if gap <= 0:
            return 0.0
        self.skipped_s += gap
        return gap

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
        """Scenario time of a host timestamp (camera nodes run on the real clock; a run
        with camera nodes never skips)."""
        return (unix_s - self.t0_s) * self.scale + self.skipped_s
