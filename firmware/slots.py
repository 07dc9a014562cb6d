"""Which copy of the firmware modules runs: the factory install in the flash root or an OTA
slot (a directory put first on sys.path), and the trial of a new version with its rollback.

main.py imports this before `import app`; an OTA never replaces it. Never raises at boot:
a missing or unreadable state file, or a slot without app.mpy, means the last good copy."""

import os
import sys
import time

GOOD = "ota_good"  # "<slot> <version> <previous version>": the slot that passed its trial
TRIAL = "ota_trial"  # "<slot> <boots> <trial_s> <version> <previous version>"
LAST = "ota_last"  # JSON: what the last update did (the status message's `ota`)
MAX_TRIAL_BOOTS = 2  # a new version that starts this often without passing is rolled back

active = ""  # the slot the modules come from ("": the flash root, the factory install)
trial = None  # while a new version is on trial: the fields of TRIAL
last = None  # the status message's `ota` (a dict), or None
online_at = None  # ticks_ms since when the version on trial has been online and healthy
boot_at = time.ticks_ms()  # set again at boot: the trial must pass within 2 * trial_s of it


def _read(path):
    try:
        with open(path) as f:
            return f.read().split()
    except (OSError, ValueError):
        return None


def write(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def usable(slot):
    if not slot:
        return True
    try:
        os.stat(slot + "/app.mpy")
        return True
    except OSError:
        return False


def note(state, version, reason=None, previous=None):
    """Record what an update did, for every status message from now on (kept on flash)."""
    global last
    import json

    last = {"state": state, "version": version}
    if reason:
        last["reason"] = reason
    if previous:
        last["previous_version"] = previous
    try:
        write(LAST, json.dumps(last))
    except OSError:
        pass


def boot():
    """Pick the slot for this boot and put it first on sys.path; returns it. A version on
    trial gets MAX_TRIAL_BOOTS starts; the next start rolls it back (why: in `ota_last`)."""
    global active, trial, last, boot_at
    boot_at = time.ticks_ms()
    try:
        import json

        with open(LAST) as f:
            last = json.load(f)
    except (OSError, ValueError):
        last = None
    good = _read(GOOD)
    slot = good[0] if good and usable(good[0]) else ""
    t = _read(TRIAL)
    if t is not None:
        try:
            n = int(t[1]) + 1
            int(t[2])
            ok = len(t) == 5 and n <= MAX_TRIAL_BOOTS and usable(t[0])
        except (ValueError, IndexError):
            n = 0
            ok = False
        if ok:
            t[1] = str(n)
            write(TRIAL, " ".join(t))
            trial = t
            slot = t[0]
        else:
            remove(TRIAL)
            why = "boot_failed: started %d times without passing its trial" % (n - 1) \
                if n else "trial state unreadable"
            note("rolled_back", t[3] if len(t) > 3 else "unknown", why,
                 t[4] if len(t) > 4 else None)
    active = slot
    if slot:
        sys.path.insert(0, slot)
    print("fw slot", slot or "factory", "trial", trial[1] if trial else 0)
    return slot


def attach(b):
    """At boot: a transfer that a reset or power cut interrupted goes on."""
    b.ota = None
    try:
        os.stat("ota_offer")
    except OSError:
        return
    import ota

    ota.resume(b)


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
    global online_at, trial
    t = trial
    if t is not None:
        ms = int(t[2]) * 1000
        if b.online() and b.healthy(now):
            if online_at is None:
                online_at = now
            elif time.ticks_diff(now, online_at) >= ms:
                write(GOOD, t[0] + " " + t[3] + " " + t[4])
                remove(TRIAL)
                trial = None
                note("confirmed", t[3], None, t[4])
                print("fw ota confirmed", t[3])
                b.client.publish(b.topic("status"), b.status("online"), 0, True)
        else:
            online_at = None
        if trial is not None and time.ticks_diff(now, boot_at) >= 2 * ms:
            remove(TRIAL)
            note("rolled_back", t[3], "trial_timeout: not online and healthy for %s s "
                 "within %d s of its start" % (t[2], 2 * int(t[2])), t[4])
            print("fw ota rolled_back trial_timeout")
            import machine

            machine.reset()
    if b.ota is not None:
        b.ota.tick(b, now)
        if b.ota is None:  # done or given up: its code leaves the heap
            sys.modules.pop("ota", None)
