"""Shared state of the simulated board: world clock and the harness's control file.

Runs inside MicroPython; never allocates on the per-sample path (see poll())."""

import json
import os
import utime

_env = os.getenv
DIR = _env("SIM_DIR") or ""
# World clock: board time = (real time - SIM_T0) * SIM_SCALE, so the harness and every
# board agree on "scenario time" and a scale > 1 runs the world faster than real time.
T0_US = int(_env("SIM_T0_US") or "0") or utime.time_ns() // 1000
SCALE_MILLI = int(float(_env("SIM_SCALE") or "1") * 1000)
EPOCH_S = int(_env("SIM_EPOCH_S") or "0")  # real Unix time at SIM_T0 (for time.time())


class _Clock:
    """utime.time_ns() allocates on the unix port, so the clock is unwrapped ticks_us:
    a start offset taken once at import plus the accumulated tick differences."""

    def __init__(self):
        self.start = utime.time_ns() // 1000 - T0_US
        self.last = utime.ticks_us()
        self.acc = 0


_clock = _Clock()


def now_us():
    """Board microseconds since world start (a small int on 64-bit; never wraps)."""
    c = _clock
    t = utime.ticks_us()
    c.acc += utime.ticks_diff(t, c.last)
    c.last = t
    return (c.start + c.acc) * SCALE_MILLI // 1000


def now_ms():
    return now_us() // 1000


def real_ms(board_ms):
    """Real milliseconds that `board_ms` of board time takes."""
    return board_ms * 1000 // SCALE_MILLI


class _Ctl:
    """The harness writes ctl.json (write-then-rename), then bumps the 4-byte counter in
    ctl.gen in place; we re-read ctl.json only when the counter changes."""

    def __init__(self):
        self.state = {}
        self.gen = -1
        self._next = 0
        self._buf = bytearray(4)
        self._f = None
        self.version = 0  # bumped on every reload so users can cache derived values
        if DIR:
            try:
                self._f = open(DIR + "/ctl.gen", "rb")
            except OSError:
                self._f = None
        self.poll(True)

    def poll(self, force=False):
        f = self._f
        if f is None:
            return
        t = utime.ticks_ms()
        if not force and utime.ticks_diff(t, self._next) < 0:
            return
        self._next = utime.ticks_add(t, 50)
        f.seek(0)
        if f.readinto(self._buf) != 4:
            return
        b = self._buf
        g = b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)
        if g != self.gen:
            try:
                with open(DIR + "/ctl.json") as j:
                    self.state = json.load(j)
                self.gen = g
                self.version += 1
            except (OSError, ValueError):
                pass

    def get(self, section, key, default=None):
        s = self.state.get(section)
        if s is None:
            return default
        return s.get(key, default)


ctl = _Ctl()


def write_file(name, text):
    """Report something to the harness (reset cause requests, deep-sleep wake settings)."""
    if DIR:
        with open(DIR + "/" + name + ".tmp", "w") as f:
            f.write(text)
        os.rename(DIR + "/" + name + ".tmp", DIR + "/" + name)


def signal_value(spec, default):
    """A harness signal: a number, or {"pw": [[t_s, v], ...]} piecewise linear in board
    seconds (held constant before the first and after the last point)."""
    if spec is None:
        return default
    if isinstance(spec, (int, float)):
        return spec
    if isinstance(spec, str):
        return spec
    pts = spec.get("pw")
    if not pts:
        return default
    t = now_ms() / 1000
    if t <= pts[0][0]:
        return pts[0][1]
    for i in range(1, len(pts)):
        t1, v1 = pts[i]
        if t <= t1:
            t0, v0 = pts[i - 1]
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1
    return pts[-1][1]
