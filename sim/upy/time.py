"""Simulated `time`: the built-in API on the world clock of _sim (scaled by SIM_SCALE).

Only the clock source differs from the real module; never changes ticks semantics."""

import utime as _t
import _sim

ticks_diff = _t.ticks_diff
ticks_add = _t.ticks_add
ticks_cpu = _t.ticks_cpu
mktime = _t.mktime
# TICKS_PERIOD - 1 of the running port (2**30 - 1 on the esp32, 2**62 - 1 on the 64-bit unix
# port): ticks_add and ticks_diff wrap at the port's period, so our ticks must too.
_MASK = _t.ticks_add(0, -1)


def ticks_ms():
    return (_sim.now_us() // 1000) & _MASK


def ticks_us():
    return _sim.now_us() & _MASK


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
