"""The network calls that block or raise on an ESP32, under the simulator that makes them do so:
a broker named by host behind a slow or dead DNS, RSSI while not associated, periodic NTP
with a lost server. Real firmware (unix port, 64K heap), real Mosquitto."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sim.board import SimBoard, run_upy
from sim.broker import MosquittoBroker
from tests.firmware_helpers import board, docs, online, wait_doc
from tests.mqtt_helpers import Recorder

BROKER = "mqtt.site.test"
NTP = "pool.ntp.org"  # sntp.HOST
# An NTP exchange loads the simulated UDP socket, NTP server and RTC (sim/upy/_udp.py, _rtc.py:
# about 3.6 KB of the board's heap here, C in flash on an ESP32): these boards get the heap
# the simulator gives every board in a scenario.


def _dns_lines(b: SimBoard, host: str) -> list[tuple[str, int]]:
    """(outcome, ms) of every look-up of `host` the firmware logged."""
    return [(m.group(1), int(m.group(2))) for m in
            re.finditer(rf"^fw dns {re.escape(host)} (ok|failed \S+) ms (-?\d+)$",
                        b.log_text(), re.M)]


def _rtc_sets(b: SimBoard) -> list[tuple[int, float]]:
    """(step_ms, board time s) of every RTC set the simulated board reported."""
    return [(int(m.group(1)), int(m.group(2)) / 1000) for m in
            re.finditer(r"^rtc set step_ms=(-?\d+) t_ms=(\d+)$", b.log_text(), re.M)]


def _synced(b: SimBoard) -> list[float]:
    return [t for _, t in _rtc_sets(b)]


def _telemetry(rec: Recorder, pred: Callable[[list[dict[str, Any]]], bool],
               timeout: float = 30.0) -> list[dict[str, Any]]:
    """Telemetry received so far, in the board's order (uptime), once `pred` holds for it."""
    def ordered() -> list[dict[str, Any]]:
        return sorted(docs(rec, "/telemetry"), key=lambda d: (d["boot"], d["uptime_ms"]))

    rec.wait_for(lambda _: pred(ordered()), timeout)
    return ordered()


