"""Simulated physical signals with noise: gas leaks, flash floods, earthquakes, traffic.

Pure functions of scenario time in physical units; they know nothing of sensors or boards."""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field


@dataclass
class GasLeak:
    """A leak that ramps up, holds, and decays like a dispersing plume."""

    at_s: float
    peak_ppm: float = 2000.0
    ramp_s: float = 10.0
    hold_s: float = 30.0
    decay_tau_s: float = 20.0

    def ppm(self, t: float) -> float:
        dt = t - self.at_s
        if dt < 0:
            return 0.0
        if dt < self.ramp_s:
            return self.peak_ppm * dt / self.ramp_s
        if dt < self.ramp_s + self.hold_s:
            return self.peak_ppm
        return self.peak_ppm * math.exp(-(dt - self.ramp_s - self.hold_s) / self.decay_tau_s)


@dataclass
class FlashFlood:
    """Water rising at a steady rate to a crest, holding, then receding."""

    at_s: float
    rise_cm_per_min: float = 30.0
    crest_cm: float = 40.0
    hold_s: float = 60.0
    recede_cm_per_min: float = 10.0

    def level_cm(self, t: float) -> float:
        dt = t - self.at_s
        if dt < 0:
            return 0.0
        rise_s = self.crest_cm / self.rise_cm_per_min * 60.0
        if dt < rise_s:
            return self.rise_cm_per_min * dt / 60.0
        if dt < rise_s + self.hold_s:
            return self.crest_cm
        return max(0.0, self.crest_cm - self.recede_cm_per_min * (dt - rise_s - self.hold_s) / 60.0)


@dataclass
class Earthquake:
    """A synthetic P and S wave train: a weak, fast, mostly vertical P phase, then a strong,
    slower, mostly horizontal S phase `s_delay_s` later, each with a rise-and-decay envelope."""

    at_s: float
    peak_g: float = 0.15
    s_delay_s: float = 4.0
    duration_s: float = 20.0
    seed: int = 7
    _phases: list[float] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self._phases = [rng.uniform(0, 2 * math.pi) for _ in range(6)]

    @staticmethod
    def _envelope(dt: float, rise: float, decay: float) -> float:
        if dt < 0:
            return 0.0
        return (1 - math.exp(-dt / rise)) * math.exp(-dt / decay)

    def accel_g(self, t: float) -> tuple[float, float, float]:
        dt = t - self.at_s
        if dt < 0 or dt > self.duration_s + self.s_delay_s:
            return (0.0, 0.0, 0.0)
        p = 0.25 * self.peak_g * self._envelope(dt, 0.3, 3.0) / 0.6
        s = self.peak_g * self._envelope(dt - self.s_delay_s, 0.5, self.duration_s / 3) / 0.75
        ph = self._phases
        x = 0.3 * p * math.sin(2 * math.pi * 8 * dt + ph[0]) + s * math.sin(
            2 * math.pi * 2.2 * dt + ph[1])
        y = 0.3 * p * math.sin(2 * math.pi * 7 * dt + ph[2]) + 0.7 * s * math.sin(
            2 * math.pi * 1.7 * dt + ph[3])
        z = p * math.sin(2 * math.pi * 9 * dt + ph[4]) + 0.3 * s * math.sin(
            2 * math.pi * 2.0 * dt + ph[5])
        return (x, y, z)


@dataclass
class Traffic:
    """Ordinary traffic: short low-amplitude bursts (vehicles passing) around 12-18 Hz.

    Must never raise a vibration alarm on a correctly configured board."""

    at_s: float = 0.0
    amplitude_g: float = 0.008
    every_s: float = 6.0
    burst_s: float = 2.5
    until_s: float = math.inf

    def accel_g(self, t: float) -> tuple[float, float, float]:
        dt = t - self.at_s
        if dt < 0 or t > self.until_s:
            return (0.0, 0.0, 0.0)
        k = dt % self.every_s
        if k > self.burst_s:
            return (0.0, 0.0, 0.0)
        env = math.sin(math.pi * k / self.burst_s)
        a = self.amplitude_g * env
        return (a * math.sin(2 * math.pi * 15 * dt), 0.6 * a * math.sin(2 * math.pi * 13 * dt),
                a * math.sin(2 * math.pi * 17 * dt + 1.0))


@dataclass
class Noise:
    """White noise of a given standard deviation, reproducible by seed."""

    sigma: float
    seed: int = 1

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def __call__(self) -> float:
        return self._rng.gauss(0.0, self.sigma)


