"""Simulated `ntptime`: the simulated clock is already UTC, so settime() only succeeds.

Never changes the host clock; fails while the simulated WiFi is down, like the real one."""

import _sim

host = "pool.ntp.org"
timeout = 1


def time():
    import time as _t

    return _t.time()


def settime():
    _sim.ctl.poll()
    if not _sim.ctl.get("wifi", "up", True):
        raise OSError(110)  # ETIMEDOUT
