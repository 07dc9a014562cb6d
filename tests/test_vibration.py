"""The vibration board's sensing under the real MicroPython (-X heapsize=64K): the real
`Vibration` class fed sample by sample from the simulator's physics (no broker), the
ADXL345 FIFO model under flash stalls, and counters near the 31-bit small-int limit."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Any

import pytest

from sim.board import run_upy
from sim.physics import Earthquake, Footsteps, Impulse, Machinery, Recording
from tests.conftest import ROOT

RATE = 50  # the firmware's default output data rate
Source = Earthquake | Machinery | Impulse | Footsteps | Recording

DRIVER = """
import json, config, spec_vibration, vibration
cfg = {{"vibration": config.defaults(spec_vibration.SPEC)}}
cfg["vibration"].update({settings})
rate = cfg["vibration"]["rate_hz"]
events = []
n = [0]


def emit(etype, phase, severity, details, event_id=None, duration_s=None):
    event_id = event_id or "e%d" % (len(events) + 1)
    events.append({{"t": n[0] / rate, "type": etype, "phase": phase, "severity": severity,
                    "event_id": event_id, "details": details}})
    return event_id


v = vibration.Vibration(cfg, {{"pins": {{"sda": 21, "scl": 22}}}}, emit)
buf = bytearray(6)
with open("signal.bin", "rb") as f:
    while f.readinto(buf) == 6:
        v.sample(buf)
        n[0] += 1
for e in events:
    print(json.dumps(e))
"""


def run_signal(tmp: Path, sources: list[Source], seconds: float, rate: int = RATE,
               settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Feed `seconds` of the summed sources (plus gravity on z and +-1 count of noise, as
    the simulated ADXL345 gives) to a Vibration object; returns its events."""
    rng = random.Random(3)
    buf = bytearray()
    for i in range(int(seconds * rate)):
        t = i / rate
        x = y = z = 0.0
        for s in sources:
            a = s.accel_g(t)
            x, y, z = x + a[0], y + a[1], z + a[2]
        counts = (round(x * 256), round(y * 256), 256 + round(z * 256))
        buf += struct.pack("<hhh", *(max(-2048, min(2047, c + rng.randint(-1, 1)))
                                     for c in counts))
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "signal.bin").write_bytes(bytes(buf))
    cfg = {"rate_hz": rate, **(settings or {})}
    out = run_upy(DRIVER.format(settings=json.dumps(cfg)), tmp, timeout=300)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def vib(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "vibration"]


def critical(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in vib(events) if e["severity"] == "critical"]


def starts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in vib(events) if e["phase"] == "start"]


def test_steady_machinery_for_ten_minutes_raises_at_most_one_event_and_no_alarm(
        tmp_path: Path) -> None:
    ev = run_signal(tmp_path, [Machinery(at_s=40, amplitude_g=0.05, duration_s=600)], 660)
    assert len(starts(ev)) <= 1, vib(ev)
    assert critical(ev) == [], vib(ev)


def test_machinery_that_grows_becomes_critical(tmp_path: Path) -> None:
    ev = run_signal(tmp_path, [Machinery(at_s=40, amplitude_g=0.05, duration_s=600),
                               Machinery(at_s=240, amplitude_g=0.12, freq_hz=9, duration_s=60)],
                    330)
    crit = critical(ev)
    assert crit and all(e["t"] >= 240 for e in crit), vib(ev)


@pytest.mark.parametrize("rate", [50, 100])
def test_a_door_slam_and_footsteps_raise_no_critical_event(tmp_path: Path, rate: int) -> None:
    ev = run_signal(tmp_path, [Impulse(at_s=40, peak_g=0.3, width_ms=60),
                               Footsteps(at_s=60, amplitude_g=0.04, duration_s=10),
                               Impulse(at_s=90, peak_g=0.3, width_ms=60)], 110, rate)
    assert critical(ev) == [], vib(ev)


@pytest.mark.parametrize("rate", [50, 100])
def test_an_earthquake_alarms_within_one_second_of_its_strong_motion(
        tmp_path: Path, rate: int) -> None:
    q = Earthquake(at_s=40, peak_g=0.12, s_delay_s=4, duration_s=12)
    ev = run_signal(tmp_path, [q], 70, rate)
    s_arrival = q.at_s + q.s_delay_s
    crit = critical(ev)
    assert crit, vib(ev)
    assert s_arrival <= crit[0]["t"] <= s_arrival + 1.0, vib(ev)