@dataclass
class Machinery:
    """A machine bolted to the structure: a steady vibration at its running frequency with
    a slow +-10% beat, switched on at at_s for duration_s (vertical strongest)."""

    at_s: float
    amplitude_g: float = 0.05
    freq_hz: float = 12.0
    duration_s: float = 600.0

    def accel_g(self, t: float) -> tuple[float, float, float]:
        dt = t - self.at_s
        if dt < 0 or dt > self.duration_s:
            return (0.0, 0.0, 0.0)
        a = self.amplitude_g * (1 + 0.1 * math.sin(2 * math.pi * 0.13 * dt)) / 1.1
        w = 2 * math.pi * self.freq_hz * dt
        return (0.6 * a * math.sin(w + 0.5), 0.4 * a * math.sin(w + 1.9), a * math.sin(w))


@dataclass
class Impulse:
    """One short knock (a door slam, a dropped load): a half-sine pulse of width_ms,
    mostly horizontal."""

    at_s: float
    peak_g: float = 0.3
    width_ms: float = 60.0

    def accel_g(self, t: float) -> tuple[float, float, float]:
        dt = t - self.at_s
        if dt < 0 or dt > self.width_ms / 1000:
            return (0.0, 0.0, 0.0)
        a = self.peak_g * math.sin(math.pi * dt * 1000 / self.width_ms)
        return (a, 0.3 * a, 0.2 * a)


@dataclass
class Footsteps:
    """Someone walking past: one heel strike every 1/step_hz s, each a 15 Hz ring decaying
    in about 40 ms with peak amplitude_g, mostly vertical, for duration_s."""

    at_s: float
    amplitude_g: float = 0.04
    step_hz: float = 2.0
    duration_s: float = 10.0

    def accel_g(self, t: float) -> tuple[float, float, float]:
        dt = t - self.at_s
        if dt < 0 or dt > self.duration_s:
            return (0.0, 0.0, 0.0)
        k = dt % (1 / self.step_hz)
        # peak of sin(w k) exp(-k / tau) for w = 2 pi 15, tau = 0.04 s is about 0.683
        a = self.amplitude_g / 0.683 * math.sin(2 * math.pi * 15 * k) * math.exp(-k / 0.04)
        return (0.3 * a, 0.2 * a, a)


@dataclass
class Recording:
    """A recorded signal played from at_s: channels sampled at `times` (seconds; the first
    row plays at at_s), linearly interpolated between samples, 0 before and after the record.

    `smooth_s` first averages each sample with its neighbours within that window (a boxcar
    low-pass), so a record sampled faster than the board reads it is not aliased into
    the board's samples; a record sampled at or below that rate is left as it is. `peak`
    then rescales every channel by one factor so the largest absolute value is `peak`."""

    at_s: float
    times: list[float]
    channels: list[list[float]]
    smooth_s: float = 0.0
    peak: float | None = None

    def __post_init__(self) -> None:
        t0 = self.times[0]
        self._t = [t - t0 for t in self.times]
        chans = [_boxcar(self._t, c, self.smooth_s) for c in self.channels]
        if self.peak is not None:
            top = max((abs(v) for c in chans for v in c), default=0.0)
            k = self.peak / top if top > 0 else 0.0
            chans = [[v * k for v in c] for c in chans]
        self._ch = chans

    @property
    def length_s(self) -> float:
        return self._t[-1]

    def values(self, t: float) -> list[float]:
        """Every channel at scenario time t."""
        dt = t - self.at_s
        ts = self._t
        if dt < 0 or dt > ts[-1]:
            return [0.0] * len(self._ch)
        i = min(bisect.bisect_right(ts, dt), len(ts) - 1)
        f = (dt - ts[i - 1]) / (ts[i] - ts[i - 1]) if i > 0 else 1.0
        return [c[i - 1] + f * (c[i] - c[i - 1]) if i > 0 else c[0] for c in self._ch]

    def accel_g(self, t: float) -> tuple[float, float, float]:
        """Vibration: the three channels are the board's x, y, z (g, without gravity)."""
        x, y, z = self.values(t)
        return (x, y, z)

    def ppm(self, t: float) -> float:
        """Gas: the one channel, ppm."""
        return self.values(t)[0]

    def level_cm(self, t: float) -> float:
        """Flood: the one channel, water level in cm."""
        return self.values(t)[0]


def _boxcar(ts: list[float], vs: list[float], width_s: float) -> list[float]:
    """Each value replaced by the mean of the samples in [t - width/2, t + width/2)."""
    if width_s <= 0 or len(ts) < 2 or min(b - a for a, b in zip(ts, ts[1:], strict=False)) \
            >= width_s - 1e-9:
        return list(vs)
    half = width_s / 2
    out: list[float] = []
    lo = hi = 0
    acc = 0.0
    for t in ts:
        while hi < len(ts) and ts[hi] < t + half - 1e-9:
            acc += vs[hi]
            hi += 1
        while ts[lo] < t - half - 1e-9:
            acc -= vs[lo]
            lo += 1
        out.append(acc / (hi - lo))
    return out
