"""Simulated `time`: the built-in API on the world clock of _sim (scaled by SIM_SCALE), with
ticks that wrap like the ESP32's.

Only the clock source and the ticks period differ from the real module; never lets a
firmware test pass on the unix port's 2**62 period where an ESP32 would wrap."""

import os
import utime as _t
import _sim

ticks_cpu = _t.ticks_cpu
mktime = _t.mktime

# The ticks period is MICROPY_PY_TIME_TICKS_PERIOD = MP_SMALL_INT_POSITIVE_MASK + 1
# (py/mpconfig.h): 2**30 on the ESP32, whose small ints are 31 bits, against 2**62 on the
# 64-bit unix port. ticks_ms wraps every 12.4 days and ticks_us every 17.9 minutes there.
PERIOD = 1 << 30
_MASK = PERIOD - 1
_HALF = PERIOD >> 1
# The esp32 port's ticks_us/ticks_ms are esp_timer_get_time(), which counts from the
# chip's reset (ports/esp32/mphalport.c mp_hal_ticks_us/ms), masked to the period. A board
# starts its count at SIM_TICKS_START_MS (default 0, as on a chip), so a scenario can put
# the wrap a few seconds after boot.
_BASE_US = int(os.getenv("SIM_TICKS_START_MS") or "0") * 1000 - _sim.now_us()


def ticks_diff(end, start):
    # extmod/modtime.c time_ticks_diff: shift by half a period, wrap, shift back.
    return ((end - start + _HALF) & _MASK) - _HALF


def ticks_add(ticks, delta):
    # extmod/modtime.c time_ticks_add raises unless -PERIOD/2 < delta < PERIOD/2.
    if not -_HALF < delta < _HALF:
        raise OverflowError("ticks interval overflow")
    return (ticks + delta) & _MASK


def ticks_ms():
    return ((_BASE_US + _sim.now_us()) // 1000) & _MASK


def ticks_us():
    return (_BASE_US + _sim.now_us()) & _MASK


def time():
    return _sim.EPOCH_S + _sim.now_us() // 1000000 if _sim.EPOCH_S else _t.time()


def time_ns():
    if _sim.EPOCH_S:
        return _sim.EPOCH_S * 1000000000 + _sim.now_us() * 1000
    return _t.time_ns()


def sleep_ms(ms):
    # The unix port's sleep_ms wakes every millisecond (about 4% of a core per board);
    # sleep_us takes one system call and allocates nothing.
    if ms > 0:
        _t.sleep_us(_sim.real_ms(ms) * 1000)


def sleep_us(us):
    if us > 0:
        _t.sleep_us(us * 1000 // _sim.SCALE_MILLI)


def sleep(s):
    sleep_ms(int(s * 1000))


def gmtime(secs=None):
    return _t.gmtime(time() if secs is None else secs)


def localtime(secs=None):
    return _t.localtime(time() if secs is None else secs)
