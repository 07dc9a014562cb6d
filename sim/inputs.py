"""What each simulated board's sensors read: the scenario's physical signals (sim/physics.py)
with noise, turned into pin volts, switch levels and an accelerometer stream, with sensor
faults (disconnected, stuck, out of range) laid over them.

Writes a short stretch ahead as piecewise-linear ramps in board time, so a board samples a
smooth signal at its own clock whatever the runner's pace; never reads what the board sends."""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from sim import records
from sim.board import ADXL_COUNTS_PER_G, SimBoard
from sim.physics import (
    Earthquake,
    FlashFlood,
    Footsteps,
    GasLeak,
    Impulse,
    Machinery,
    Recording,
    Traffic,
)
from sim.scenario import (
    SENSORS,
    FloodSignal,
    FootstepsSignal,
    GasLeakSignal,
    ImpulseSignal,
    MachinerySignal,
    QuakeSignal,
    Scenario,
    TrafficSignal,
)
from sim.timeline import Trace

STEP_S = 0.5
"""Spacing of the ramp points (scenario seconds): finer than any sensor's sampling period,
unless time runs so fast that the ramp must be longer to outlast the runner's pace."""
REAL_AHEAD_S = 0.4
"""A ramp covers at least this much real time (four of the runner's looks at the clock)."""
AHEAD = 8
"""Ramp steps written at once; a new ramp is written when half of it has been used. The
board parses its control file into its own small heap: a 9-point ramp costs about 1 KB."""
ACCEL_HZ = 100
PIN_V_MAX = 3.3


class Feed(Protocol):
    node: str

    def update(self, t: float) -> None:
        """Keep the board's inputs written ahead of scenario time t."""

    def fault(self, kind: str, sensor: str | None, on: bool, t: float) -> None:
        """Start (on) or end a sensor fault at scenario time t."""

    def trace(self, duration_s: float) -> Trace:
        """The physical signal over the whole run, for the report's timeline."""


def _seed(scenario_seed: int, node: str) -> int:
    return scenario_seed * 1_000_003 + zlib.crc32(node.encode())


def _jitter(seed: int, t: float) -> float:
    """Unit gaussian noise that depends only on (seed, t): overlapping ramps agree."""
    return random.Random(seed * 1_000_033 + round(t * 1000)).gauss(0.0, 1.0)


@dataclass
class Ramp:
    """One board input written ahead as a ramp; `override` replaces the signal while a
    sensor fault holds it (a constant volts or level)."""

    board: SimBoard
    section: str
    pin: str
    value: Any  # Callable[[float], float]: the healthy reading at scenario time t
    digital: bool = False
    step_s: float = STEP_S
    override: float | str | None = None
    _until: float = -math.inf
    _const: float | str | None = None

    def write(self, t: float, force: bool = False) -> None:
        if not force and t < self._until:
            return
        if self.override is not None:
            self._put(self.override)
            self._until = math.inf
            return
        step = self.step_s
        start = math.floor(t / step) * step
        pts = [(round(start + k * step, 3), self.value(start + k * step))
               for k in range(AHEAD + 1)]
        self._until = start + AHEAD * step / 2
        if all(v == pts[0][1] for _, v in pts):
            self._put(pts[0][1])  # constant: held after the last point, no need to refresh
            return
        self._const = None
        if self.digital:
            self._set({"pw": _steps(pts)})
        else:
            self._set({"pw": [[tk, round(v, 4)] for tk, v in pts]})

    def _put(self, v: float | str) -> None:
        if v != self._const:
            self._const = v
            self._set(v if isinstance(v, str) else round(v, 4))

    def _set(self, v: Any) -> None:
        self.board.set(self.section, self.board.board["pins"][self.pin], v)


def _steps(pts: list[tuple[float, float]]) -> list[list[float]]:
    """A switch: a vertical edge at the first point of each new level (no ramps between)."""
    out = [[pts[0][0], pts[0][1]]]
    for (_, prev), (tk, v) in zip(pts, pts[1:], strict=False):
        if v != prev:
            out += [[tk, prev], [tk, v]]
    out.append([pts[-1][0], pts[-1][1]])
    return out


@dataclass
class GasFeed:
    """An MQ sensor in the plume of every leak aimed at this board (ppm add up)."""

    node: str
    board: SimBoard
    leaks: list[GasLeak | Recording]  # recordings: ppm
    noise_rel: float = 0.03
    seed: int = 1
    step_s: float = STEP_S
    ramp: Ramp = field(init=False)

    def __post_init__(self) -> None:
        self.ramp = Ramp(self.board, "adc", "gas_adc", self._volts, step_s=self.step_s)

    def ppm(self, t: float) -> float:
        return sum(leak.ppm(t) for leak in self.leaks)

    def _volts(self, t: float) -> float:
        p = self.ppm(t)
        if p > 0:  # noise in proportion: clean air stays one constant write
            p = max(0.0, p * (1 + self.noise_rel * _jitter(self.seed, t)))
        return self.board.gas_pin_volts(p)

    def update(self, t: float) -> None:
        self.ramp.write(t)

    def fault(self, kind: str, sensor: str | None, on: bool, t: float) -> None:
        self.ramp.override = _override(kind, on, self._volts(t), self.board.gas_short_volts())
        self.ramp.write(t, force=True)

    def trace(self, duration_s: float) -> Trace:
        return _trace("gas", "ppm", self.ppm, duration_s)


