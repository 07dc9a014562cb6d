"""The crash barrier of the board's loop (app.Board.run): an exception in a pass is logged,
counted and reported; a burst of them resets the board, which main.py counts as a failed
boot. Loaded only when an exception is caught, then dropped."""

import sys
import time

import machine

import store

ERRORS_BEFORE_RESET = 5  # loop exceptions within ERROR_WINDOW_MS that end in a reset
ERROR_WINDOW_MS = 60000


def handle(self, e):
    """The crash barrier: an exception in a pass of the loop is logged, counted and
    reported (telemetry `loop_errors`, a `fault` event); ERRORS_BEFORE_RESET of them
    within ERROR_WINDOW_MS reset the board, which counts as a failed boot."""
    sys.print_exception(e)
    self.loop_errors += 1
    now = time.ticks_ms()
    if not self.err_burst or time.ticks_diff(now, self.err_at) > ERROR_WINDOW_MS:
        self.err_burst = 0
        self.err_at = now
    self.err_burst += 1
    text = repr(e)[:120]
    if self.err_burst >= ERRORS_BEFORE_RESET:
        print("fw crash", "reset after", self.err_burst, "errors")
        try:
            store.write_atomic(self.root + "/lasterror", text)
        except OSError:
            pass
        machine.reset()
    try:
        self.event("fault", "instant", "warning",
                   {"where": "loop", "error": text, "count": self.loop_errors})
    except Exception as e2:  # the report itself failed (a full heap): counted anyway
        sys.print_exception(e2)
