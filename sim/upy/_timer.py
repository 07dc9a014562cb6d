"""Simulated machine.Timer: periodic callbacks from a thread via micropython.schedule.

Best effort only (the firmware samples from its own loop); never used on the hot path."""

import _thread
import micropython
import utime
import _sim


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, **kw):
        self._run = False
        if kw:
            self.init(**kw)

    def init(self, mode=1, period=-1, freq=-1, callback=None):
        self.deinit()
        ms = _sim.real_ms(period if period > 0 else int(1000 / freq))
        self._run = True
        _thread.start_new_thread(self._loop, (mode, ms, callback))

    def _loop(self, mode, ms, callback):
        nxt = utime.ticks_add(utime.ticks_ms(), ms)
        while self._run:
            d = utime.ticks_diff(nxt, utime.ticks_ms())
            if d > 0:
                utime.sleep_ms(d)
            nxt = utime.ticks_add(nxt, ms)
            try:
                micropython.schedule(callback, self)
            except RuntimeError:
                pass
            if mode == 0:
                self._run = False

    def deinit(self):
        self._run = False