@dataclass
class FloodFeed:
    """A resistive level probe and a float switch at float_at_cm in the same water.

    The float switch closes to GND (water = low with float_active_low) and its input has the
    internal pull-up plus an external 100k pull-up (hw/boards/flood-v1.json): a cut wire reads
    steady high, i.e. dry, never a chattering input. `sensor_chatter` is an input without a
    pull that picks up noise (the firmware's `floating` check)."""

    node: str
    board: SimBoard
    floods: list[tuple[FlashFlood | Recording, float]]  # each with its float switch height
    noise_cm: float = 0.2
    seed: int = 1
    step_s: float = STEP_S
    probe: Ramp = field(init=False)
    float_pin: Ramp = field(init=False)

    def __post_init__(self) -> None:
        f = dict(self.board.defaults["flood"])
        f.update(self.board.config.get("flood", {}))
        self._offset_v = float(f["probe_offset_v"])
        self._cm_per_v = float(f["probe_cm_per_v"])
        self._active_low = bool(f["float_active_low"])
        self.probe = Ramp(self.board, "adc", "probe_adc", self._probe_v, step_s=self.step_s)
        self.float_pin = Ramp(self.board, "pins", "float", self._float_level, digital=True,
                              step_s=self.step_s)

    def level_cm(self, t: float) -> float:
        return max((fl.level_cm(t) for fl, _ in self.floods), default=0.0)

    def _probe_v(self, t: float) -> float:
        cm = self.level_cm(t)
        if cm > 0:
            cm = max(0.0, cm + self.noise_cm * _jitter(self.seed, t))
        return min(PIN_V_MAX, self._offset_v + cm / self._cm_per_v)

    def _wet(self, t: float) -> bool:
        return any(fl.level_cm(t) >= at for fl, at in self.floods)

    def _float_level(self, t: float) -> float:
        return float(int(self._wet(t)) ^ int(self._active_low))

    def update(self, t: float) -> None:
        self.probe.write(t)
        self.float_pin.write(t)

    def fault(self, kind: str, sensor: str | None, on: bool, t: float) -> None:
        if sensor == "probe":
            self.probe.override = _override(kind, on, self._probe_v(t))
            self.probe.write(t, force=True)
            return
        override: float | str | None = None
        if on and kind == "sensor_disconnected":
            override = 1.0  # the pull-ups hold a cut wire high
        elif on and kind == "sensor_chatter":
            override = "floating"
        elif on:
            override = self._float_level(t)  # stuck where it was
        self.float_pin.override = override
        self.float_pin.write(t, force=True)

    def next_float_level(self, level: int, t0: float, t1: float) -> float | None:
        """The earliest scenario time in [t0, t1] at which the float pin may read `level`
        (it never does later than the physical change), or None if it does not (for skipping
        time over a board in deep sleep with ext0 on the float)."""
        o = self.float_pin.override
        if o is not None:
            return t0 if o == "floating" or int(bool(o)) == level else None
        edges = [t0]
        for fl, at in self.floods:
            if isinstance(fl, Recording):
                # a recorded level may cross the float anywhere while it plays
                if fl.at_s <= t1 and fl.at_s + fl.length_s >= t0:
                    return max(t0, fl.at_s)
                continue
            if at > fl.crest_cm:
                continue
            rise_s = fl.crest_cm / fl.rise_cm_per_min * 60.0
            up = fl.at_s + at / fl.rise_cm_per_min * 60.0
            down = fl.at_s + rise_s + fl.hold_s + (fl.crest_cm - at) / fl.recede_cm_per_min * 60
            edges += [e for e in (up, down) if t0 < e <= t1]
        for e in sorted(edges):
            # just after each edge (the level holds until the next one)
            if self._float_level(min(e + 1e-6, t1) if e < t1 else e) == level:
                return e
        return None

    def trace(self, duration_s: float) -> Trace:
        return _trace("level", "cm", self.level_cm, duration_s)


def _override(kind: str, on: bool, now_v: float, short_v: float = PIN_V_MAX) -> float | None:
    """The pin voltage an analog sensor shows during a fault: an open circuit 0 V, an out of
    range (shorted) one `short_v` (its supply as the pin sees it: the 3.3 V rail unless the
    sensor has its own), a stuck one what it showed when it stuck. The ADC model then reads
    what an ESP32 reads there: its floor for 0 V, its ceiling for a short."""
    if not on:
        return None
    if kind == "sensor_disconnected":
        return 0.0
    if kind == "sensor_out_of_range":
        return short_v
    return now_v


