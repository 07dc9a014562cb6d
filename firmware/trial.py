"""Runs the trial of a new version and drives an OTA transfer, from the loop's network
step: the trial passes once the board has been online and healthy for trial_s, within
2 * trial_s of its start; otherwise the board goes back to the last good slot and restarts.

Loaded only while a trial or a transfer runs, and dropped after. An OTA never replaces it."""

import sys
import time

import otastate

online_at = None  # ticks_ms since when the version on trial has been online and healthy
start = time.ticks_ms()  # loaded at the loop's first network step: the trial's start


def tick(b, now):
    global online_at
    t = otastate.trial
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
        if otastate.trial is not None and time.ticks_diff(now, start) >= 2 * ms:
            import slots

            slots.timed_out()
    if b.ota is not None:
        b.ota.tick(b, now)
        if b.ota is None:  # done or given up: its code leaves the heap
            sys.modules.pop("otafetch", None)
    if b.ota is None and otastate.trial is None:
        sys.modules.pop("slots", None)
        sys.modules.pop("trial", None)
