"""The board's clock as an ESP32 has it: ticks wrap at 2**30, and the firmware's uptime and
offline time survive the wrap and the 6.2-day half period where a ticks_diff turns negative.

The real firmware under the real MicroPython, with the simulated time module of sim/upy."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sim.board import TICKS_PERIOD_MS, SimBoard, default_ticks_start_ms, run_upy
from sim.broker import MosquittoBroker
from tests.firmware_helpers import board, docs, online, wait_doc

_TICKS = """
import time
start = time.ticks_ms()
overflow = []
for d in (1 << 29, -(1 << 29), 1 << 40):
    try:
        time.ticks_add(0, d)
        overflow.append(False)
    except OverflowError:
        overflow.append(True)
time.sleep_ms(300)
now = time.ticks_ms()
print(start)
print(now)
print(time.ticks_diff(now, start))
print(time.ticks_add(%d, 1))
print(overflow)
print(time.ticks_diff(0, %d))
print(time.ticks_us() < %d)
"""


def test_simulated_ticks_wrap_at_the_esp32_period_and_reject_long_intervals(
        tmp_path: Path) -> None:
    top = TICKS_PERIOD_MS - 1
    out = run_upy(_TICKS % (top, top, TICKS_PERIOD_MS), tmp_path,
                  env={"SIM_TICKS_START_MS": str(TICKS_PERIOD_MS - 100)})
    start, now, diff, wrapped, overflow, back, us_small = out.strip().splitlines()
    assert TICKS_PERIOD_MS - 100 <= int(start) < TICKS_PERIOD_MS
    assert int(now) < 1000, "ticks_ms did not wrap at 2**30"
    assert 290 <= int(diff) <= 1000
    assert int(wrapped) == 0
    assert overflow.strip() == "[True, True, True]", "ticks_add took an interval the chip refuses"
    assert int(back) == 1
    assert us_small.strip() == "True"


_UPTIME = """
import app, time

class B:
    pass

b = B()
b.up_s = 0
b.up_ms = 0
b.offline_at = 0
b.clock_at = time.ticks_ms()
t = b.clock_at
step = 9999  # ms between loop passes, far longer than a real loop ever waits
n = 0
while n < 61000:  # 7 days and a bit
    t = time.ticks_add(t, step)
    app.Board._clock(b, t)
    n += 1
small = all(-(1 << 30) <= v < (1 << 30) for v in (b.up_s, b.up_ms, b.clock_at))
print(b.up_s, b.up_ms, app.Board.offline_s(b), small)
"""


def test_uptime_and_offline_time_count_past_6_2_days_across_many_wraps(tmp_path: Path) -> None:
    out = run_upy(_UPTIME, tmp_path, env={"SIM_TICKS_START_MS": str(TICKS_PERIOD_MS - 5)})
    up_s, up_ms, offline_s, small = out.split()
    total = 61000 * 9999
    assert (int(up_s), int(up_ms)) == (total // 1000, total % 1000)
    assert int(offline_s) == total // 1000, "offline time lost across the half period"
    assert small == "True", "a clock counter left the ESP32's small-int range"


def test_a_board_whose_clock_wraps_mid_alarm_keeps_uptime_and_durations_positive(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    def leak(b: SimBoard) -> None:
        b.ticks_start_ms = TICKS_PERIOD_MS - 4000  # wraps 4 s after power-on, mid-alarm
        b.set_gas_ppm(3000)

    with board(broker, tmp_path, "gas", config={"gas": {"warmup_s": 2}}, setup=leak) as (b, rec):
        online(rec)
        start = wait_doc(rec, "/event/gas", lambda d: d["phase"] == "start")
        time.sleep(max(0.0, 5.0 - start["uptime_ms"] / 1000))  # past the wrap
        b.set_gas_ppm(0)
        end = wait_doc(rec, "/event/gas", lambda d: d["phase"] == "end")
        assert end["event_id"] == start["event_id"]
        assert end["uptime_ms"] > 4000 > start["uptime_ms"] - 4000
        assert 0 < end["duration_s"] <= (end["uptime_ms"] - start["uptime_ms"]) / 1000 + 1
        ups = [d["uptime_ms"] for d in docs(rec, "/telemetry") if d["boot"] == end["boot"]]
        assert ups == sorted(ups) and all(u >= 0 for u in ups)
        assert "Traceback" not in b.log_text()


def test_default_clocks_start_within_a_minute_of_the_wrap_and_differ_per_node() -> None:
    starts = {default_ticks_start_ms(f"node-{i}") for i in range(50)}
    assert all(TICKS_PERIOD_MS - 60_000 <= s < TICKS_PERIOD_MS for s in starts)
    assert len(starts) > 40


def test_a_scenario_can_place_a_board_clock_and_refuses_it_on_cameras(tmp_path: Path) -> None:
    from sim.scenario import ScenarioError, load_scenario

    base = {"name": "t", "duration_s": 10,
            "nodes": [{"id": "g", "kind": "gas", "ticks_start_ms": 123}]}
    p = tmp_path / "s.toml"
    import tomli_w

    p.write_text(tomli_w.dumps(base))
    assert load_scenario(p).nodes[0].ticks_start_ms == 123
    bad = json.loads(json.dumps(base))
    bad["nodes"][0]["ticks_start_ms"] = TICKS_PERIOD_MS
    bad["nodes"].append({"id": "c", "kind": "camera", "config": "x.toml", "ticks_start_ms": 5})
    p.write_text(tomli_w.dumps(bad))
    try:
        load_scenario(p)
    except ScenarioError as e:
        text = "; ".join(e.errors)
    else:
        raise AssertionError("a clock past the period was accepted")
    assert "nodes[0].ticks_start_ms" in text


def test_the_small_int_check_flags_a_counter_past_2_30_and_nothing_in_a_normal_run(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    def near_limit(b: SimBoard) -> None:
        b.smallint_check = True
        b.flash.mkdir(parents=True, exist_ok=True)
        (b.flash / "boot").write_text(str((1 << 30) - 1))  # the next boot is 2**30

    with board(broker, tmp_path, "vibration", setup=near_limit) as (b, rec):
        online(rec)
        wait_doc(rec, "/telemetry", lambda d: True)
        time.sleep(2)
        assert b.smallint_flags() == {"app.board.boot": 1 << 30}
        assert "smallint: app.board.boot" in b.log_text()
        assert "MemoryError" not in b.log_text()

    def plain(b: SimBoard) -> None:
        b.smallint_check = True

    with board(broker, tmp_path, "vibration", node="b2", setup=plain) as (b, rec):
        online(rec)
        wait_doc(rec, "/telemetry", lambda d: d["node"] == "b2")
        time.sleep(2)
        assert b.smallint_flags() == {}
        assert "MemoryError" not in b.log_text() and b.exits == []
