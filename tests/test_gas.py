"""The gas board's sensing under the real MicroPython (-X heapsize=64K): the real `Gas`
class, the simulated ESP32 ADC, and a clock that wraps at 2**30 ms like the ESP32's.

Drives the firmware sample by sample (slow leaks, open and shorted sensors at the levels the
chip reads, warm-up by reset cause, more than 6.2 days of uptime), then whole boards against
a real broker (warm-up after a watchdog reset, calibrate refused in alarm)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish

from sim.board import WDT_RESET, run_upy
from sim.broker import MosquittoBroker
from tests.firmware_helpers import board, docs, online, wait_doc

# A `time` module for the snippet's directory (first on sys.path, so it replaces the
# built-in): ticks in ms wrapping at 2**30 with the ESP32 port's ticks_diff/ticks_add.
FAKE_TIME = """
_PERIOD = 1 << 30
_MASK = _PERIOD - 1
_HALF = _PERIOD >> 1
now = [0]


def ticks_ms():
    return now[0] & _MASK


def ticks_us():
    return (now[0] * 1000) & _MASK


def ticks_add(a, b):
    return (a + b) & _MASK


def ticks_diff(a, b):
    return ((a - b + _HALF) & _MASK) - _HALF


def sleep_us(us):
    pass


def sleep_ms(ms):
    pass
"""

# Runs in MicroPython: a Gas board whose ADC pin follows `volts(t_s)`; prints every event
# as one JSON line, then the final metrics.
DRIVER = """
import json, time, _sim, config, spec_gas, gas
cfg = {{"gas": config.defaults(spec_gas.SPEC)}}
cfg["gas"].update({settings})
events = []
up = [0]


def emit(etype, phase, severity, details, event_id=None, duration_s=None):
    event_id = event_id or "e%d" % (len(events) + 1)
    events.append({{"t_s": up[0] // 1000, "type": etype, "phase": phase,
                    "severity": severity, "details": details, "event_id": event_id,
                    "duration_s": duration_s}})
    return event_id


