"""The boot guard, for main.py: count the boot before anything can fail, and end a boot
that failed in a reset (after noting why, for safe mode). Loaded and dropped by main.py,
so none of this stays on the heap while the board runs."""

import os
import sys

import machine


def count():
    """Bump `bootfails` (boots not yet known good) unless waking from deep sleep, which is
    the end of a good boot, not a failed one. A torn or missing file reads as 0."""
    n = 0
    try:
        with open("bootfails") as f:
            n = int(f.read())
    except (OSError, ValueError):
        pass
    if machine.reset_cause() == machine.DEEPSLEEP_RESET:
        return n
    with open("bootfails.tmp", "w") as f:
        f.write(str(n + 1))
    os.rename("bootfails.tmp", "bootfails")
    return n + 1


def failed(e):
    """The boot raised: print it, keep it for safe mode to report, and reset."""
    sys.print_exception(e)
    try:
        with open("lasterror", "w") as f:
            f.write(repr(e)[:160])
    except OSError:
        pass
    machine.reset()
