"""A battery flood board (deep_sleep) under the real firmware and a real broker: each wake is
bounded whether the network is up or not, the platform can tell a sleeping board from a dead
one, and a flood during an outage is stored over sleeps and delivered, end included."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sim.board import EXIT_DEEPSLEEP, SimBoard
from sim.broker import MosquittoBroker
from tests.firmware_helpers import board, docs, wait_doc
from tests.mqtt_helpers import Recorder

AWAKE_MAX_S = 2
SLEEP_S = 10
DEBOUNCE_S = 0.5
LATE_S = 0.2
"""The loop looks at its budget every pass (20 ms at most between passes); this allows a few
passes of a busy host, far below what a missed bound would add (a whole sleep period)."""
BATTERY = {"telemetry_interval_s": 5, "keepalive_s": 10,
           "flood": {"deep_sleep": True, "sleep_s": SLEEP_S, "alarm_sleep_s": SLEEP_S,
                     "awake_max_s": AWAKE_MAX_S, "float_on_ms": 200,
                     "float_off_ms": int(DEBOUNCE_S * 1000), "probe_ms": 200, "stuck_s": 60}}


@contextmanager
def battery_board(broker: MosquittoBroker, tmp: Path, wifi: bool = True
                  ) -> Iterator[tuple[SimBoard, Recorder]]:
    with board(broker, tmp, "flood", node="bat", config=BATTERY,
               setup=lambda b: b.wifi(wifi)) as (b, rec):
        yield b, rec


def wakes(b: SimBoard) -> list[tuple[float, float]]:
    """(start, end) board seconds of each run of the board that ended in deep sleep."""
    starts = [float(t) for t in re.findall(r"--- start cause=\d+ t=([\d.]+)", b.log_text())]
    return [(s, e) for s, (e, rc) in zip(starts, b.exits, strict=False) if rc == EXIT_DEEPSLEEP]


def awake_s(b: SimBoard) -> list[float]:
    """Seconds each wake lasted by the firmware's own uptime, as it went to sleep (the
    interpreter's start before the firmware runs is not the firmware's to bound)."""
    return [int(ms) / 1000 for ms in re.findall(r"fw deepsleep \d+ \w+ awake_ms (\d+)",
                                                b.log_text())]


def wait_until(cond: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def retained_status(broker: MosquittoBroker) -> dict[str, Any]:
    rec = Recorder(broker.host, broker.port, "safecity/v1/test/bat/status")
    try:
        rec.wait_for(lambda ms: bool(ms), 5)
        m = rec.matching("/status")[0]
        assert m.retain
        return m.json()  # type: ignore[no-any-return]
    finally:
        rec.close()


def test_a_battery_board_leaves_a_retained_sleeping_status_and_is_back_by_its_wake_time(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with battery_board(broker, tmp_path) as (b, rec):
        wait_doc(rec, "/status", lambda d: d["state"] == "online")
        asleep = wait_doc(rec, "/status", lambda d: d["state"] == "sleeping")
        assert asleep["sleep_s"] == SLEEP_S and asleep["boot"] == 1
        assert abs(_ts(asleep["wake_by"]) - _ts(asleep["ts"]) - SLEEP_S) <= 1
        wait_until(lambda: wakes(b), 10, "the first deep sleep")
        assert awake_s(b)[0] < AWAKE_MAX_S
        assert retained_status(broker)["state"] == "sleeping", \
            "a clean DISCONNECT left the retained status online"
        back = wait_doc(rec, "/status", lambda d: d["state"] == "online" and d["boot"] == 2,
                        SLEEP_S + 10)
        assert back["reset_cause"] == "deep_sleep"
        assert _ts(back["ts"]) <= _ts(asleep["wake_by"]) + AWAKE_MAX_S
        assert docs(rec, "/telemetry")[0]["boot"] == 1
        wait_doc(rec, "/telemetry", lambda d: d["boot"] == 2, 5)  # each wake reports


def test_offline_wakes_stay_bounded_and_a_flood_in_the_outage_arrives_with_its_end(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with battery_board(broker, tmp_path, wifi=False) as (b, rec):
        wait_until(lambda: wakes(b), 10, "a deep sleep with the network down")
        assert AWAKE_MAX_S <= awake_s(b)[0] <= AWAKE_MAX_S + LATE_S, \
            "the board stayed awake waiting for WiFi"
        b.set_float(True)  # water while it sleeps: ext0 wakes it at once
        wait_until(lambda: len(wakes(b)) >= 2, 10, "the flood wake and its sleep")
        assert wakes(b)[1][0] - wakes(b)[0][1] < 1.0, "the float did not wake the board"
        assert awake_s(b)[1] <= AWAKE_MAX_S + DEBOUNCE_S + LATE_S
        assert "event flood start" in b.log_text()
        assert docs(rec, "/event/flood") == []
        b.wifi(True)  # the network is back: the next (alarm) wake delivers the alarm
        flood = wait_doc(rec, "/event/flood", lambda d: d["phase"] == "start", SLEEP_S + 10)
        assert flood["historical"] is True and flood["details"]["source"] == "float"
        wait_doc(rec, "/status", lambda d: d["state"] == "sleeping", 10)
        b.set_float(False)  # the water has gone: the float wakes it to send the end
        end_doc = wait_doc(rec, "/event/flood", lambda d: d["phase"] == "end", 15)
        assert end_doc["event_id"] == flood["event_id"]
        assert end_doc["duration_s"] >= SLEEP_S / 2, "the alarm's age was lost in the sleeps"
        assert all(a <= AWAKE_MAX_S + DEBOUNCE_S + LATE_S for a in awake_s(b)), awake_s(b)