def test_a_broker_named_behind_a_6s_dns_connects_once_resolved_and_keeps_sampling(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    def slow_dns(b: SimBoard) -> None:
        b.dns(delay_ms=6000, hosts={BROKER: broker.host})

    with board(broker, tmp_path, "vibration", config={"broker_host": BROKER},
               setup=slow_dns) as (b, rec):
        birth = online(rec, 30)
        # The look-up held the loop for the DNS's 6 s, inside the 10 s watchdog: no reset.
        assert birth["boot"] == 1 and birth["reset_cause"] == "power_on"
        assert [o for o, _ in _dns_lines(b, BROKER)] == ["ok"]
        assert 5900 <= _dns_lines(b, BROKER)[0][1] < 7000
        after = _telemetry(rec, lambda ts: any(t["uptime_ms"] > 7000 for t in ts))
        first = next(t for t in after if t["uptime_ms"] > 7000)["metrics"]
        # No sample is skipped beyond the 6 s the look-up held the loop (600 at 100 Hz; the
        # ADXL345's FIFO gives some of them back).
        assert first["overruns"] <= 6000 // 10 + 50
        # A reconnect reuses the cached address: no second 6 s look-up.
        b.wifi(False)
        time.sleep(2)
        b.wifi(True)
        wait_doc(rec, "/status", lambda d: d["state"] == "online" and
                 len([x for x in docs(rec, "/status") if x["state"] == "online"]) >= 2, 30)
        n = len(after)
        last = _telemetry(rec, lambda ts: len(ts) >= n + 2)[-1]["metrics"]
        assert len(_dns_lines(b, BROKER)) == 1
        assert b.exits == [] and b.alive()
        assert last["overruns"] == first["overruns"]
        assert last["samples"] > first["samples"]


def test_a_dns_that_never_answers_holds_the_board_21s_and_the_watchdog_outlasts_it(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    def dead_dns(b: SimBoard) -> None:
        b.dns(fail=True, servers=3, hosts={BROKER: broker.host})

    # x4: the 21 s look-up takes 5 s of real time; the watchdog counts board time.
    with board(broker, tmp_path, "gas", config={"broker_host": BROKER}, setup=dead_dns,
               time_scale=4) as (b, rec):
        deadline = time.monotonic() + 20
        while not _dns_lines(b, BROKER) and time.monotonic() < deadline:
            time.sleep(0.2)
        outcome, ms = _dns_lines(b, BROKER)[0]
        # lwIP: 1+1+2+3 s on each of three servers, then EAI_FAIL (OSError -202)
        assert outcome == "failed -202" and 21000 <= ms < 22000
        assert re.search(r"^fw wdt 22000$", b.log_text(), re.M)  # raised from 10 s to fit it
        b.dns(fail=False)
        birth = online(rec, 30)  # the next look-up waits 30 s (7.5 s here) after a failed one
        assert birth["boot"] == 1 and b.exits == []
        assert [o for o, _ in _dns_lines(b, BROKER)] == ["failed -202", "ok"]


def test_hosts_the_watchdog_for_a_look_up_and_the_ntp_setting(tmp_path: Path) -> None:
    code = """
import commands, config, lookup, spec_gas as g
base = config.defaults(config.COMMON)
base["gas"] = config.defaults(g.SPEC)
for host in ("mqtt.example.com", "10.0.0.5", "bad host", "a..b", "-x.example.com", "m_q.t"):
    print(commands.host_ok(host))
def wdt(**kw):
    c = dict(base)
    c.update(kw)
    print(lookup.wdt_ms(c))
wdt(ntp=0)
wdt(ntp=0, broker_host="mqtt.example.com")
wdt(ntp=21600)
wdt(ntp=21600, wdt_timeout_ms=30000)
wdt(ntp=0, wdt_timeout_ms=3000)
for v in (True, False, 3600, 86401, -1):
    new, err = config.merge(base, "gas", g.SPEC, {"ntp": v}, g.cross)
    print(err or new["ntp"])
"""
    out = run_upy(code, tmp_path).splitlines()
    assert out[:6] == ["True", "True", "False", "False", "False", "False"]
    # Only a board that looks a name up (a named broker, or NTP) needs lwIP's 21 s + 1 s.
    assert out[6:11] == ["10000", "22000", "22000", "30000", "3000"]
    # `ntp` is the seconds between syncs (0: off); older configs' true/false still load.
    bad = "ntp: must be in 0..86400"
    assert out[11:] == ["21600", "0", "3600", bad, bad]


def test_rssi_raises_while_not_associated_and_telemetry_reports_null(tmp_path: Path) -> None:
    code = """
import json, network, telemetry
w = network.WLAN(network.STA_IF)
try:
    w.status("rssi")
    print("no error")
except OSError as e:
    print("OSError", e)
class Q:
    drops_telemetry = drops_alarm = 0
    def depth(self):
        return 0
class S:
    def metrics(self, m):
        pass
class C:
    host = "10.0.0.9"
    port = 1883
class B:
    kind = "gas"
    client = C()
    boot = heap_min = mqtt_reconnects = wifi_reconnects = loop_errors = 1
    reset_cause = "power_on"
    version = "x"
    outbox = Q()
    sensor = S()
    wlan = w
    wifi_up = True  # the loop saw the link a moment ago; the station has left since
    def _base(self):
        return {"uptime_ms": 5}
    def online(self):
        return True
b = B()
print(json.loads(telemetry.build(b))["metrics"]["rssi_dbm"])
w.active(True)
w.connect("safecity", "")
import time
time.sleep_ms(400)  # associated and addressed (the simulated DHCP takes 300 ms)
print(w.status("rssi"), json.loads(telemetry.build(b))["metrics"]["rssi_dbm"])
"""
    out = run_upy(code, tmp_path).splitlines()
    assert out == ["OSError Wifi Not Connected", "None", "-60 -60"]


def test_telemetry_while_wifi_is_down_has_null_rssi_and_the_board_keeps_going(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "gas", setup=lambda b: b.wifi(False)) as (b, rec):
        time.sleep(7)  # one telemetry report (5 s) built while not associated
        b.wifi(True)
        online(rec, 20)
        late = wait_doc(rec, "/telemetry", lambda d: d.get("historical") is True, 20)
        assert late["metrics"]["rssi_dbm"] is None
        live = wait_doc(rec, "/telemetry", lambda d: "historical" not in d, 20)
        assert live["metrics"]["rssi_dbm"] == -61
        assert b.exits == []


@pytest.mark.parametrize("offset_ms", [0, 1500])
def test_ntp_resyncs_every_interval_and_sets_the_clock_to_the_server(
        broker: MosquittoBroker, tmp_path: Path, offset_ms: int) -> None:
    def ntp(b: SimBoard) -> None:
        b.dns(hosts={NTP: "10.0.0.1"})
        b.ntp(rtt_ms=40, offset_ms=offset_ms)

    cfg = {"ntp": 60, "telemetry_interval_s": 30}  # seconds between syncs
    with board(broker, tmp_path, "gas", config=cfg, setup=ntp, time_scale=10) as (b, rec):
        online(rec, 20)
        deadline = time.monotonic() + 40  # 3 exchanges 60 s apart at x10: 12 s
        while len(_synced(b)) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        synced = _synced(b)
        assert len(synced) >= 3
        # One exchange per `ntp` seconds of board time.
        gaps = [t1 - t0 for t0, t1 in zip(synced, synced[1:], strict=False)]
        assert all(59.0 <= g <= 61.5 for g in gaps), gaps
        # Set to the server's clock (it is offset_ms from world UTC) within half the 100 ms
        # network step the answer may wait to be read (the firmware adds half the round trip).
        # The simulated RTC is not applied to time.time(), so every set shows the offset.
        logged = re.findall(r"^fw ntp synced step_ms (-?\d+) rtt_ms (\d+)$", b.log_text(), re.M)
        assert len(logged) == len(synced)
        steps = [s for s, _ in _rtc_sets(b)]
        assert all(abs(s - offset_ms) <= 60 for s in steps), steps
        # The name was looked up once for all the exchanges.
        assert [o for o, _ in _dns_lines(b, NTP)] == ["ok"]
        assert b.exits == []


def test_a_lost_ntp_server_never_holds_the_sampling_loop(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    def lost(b: SimBoard) -> None:
        b.dns(hosts={NTP: "10.0.0.1"})
        b.ntp(lost=True)

    cfg = {"ntp": 60}
    with board(broker, tmp_path, "vibration", config=cfg, setup=lost) as (b, rec):
        online(rec, 20)
        # Telemetry at boot, before the exchange, and 5 s later, after it gave up.
        t = _telemetry(rec, lambda ts: len(ts) >= 2)
        failed = re.findall(r"^fw ntp failed no answer in 2000 ms retry_s (\d+)$",
                            b.log_text(), re.M)
        assert failed == ["60"]
        before, after = t[0]["metrics"], t[1]["metrics"]
        assert "fw ntp synced" not in b.log_text()
        # The 2 s spent waiting for the answer were spent sampling: nothing skipped.
        assert after["overruns"] == before["overruns"]
        assert b.exits == []