def ridgecrest(at_s: float, peak_g: float) -> Recording:
    """The Ridgecrest M7.1 record at CI.CCC (sim/scenarios/records/README.md): first
    arrival 10.00 s into the record, strong motion (Arias 5%) from 18.85 s."""
    lines = (ROOT / "sim" / "scenarios" / "records" / "ridgecrest-ccc.csv").read_text()
    rows = [[float(v) for v in line.split(",")] for line in lines.splitlines()[1:] if line]
    return Recording(at_s, [r[0] for r in rows], [[r[i] for r in rows] for i in (1, 2, 3)],
                     smooth_s=0.01, peak=peak_g)


@pytest.mark.parametrize("peak_g", [0.15, 0.3])
def test_a_recorded_quake_raises_its_first_event_before_the_strong_motion(
        tmp_path: Path, peak_g: float) -> None:
    ev = run_signal(tmp_path, [ridgecrest(10, peak_g)], 60)
    first, strong, largest = 10 + 10.0, 10 + 18.85, 10 + 26.87
    assert starts(ev) and first <= starts(ev)[0]["t"] <= strong + 1.0, vib(ev)
    crit = critical(ev)
    assert crit and crit[0]["t"] <= largest, vib(ev)  # critical by the largest shaking


def test_an_earthquake_on_top_of_running_machinery_still_alarms(tmp_path: Path) -> None:
    q = Earthquake(at_s=200, peak_g=0.15, s_delay_s=4, duration_s=12)
    ev = run_signal(tmp_path, [Machinery(at_s=40, amplitude_g=0.05, duration_s=600), q], 230)
    crit = critical(ev)
    assert crit and q.at_s + q.s_delay_s <= crit[0]["t"] <= q.at_s + q.s_delay_s + 1.0, vib(ev)


def test_after_a_long_event_a_new_quake_triggers_as_on_a_fresh_board(tmp_path: Path) -> None:
    long = Earthquake(at_s=40, peak_g=0.2, s_delay_s=3, duration_s=90, seed=2)
    second = Earthquake(at_s=200, peak_g=0.12, s_delay_s=4, duration_s=12, seed=5)
    ev = run_signal(tmp_path / "after", [long, second], 230)
    fresh = run_signal(tmp_path / "fresh", [second], 230)
    ends = [e for e in vib(ev) if e["phase"] == "end" and e["t"] < second.at_s]
    assert ends, "the long event never ended"
    s_arrival = second.at_s + second.s_delay_s
    after = [e["t"] for e in critical(ev) if e["t"] >= second.at_s]
    alone = [e["t"] for e in critical(fresh)]
    assert after and alone, (vib(ev), vib(fresh))
    assert after[0] <= s_arrival + 1.0 and after[0] - alone[0] <= 0.1, (vib(ev), vib(fresh))


# A `time` module for the snippet's directory (first on sys.path, so it replaces the
# built-in): ticks in us and ms wrapping at 2**30 with the ESP32 port's ticks_diff/add.
FAKE_TIME = """
_PERIOD = 1 << 30
_MASK = _PERIOD - 1
_HALF = _PERIOD >> 1
now = [0]  # microseconds


def ticks_us():
    return now[0] & _MASK


def ticks_ms():
    return (now[0] // 1000) & _MASK


def ticks_add(a, b):
    return (a + b) & _MASK


def ticks_diff(a, b):
    return ((a - b + _HALF) & _MASK) - _HALF
"""

COUNTERS = """
import gc, micropython, time, config, spec_vibration, vibration
cfg = {"vibration": config.defaults(spec_vibration.SPEC)}
period = 1000000 // cfg["vibration"]["rate_hz"]
drain = min(100000, 4 * period)  # how often the firmware drains the FIFO


class Fifo:
    # The ADXL345 as the firmware sees it: `n` entries of a quiet signal (gravity on z).
    def __init__(self):
        self.n = 0
        self.i = 0

    def init(self, rate_hz, range_g):
        pass

    def entries(self):
        return self.n

    def read_into(self, b):
        self.i ^= 1
        b[0] = self.i
        b[1] = 0
        b[2] = 0
        b[3] = 0
        b[4] = 0
        b[5] = 1
        self.n -= 1


time.now[0] = (1 << 30) - 3000000  # 3 s before the ticks_us wrap
v = vibration.Vibration(cfg, {"pins": {"sda": 21, "scl": 22}}, lambda *a: None)
dev = v.dev = Fifo()
v.samples = (1 << 30) - 100
v.overruns = (1 << 30) - 5
v.i2c_errors = (1 << 30) - 1
stalls = 0


def run(steps):
    global stalls
    i = 0
    while i < steps:
        if i % 25 == 24:  # a flash stall of 800 ms: the FIFO is full and 8 samples lost
            time.now[0] += 800000
            dev.n = 32
            stalls += 1
        else:
            time.now[0] += drain
            dev.n = drain // period
        v.tick(time.ticks_us())
        i += 1


gc.collect()
micropython.heap_lock()  # any allocation now raises MemoryError
run(3000)
micropython.heap_unlock()
bad = [k for k, x in v.__dict__.items()
       if type(x) is int and not -(1 << 30) <= x < (1 << 30)]
print(v.samples, v.overruns, stalls, time.now[0], " ".join(bad) or "-")
"""