VibrationSource = Earthquake | Traffic | Recording | Machinery | Impulse | Footsteps


@dataclass
class VibrationFeed:
    """An ADXL345 bolted to a structure: quakes and traffic add up into one 100 Hz stream,
    played by the board at its own clock from the first signal's start."""

    node: str
    board: SimBoard
    sources: list[VibrationSource]
    duration_s: float
    _spec: dict[str, Any] = field(default_factory=dict)

    def accel_g(self, t: float) -> tuple[float, float, float]:
        x = y = z = 0.0
        for s in self.sources:
            a = s.accel_g(t)
            x, y, z = x + a[0], y + a[1], z + a[2]
        return (x, y, z)

    def start(self) -> None:
        """Before the board starts: gravity on z, then the stream (written to its files)."""
        self.board.set_accel()
        if not self.sources:
            return
        first = min(s.at_s for s in self.sources)
        n = int((self.duration_s - first) * ACCEL_HZ) + 1
        self.board.play_accel([self.accel_g(first + i / ACCEL_HZ) for i in range(n)],
                              ACCEL_HZ, at_s=first)

    def update(self, t: float) -> None:
        return None

    def fault(self, kind: str, sensor: str | None, on: bool, t: float) -> None:
        addr = str(self.board.board.get("accel_addr", 0x53))
        if kind in ("sensor_disconnected", "i2c_error"):
            self.board.i2c_error(on)
            return
        if on:
            self._spec = dict(self.board.ctl.get("accel", {}).get(addr, {}))
            base = self._spec.get("base", [0, 0, ADXL_COUNTS_PER_G])
            if kind == "sensor_out_of_range":
                base = [32767, 32767, 32767]  # pegged at full scale on every axis
            self.board.set("accel", addr, {"base": base, "noise": 0})
        else:
            self.board.set("accel", addr, self._spec)

    def trace(self, duration_s: float) -> Trace:
        return _trace("accel", "g", lambda t: max(abs(v) for v in self.accel_g(t)),
                      duration_s, step=0.02)


def _trace(label: str, unit: str, fn: Any, duration_s: float, step: float = 0.25) -> Trace:
    tr = Trace(label, unit)
    step = max(step, duration_s / 20000)
    for k in range(int(duration_s / step) + 1):
        tr.t.append(round(k * step, 3))
        tr.v.append(round(float(fn(k * step)), 5))
    return tr


def feed_for(scenario: Scenario, node: str, kind: str, board: SimBoard) -> Feed:
    """The feed of one board, from every signal aimed at it."""
    mine = [s for s in scenario.signals if any(i == node for _, i in scenario.resolve(s.node))]
    seed = _seed(scenario.seed, node)
    step = max(STEP_S, REAL_AHEAD_S * scenario.time_scale / AHEAD)
    if kind == "gas":
        leaks = [GasLeak(s.at_s, s.peak_ppm, s.ramp_s, s.hold_s, s.decay_tau_s)
                 for s in mine if isinstance(s, GasLeakSignal)]
        played = [r for r, _ in records.sources(mine, kind, step)]  # recordings add ppm
        return GasFeed(node, board, [*leaks, *played], seed=seed, step_s=step)
    if kind == "flood":
        floods = [(FlashFlood(s.at_s, s.rise_cm_per_min, s.crest_cm, s.hold_s,
                              s.recede_cm_per_min), s.float_at_cm)
                  for s in mine if isinstance(s, FloodSignal)]
        levels = [(r, s.float_at_cm) for r, s in records.sources(mine, kind, step)]  # cm
        return FloodFeed(node, board, [*floods, *levels], seed=seed, step_s=step)
    sources: list[VibrationSource] = []
    for s in mine:
        if isinstance(s, QuakeSignal):
            sources.append(Earthquake(s.at_s, s.peak_g, s.s_delay_s, s.duration_s,
                                      seed=seed % 10_000))
        elif isinstance(s, TrafficSignal):
            sources.append(Traffic(s.at_s, s.amplitude_g, s.every_s, s.burst_s,
                                   s.until_s if s.until_s is not None else math.inf))
        elif isinstance(s, MachinerySignal):
            sources.append(Machinery(s.at_s, s.amplitude_g, s.freq_hz, s.duration_s))
        elif isinstance(s, ImpulseSignal):
            sources.append(Impulse(s.at_s, s.peak_g, s.width_ms))
        elif isinstance(s, FootstepsSignal):
            sources.append(Footsteps(s.at_s, s.amplitude_g, s.step_hz, s.duration_s))
    played = [r for r, _ in records.sources(mine, kind, 1 / ACCEL_HZ)]  # at the stream's rate
    return VibrationFeed(node, board, [*sources, *played], scenario.duration_s)


def default_sensor(kind: str) -> str:
    return SENSORS[kind][0]
