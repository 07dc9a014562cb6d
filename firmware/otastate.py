"""What the running firmware knows of OTA: the slot it came from, the trial of a new
version (passed, or rolled back and restarted), and the status message's `ota` field.

Resident (app.py calls tick and status), so it stays small: slots.py, which writes the
state files, is loaded only at boot and when a trial ends. An OTA never replaces it."""

import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations for mypy only; MicroPython never evaluates them
    from typing import Any

active = ""  # the slot the modules come from ("": the flash root, the factory install)
trial: Any = None  # while a new version is on trial: [slot, boots, trial_s, version, previous]
last: Any = None  # the status message's `ota` (a dict), or None
online_at: Any = None  # ticks_ms since when the version on trial has been online and healthy
boot_at = time.ticks_ms()  # set again at boot: the trial must pass within 2 * trial_s of it


def attach(b):
    """At boot: a transfer that a reset or power cut interrupted goes on."""
    b.ota = None
    try:
        open("ota_offer").close()  # slots.OFFER
    except OSError:
        return
    import otafetch

    otafetch.resume(b)


def status(m):
    """Add the OTA state to a status message."""
    if trial is not None:
        m["ota"] = {"state": "trial", "version": trial[3], "previous_version": trial[4]}
    elif last is not None:
        m["ota"] = last


def tick(b, now):
    """Every network step while a transfer or a trial runs: the trial passes once the board
    has been online and healthy for trial_s without a break, within 2 * trial_s of boot;
    otherwise the board goes back to the last good slot and restarts."""
    global online_at
    t = trial
    if t is not None:
        ms = int(t[2]) * 1000
        if b.online() and b.healthy(now):
            if online_at is None:
                online_at = now
            elif time.ticks_diff(now, online_at) >= ms:
                import slots

                slots.passed(b)
        else:
            online_at = None
        if trial is not None and time.ticks_diff(now, boot_at) >= 2 * ms:
            import slots

            slots.timed_out()
    if b.ota is not None:
        b.ota.tick(b, now)
        if b.ota is None:  # done or given up: its code leaves the heap
            sys.modules.pop("otafetch", None)
            sys.modules.pop("slots", None)
