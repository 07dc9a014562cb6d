"""Simulated machine.RTC: the board's clock is world UTC from power-on, so setting it is
checked against world time and reported, not applied. Takes itself out of sys.modules as it
loads (the board's heap holds it only while an RTC object lives; on a chip: C in flash).

Never changes time.time() or the host clock."""

import sys
import utime
import _sim


def _days(y, m, d):
    """Days from 1970-01-01 to the civil date y-m-d (proleptic Gregorian)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


class RTC:
    """datetime(t) prints how far t is from world time and when ("rtc set step_ms=N
    t_ms=board time"); later datetime() reads carry that offset; time.time() does not."""

    def __init__(self, id=0):
        pass

    def datetime(self, t=None):
        now = _sim.EPOCH_S * 1000000 + _sim.now_us() if _sim.EPOCH_S else utime.time_ns() // 1000
        if t is None:
            us = now + getattr(_sim, "rtc_offset_us", 0)
            tm = utime.gmtime(us // 1000000)
            return (tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], us % 1000000)
        # (year, month, day, weekday, hours, minutes, seconds, subseconds in us), as the esp32
        # port's machine_rtc.c takes it (the weekday is ignored there too)
        set_us = ((_days(t[0], t[1], t[2]) * 86400 + t[4] * 3600 + t[5] * 60 + t[6])
                  * 1000000 + t[7])
        off = _sim.rtc_offset_us = set_us - now  # kept in _sim: this module is dropped
        t = _sim.now_us() // 1000  # board time, ms since world start
        sys.stdout.write("rtc set step_ms=%d t_ms=%d\n" % (off // 1000, t))


sys.modules.pop(__name__, None)  # see the module docstring