def test_counters_near_two_to_the_30_wrap_and_the_sampling_path_allocates_nothing(
        tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "time.py").write_text(FAKE_TIME)
    samples, overruns, stalls, now_us, bad = run_upy(
        COUNTERS.replace("import gc", "import sys\nsys.path.insert(0, '.')\nimport gc", 1),
        tmp_path).split()
    assert int(now_us) > 1 << 30  # the ticks_us clock wrapped during the run
    assert bad == "-", f"int attributes outside the 31-bit small-int range: {bad}"
    # 2880 drains of 4 samples and 120 full FIFOs of 32: the sample counter wrapped
    assert int(samples) == (2880 * 4 + 120 * 32) - 100
    # each 800 ms stall at 50 Hz made 40 samples of which the FIFO kept 32
    lost = int(stalls) * 8
    assert lost - int(stalls) <= int(overruns) + 5 <= lost + int(stalls)


STALL = """
import time, config, spec_vibration, vibration, machine, _flash
cfg = {{"vibration": config.defaults(spec_vibration.SPEC)}}
cfg["vibration"]["rate_hz"] = {rate}
v = vibration.Vibration(cfg, {{"pins": {{"sda": 21, "scl": 22}}}}, lambda *a: None)
chip = machine._devices[0x53]


def run(ms):  # the board's loop: drain when due, sleep until then
    end = time.ticks_add(time.ticks_ms(), ms)
    while time.ticks_diff(end, time.ticks_ms()) > 0:
        v.tick(time.ticks_us())
        d = v.due_us(time.ticks_us())
        if d > 0:
            time.sleep_us(d)


run(500)
for stall_ms in {stalls}:
    o, lost, n = v.overruns, chip.lost, v.samples
    _flash.stall(stall_ms * 1000)  # what a sector erase does to the CPU
    run(300)
    print(stall_ms, v.overruns - o, chip.lost - lost, v.samples - n)
"""


def stall_losses(tmp: Path, rate: int, stalls: list[int]) -> list[tuple[int, int, int, int]]:
    """Per stall: (stall_ms, samples the firmware counted lost, samples the ADXL345 model
    dropped, samples taken in the stall and the 300 ms after it)."""
    out = run_upy(STALL.format(rate=rate, stalls=stalls), tmp)
    return [(a, b, c, d) for a, b, c, d in (map(int, line.split()) for line in out.splitlines())]


def test_at_50_hz_the_fifo_outlasts_the_flash_s_worst_erase(tmp_path: Path) -> None:
    for stall_ms, counted, dropped, taken in stall_losses(tmp_path, 50, [45, 400, 400]):
        assert dropped == 0 and counted == 0, (stall_ms, counted, dropped)
        assert taken >= (stall_ms + 300) * 50 // 1000 - 1


def test_at_100_hz_a_400_ms_erase_overflows_the_fifo_and_the_loss_is_counted(
        tmp_path: Path) -> None:
    (_, c45, d45, _), *worst = stall_losses(tmp_path, 100, [45, 400, 400])
    assert c45 == d45 == 0
    for _, counted, dropped, _ in worst:
        assert dropped >= 8 and abs(counted - dropped) <= 1, (counted, dropped)


def test_set_config_sets_the_chip_to_the_new_rate(tmp_path: Path) -> None:
    out = run_upy("""
import config, spec_vibration, vibration, machine
cfg = {"vibration": config.defaults(spec_vibration.SPEC)}
v = vibration.Vibration(cfg, {"pins": {"sda": 21, "scl": 22}}, lambda *a: None)
chip = machine._devices[0x53]
print(chip.regs[0x2C], chip.regs[0x38], v.period)
cfg = {"vibration": dict(cfg["vibration"], rate_hz=100)}
v.configure(cfg)
print(chip.regs[0x2C], chip.regs[0x38], v.period)
""", tmp_path)
    # BW_RATE rate codes 0x09 (50 Hz) then 0x0A (100 Hz); FIFO_CTL stays in stream mode
    assert out.split() == ["9", "128", "20000", "10", "128", "10000"]
