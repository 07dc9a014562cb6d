"""Skipping the time in which every board sleeps: the scenario clock jumps and never goes
back, a board woken after a jump reads scenario time, and the jump never passes the moment
the float could wake a sleeping board."""

from __future__ import annotations

import time
from pathlib import Path

from sim.board import SimBoard
from sim.clock import ScenarioClock
from sim.inputs import FloodFeed
from sim.physics import FlashFlood, Recording


def test_the_clock_jumps_ahead_and_never_back() -> None:
    c = ScenarioClock(time.time_ns() // 1000, 10.0)
    t = c.now()
    gap = c.skip_to(t + 3600)
    assert 3599 < gap <= 3600
    assert 3600 <= c.now() - t < 3601
    assert c.skip_to(10.0) == 0.0, "a jump back was taken"
    assert c.now() - t >= 3600
    assert c.wait_until(c.now() + 50) <= 5.0  # waiting still runs at the time scale
    # boards stamp scenario time from the epoch t0: their timestamps map straight through
    assert c.from_board_ts(c.t0_s + 7200.5) == 7200.5


def test_a_board_after_a_jump_reads_the_scenario_clock(tmp_path: Path) -> None:
    c = ScenarioClock(time.time_ns() // 1000, 6.0)
    b = SimBoard("flood", "f", "127.0.0.1", 1883, tmp_path / "f",
                 time_scale=6.0, t0_us=c.t0_us, defaults={"flood": {}})
    c.skip_to(c.now() + 86_400)
    b.skip_s = c.skipped_s
    assert abs(b.board_time() - c.now()) < 0.01


def _feed(floods: list[tuple[FlashFlood, float]], tmp_path: Path) -> FloodFeed:
    b = SimBoard("flood", "f", "127.0.0.1", 1883, tmp_path / "f",
                 defaults={"flood": {"probe_offset_v": 0.1, "probe_cm_per_v": 20.0,
                                     "float_active_low": True}})
    b.flash.mkdir(parents=True)
    (b.dir / "ctl.gen").write_bytes(b"\0\0\0\0")
    return FloodFeed("f", b, floods)


def test_the_jump_stops_where_the_float_can_first_reach_the_wake_level(tmp_path: Path) -> None:
    flood = FlashFlood(1000.0, rise_cm_per_min=30, crest_cm=40, hold_s=600,
                       recede_cm_per_min=2)
    feed = _feed([(flood, 5.0)], tmp_path)
    wet, dry = 0, 1  # active low: closed (water) reads 0

    def first(level: int, t0: float, t1: float) -> float | None:
        t = t0
        while t <= t1:  # brute force, 0.1 s steps
            if feed._float_level(t) == level:
                return t
            t += 0.1
        return None

    for level, t0, t1 in ((wet, 0.0, 10_000.0), (dry, 1100.0, 10_000.0), (wet, 0.0, 900.0),
                          (dry, 0.0, 10.0), (wet, 5000.0, 9000.0)):
        got = feed.next_float_level(level, t0, t1)
        want = first(level, t0, t1)
        if want is None:
            assert got is None, (level, t0, t1, got)
        else:
            assert got is not None and want - 0.1 <= got <= want, (level, t0, t1, got, want)
    feed.fault("sensor_disconnected", "float", True, 1100.0)  # cut: pulled up, reads dry
    assert feed.next_float_level(wet, 1100.0, 10_000.0) is None
    assert feed.next_float_level(dry, 1100.0, 10_000.0) == 1100.0
    feed.fault("sensor_chatter", "float", True, 1100.0)  # noise reaches any level at once
    assert feed.next_float_level(wet, 1100.0, 10_000.0) == 1100.0


def test_a_recorded_level_stops_the_jump_while_it_plays(tmp_path: Path) -> None:
    rec = Recording(5000.0, [0.0, 60.0, 120.0], [[0.0, 30.0, 0.0]])
    feed = _feed([(rec, 5.0)], tmp_path)
    assert feed.next_float_level(0, 0.0, 10_000.0) == 5000.0  # not past its start
    assert feed.next_float_level(0, 5050.0, 10_000.0) == 5050.0  # nor through it
    assert feed.next_float_level(0, 6000.0, 10_000.0) is None  # over: only silence follows
