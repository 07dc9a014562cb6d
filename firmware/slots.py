"""Which copy of the firmware modules runs: the factory install in the flash root or an OTA
slot (a directory put first on sys.path); writes the OTA state files (trial, last good slot,
what the last update did) that otastate.py keeps in RAM.

main.py runs boot() before `import app`, then this module leaves the heap; an OTA never
replaces it. Never raises at boot: a missing or unreadable state file, or a slot without
app.mpy, means the last good copy."""

import os
import sys

import otastate

GOOD = "ota_good"  # "<slot> <version> <previous version>": the slot that passed its trial
TRIAL = "ota_trial"  # "<slot> <boots> <trial_s> <version> <previous version>"
LAST = "ota_last"  # JSON: what the last update did (the status message's `ota`)
MAX_TRIAL_BOOTS = 2  # a new version that starts this often without passing is rolled back
OFFER = "ota_offer"  # "<id> <size> <chunks> <chunk> <version> <running version> <trial_s>"
STAGE = "ota.bin"  # the bundle as it arrives: header line, modules, 256-byte signature


def read(path):
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
    import json

    last = {"state": state, "version": version}
    if reason:
        last["reason"] = reason
    if previous:
        last["previous_version"] = previous
    otastate.last = last
    try:
        write(LAST, json.dumps(last))
    except OSError:
        pass


def report(b, state, version, chunk=None, chunks=None):
    """Say what an update is doing now in a fresh status (kept in RAM only)."""
    last = {"state": state, "version": version}
    if chunks is not None:
        last["chunk"] = chunk
        last["chunks"] = chunks
    otastate.last = last
    if b.online():
        b.client.publish(b.topic("status"), b.status("online"), 0, True)


def stop(b, state, version, why):
    """An update given up: its files go, nothing is switched, the status says why."""
    print("fw ota", state, version, why)
    remove(OFFER)
    remove(STAGE)
    note(state, version, why)
    b.ota = None
    if b.online():
        b.client.publish(b.topic("status"), b.status("online"), 0, True)


def boot(fails=0):
    """Pick the slot for this boot and put it first on sys.path. A version on trial gets
    MAX_TRIAL_BOOTS starts; the next start rolls it back (why: in `ota_last`). Returns the
    failed-boot count main.py keeps (`bootfails`): a new version's first start, and the start
    after a rollback, count from 1 again (the failures were the other version's), so a
    crashing update never sends the board into safe mode. Never raises; leaves sys.modules."""
    try:
        fails = _boot(fails)
    except Exception as e:  # nothing here may stop the board from starting
        sys.print_exception(e)
    sys.modules.pop("slots", None)
    return fails


def _boot(fails):
    st = otastate
    try:
        import json

        with open(LAST) as f:
            st.last = json.load(f)
    except (OSError, ValueError):
        st.last = None
    good = read(GOOD)
    slot = good[0] if good and usable(good[0]) else ""
    o = read(OFFER)
    if o is not None and len(o) == 7:
        try:
            done = os.stat(STAGE)[6] == int(o[1])
        except (OSError, ValueError):
            done = False
        if done:  # a complete bundle: verified and installed now, while the heap is whole
            import otainstall

            otainstall.install(o, slot)
            sys.modules.pop("otainstall", None)
    st.pending = read(OFFER) is not None
    fresh = False  # this start is the first of its version
    t = read(TRIAL)
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
            st.trial = t
            st.last = {"state": "trial", "version": t[3], "previous_version": t[4]}
            slot = t[0]
            fresh = n == 1
        else:
            fresh = True
            remove(TRIAL)
            why = "boot_failed: started %d times without passing its trial" % (n - 1) \
                if n else "trial state unreadable"
            note("rolled_back", t[3] if len(t) > 3 else "unknown", why,
                 t[4] if len(t) > 4 else None)
    if slot:
        sys.path.insert(0, slot)
    if fresh:
        fails = 1
        write("bootfails", "1")
    print("fw slot", slot or "factory", "trial", st.trial[1] if st.trial else 0)
    return fails


def passed(b):
    """The version on trial came online and stayed healthy: it is the good one now."""
    t = otastate.trial
    write(GOOD, t[0] + " " + t[3] + " " + t[4])
    remove(TRIAL)
    otastate.trial = None
    note("confirmed", t[3], None, t[4])
    print("fw ota confirmed", t[3])
    b.client.publish(b.topic("status"), b.status("online"), 0, True)
    sys.modules.pop("slots", None)


def timed_out():
    """The trial time is up: back to the last good slot, by a restart."""
    t = otastate.trial
    remove(TRIAL)
    note("rolled_back", t[3], "trial_timeout: not online and healthy for %s s within %d s "
         "of its start" % (t[2], 2 * int(t[2])), t[4])
    print("fw ota rolled_back trial_timeout")
    import machine

    machine.reset()