time.now[0] = {start_ms}
_sim.ctl.state = {{"adc": {{"34": 0.0}}}}
g = gas.Gas(cfg, {{"pins": {{"gas_adc": 34}}, "gas_divider": 1.5}}, emit)
step = cfg["gas"]["sample_ms"]
adc = _sim.ctl.state["adc"]
{volts}
while up[0] <= {until_ms}:
    adc["34"] = volts(up[0] // 1000)
    g.tick(time.ticks_ms())
    up[0] += step
    time.now[0] += step
for e in events:
    print(json.dumps(e))
m = {{}}
g.metrics(m)
print(json.dumps({{"metrics": m}}))
"""

CLEAN_V = 0.3078  # clean air at the pin: Rs = 9.83 R0, 10k load, 5 V, divider 1.5


def pin_volts(ppm: float, r0: float = 10000.0) -> float:
    """Pin volts of the default MQ curve at ppm (as sim.board.gas_pin_volts)."""
    ratio = 9.83 if ppm <= 0 else min(9.83, (ppm / 574.25) ** (1 / -2.222))
    rs = ratio * r0
    return 5.0 * 10000.0 / (rs + 10000.0) / 1.5


def drive(tmp: Path, volts: str, until_s: float, settings: dict[str, Any] | None = None,
          start_ms: int = 0, cause: int = 1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the firmware's Gas through `volts` (MicroPython source of `def volts(t_s)`)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "time.py").write_text(FAKE_TIME)
    code = DRIVER.format(settings=json.dumps(settings or {}), start_ms=start_ms,
                         volts=volts, until_ms=int(until_s * 1000))
    out = run_upy(code, tmp, env={"SIM_RESET_CAUSE": str(cause)}, timeout=300)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [r for r in rows if "type" in r], rows[-1]["metrics"]


def _ramp_src(peak_ppm: float, at_s: int, ramp_s: int, hold_s: int) -> str:
    """MicroPython `volts(t_s)`: clean air, then a linear rise to peak_ppm, held, then clean
    (the same MQ curve as pin_volts)."""
    return ("def volts(t):\n"
            f"    if t <= {at_s} or t >= {at_s + ramp_s + hold_s}:\n"
            f"        return {CLEAN_V}\n"
            f"    ppm = {peak_ppm} * min(1.0, (t - {at_s}) / {ramp_s})\n"
            "    ratio = min(9.83, (ppm / 574.25) ** (1 / -2.222))\n"
            "    return 5.0 * 10000.0 / (ratio * 10000.0 + 10000.0) / 1.5\n")


def test_a_slow_leak_alarms_when_it_crosses_the_threshold_and_the_baseline_stays_bounded(
        tmp_path: Path) -> None:
    # 0 to 3000 ppm over 2 hours from t = 600 s: 1000 ppm is crossed 2400 s into the ramp.
    events, m = drive(tmp_path, _ramp_src(3000, 600, 7200, 600), 8400)
    starts = [e for e in events if e["type"] == "gas" and e["phase"] == "start"]
    assert len(starts) == 1, events
    assert 600 + 2400 - 60 <= starts[0]["t_s"] <= 600 + 2400 + 120, starts[0]
    assert starts[0]["details"]["level"] == "alarm"
    ends = [e for e in events if e["type"] == "gas" and e["phase"] == "end"]
    assert len(ends) == 1 and ends[0]["event_id"] == starts[0]["event_id"]
    assert abs(m["gas_r0_drift_pct"]) <= 10.0  # the cap on R0 drift


def test_clean_air_drift_is_followed_but_never_past_its_cap(tmp_path: Path) -> None:
    # The sensing element ages: clean-air Rs falls 30 % over a day. R0 follows at most
    # 10 % (its cap) and the board raises no gas alarm for clean air.
    src = ("def volts(t):\n"
           "    rs = 98300.0 * (1 - 0.3 * min(1.0, t / 86400))\n"
           "    return 5.0 * 10000.0 / (rs + 10000.0) / 1.5\n")
    events, m = drive(tmp_path, src, 2 * 86400, {"sample_ms": 10000})
    assert [e for e in events if e["type"] == "gas"] == []
    assert -10.01 <= m["gas_r0_drift_pct"] <= -9.0, m


def test_open_and_shorted_sensors_are_faults_at_the_levels_the_adc_reads_never_gas(
        tmp_path: Path) -> None:
    # Open: the pin falls to 0 V (the ADC reads its 0.142 V floor). Short: AOUT at the 5 V
    # supply, 3.33 V at the pin (the ADC reads its ceiling). Each for 20 s, clean air between.
    src = ("def volts(t):\n"
           "    if 100 <= t < 120:\n"
           "        return 0.0\n"
           "    if 200 <= t < 220:\n"
           "        return 5.0 / 1.5\n"
           f"    return {CLEAN_V}\n")
    events, m = drive(tmp_path, src, 300)
    assert [e for e in events if e["type"] == "gas"] == [], "a broken sensor raised gas"
    faults = [(e["phase"], e["details"]["fault"], e["t_s"]) for e in events]
    assert [f[:2] for f in faults] == [("start", "open"), ("end", "open"),
                                       ("start", "short"), ("end", "short")]
    assert 100 <= faults[0][2] <= 103 and 200 <= faults[2][2] <= 203
    opened = events[0]["details"]["value"]
    shorted = events[2]["details"]["value"]
    assert 0.14 <= opened <= 0.15, "an open pin reads the calibration floor"
    assert 3.05 <= shorted <= 3.22, "a shorted sensor reads the ADC's ceiling"
    assert 18 <= events[1]["duration_s"] <= 24
    assert m["gas_state"] == "ok"


def test_a_short_during_a_leak_holds_the_alarm_until_the_sensor_reads_clean_air(
        tmp_path: Path) -> None:
    src = ("def volts(t):\n"
           "    if 100 <= t < 130:\n"
           f"        return {pin_volts(3000)}\n"
           "    if 130 <= t < 160:\n"
           "        return 5.0 / 1.5\n"
           f"    return {CLEAN_V}\n")
    events, _ = drive(tmp_path, src, 240)
    kinds = [(e["type"], e["phase"]) for e in events]
    assert kinds == [("gas", "start"), ("sensor_fault", "start"), ("sensor_fault", "end"),
                     ("gas", "end")], kinds
    assert events[3]["t_s"] >= 162 and 60 <= events[3]["duration_s"] <= 68


def test_warm_up_is_short_after_a_watchdog_reset_and_full_after_power_on(
        tmp_path: Path) -> None:
    src = f"def volts(t):\n    return {pin_volts(3000)}\n"
    settings = {"warmup_s": 120, "warmup_hot_s": 5}
    cold, _ = drive(tmp_path / "cold", src, 200, settings, cause=1)
    hot, _ = drive(tmp_path / "hot", src, 200, settings, cause=3)
    asleep, _ = drive(tmp_path / "sleep", src, 200, settings, cause=4)
    assert 120 <= cold[0]["t_s"] <= 122 and 120 <= asleep[0]["t_s"] <= 122
    assert 5 <= hot[0]["t_s"] <= 7
    assert all(e["type"] == "gas" for e in cold + hot + asleep)


def test_a_leak_after_6_2_days_on_a_wrapping_clock_alarms_and_ends_with_true_durations(
        tmp_path: Path) -> None:
    # Start 3 h before the 2**30 ms wrap; the leak comes 6.3 days after boot (past the
    # 2**29 ms half period, where ticks_diff against boot turns negative) and lasts 30 min;
    # an hour later the sensor is open for 2 min.
    day = 86400
    leak_at = int(6.3 * day)
    src = ("def volts(t):\n"
           f"    if {leak_at} <= t < {leak_at + 1800}:\n"
           f"        return {pin_volts(3000)}\n"
           f"    if {leak_at + 3600} <= t < {leak_at + 3720}:\n"
           "        return 0.0\n"
           f"    return {CLEAN_V}\n")
    events, m = drive(tmp_path, src, leak_at + 2 * 3600, {"sample_ms": 30000},
                      start_ms=(1 << 30) - 3 * 3600 * 1000)
    kinds = [(e["type"], e["phase"]) for e in events]
    assert kinds == [("gas", "start"), ("gas", "end"), ("sensor_fault", "start"),
                     ("sensor_fault", "end")], kinds
    start, end, fs, fe = events
    assert leak_at <= start["t_s"] <= leak_at + 30
    assert leak_at + 1800 <= end["t_s"] <= leak_at + 1830
    assert end["event_id"] == start["event_id"]
    assert 1800 - 30 <= end["duration_s"] <= 1800 + 30
    # confirmed on the third open reading (60 s in), over after three good ones
    assert 120 - 30 <= fe["duration_s"] <= 120 + 30 and fe["event_id"] == fs["event_id"]
    assert m["gas_state"] == "ok"


def test_the_simulated_adc_reads_like_an_esp32_at_11_db(tmp_path: Path) -> None:
    code = """
import json, machine, _sim
a = machine.ADC(machine.Pin(34), atten=machine.ADC.ATTN_11DB)
out = {}
for v in (0.0, 0.1, 0.3078, 1.0, 2.0, 2.45, 2.8, 3.0, 3.3333, 5.0):
    _sim.ctl.state = {"adc": {"34": v}}
    uv = [a.read_uv() for _ in range(40)]
    raw = [a.read() for _ in range(40)]
    u16 = [a.read_u16() for _ in range(40)]
    out[str(v)] = [min(uv), max(uv), min(raw), max(raw), min(u16), max(u16)]
print(json.dumps(out))
"""
    out = json.loads(run_upy(code, tmp_path))
    for v, (lo, hi, rlo, rhi, ulo, uhi) in out.items():
        volts = float(v)
        assert lo % 1000 == 0 and hi % 1000 == 0, "read_uv is whole millivolts"
        assert 0 <= rlo <= rhi <= 4095
        # read_u16 scales the same 12-bit count: raw << 4 | raw >> 8 (noise: +-3 counts)
        assert (max(0, rlo - 6) << 4) <= ulo <= uhi <= (min(4095, rhi + 6) << 4 | 15)
        if volts <= 0.142:
            assert (lo, rlo) == (142000, 0), "below the floor the ESP32 reads 0.142 V"
            assert hi <= 146000 and uhi <= 6 << 4
        elif volts <= 2.45:
            assert abs((lo + hi) / 2e6 - volts) <= 0.006, (v, lo, hi)
            assert hi - lo >= 1000, "no noise"
        elif volts < 3.2:
            assert (lo + hi) / 2e6 < volts - 0.005, "no compression above 2.45 V"
        else:
            assert 3.1e6 <= lo <= hi <= 3.14e6 and rhi == 4095, "ceiling"
            assert uhi == 65535


# -- on a running board: the real firmware against a real broker ----------------------------


def test_a_watchdog_reset_warms_up_briefly_and_a_power_cycle_fully(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    cfg = {"gas": {"warmup_s": 40, "warmup_hot_s": 1}}
    with board(broker, tmp_path, "gas", config=cfg,
               setup=lambda b: b.set_gas_ppm(3000)) as (b, rec):
        first = online(rec)
        assert first["reset_cause"] == "power_on"
        time.sleep(4)
        assert docs(rec, "/event/gas") == [], "gas reported while the heater was cold"
        b.kill()
        with b._lock:  # the watchdog fired: the 5 V heater stayed on
            b._auto = True
            b._launch(WDT_RESET)
        hot = wait_doc(rec, "/status", lambda d: d["state"] == "online" and d["boot"] == 2)
        assert hot["reset_cause"] == "watchdog"
        start = wait_doc(rec, "/event/gas", lambda d: d["phase"] == "start", 15)
        assert start["boot"] == 2 and start["uptime_ms"] < 15000
        b.restart()  # power cycle: a cold heater again
        wait_doc(rec, "/status", lambda d: d["state"] == "online" and d["boot"] == 3)
        time.sleep(4)
        assert [d for d in docs(rec, "/event/gas") if d["boot"] == 3] == []
        tele = wait_doc(rec, "/telemetry", lambda d: d["boot"] == 3)
        assert tele["metrics"]["gas_state"] == "warming_up"


def _cmd(broker: MosquittoBroker, cmd: dict[str, Any]) -> None:
    publish.single("safecity/v1/test/b1/cmd", json.dumps(cmd), qos=1, hostname=broker.host,
                   port=broker.port)


def test_calibrate_is_refused_while_the_board_is_in_alarm(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "gas") as (b, rec):
        online(rec)
        b.set_gas_ppm(3000)
        wait_doc(rec, "/event/gas", lambda d: d["phase"] == "start")
        _cmd(broker, {"id": "cal-1", "cmd": "calibrate"})
        ack = wait_doc(rec, "/cmd/ack", lambda d: d["id"] == "cal-1")
        assert ack["ok"] is False and ack["error"]["code"] == "rejected"
        assert "alarm" in ack["error"]["message"]
        _cmd(broker, {"id": "cfg-1", "cmd": "get_config"})
        cfg = wait_doc(rec, "/cmd/ack", lambda d: d["id"] == "cfg-1")["result"]
        assert cfg["gas"]["r0_ohm"] == 10000.0, "the leak was stored as clean air"
        b.set_gas_ppm(0)
        wait_doc(rec, "/event/gas", lambda d: d["phase"] == "end")
        _cmd(broker, {"id": "cal-2", "cmd": "calibrate"})
        ok = wait_doc(rec, "/cmd/ack", lambda d: d["id"] == "cal-2")
        assert ok["ok"] is True and 9000 <= ok["result"]["r0_ohm"] <= 11000
