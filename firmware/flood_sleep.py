"""A battery flood board's deep sleep: the `sleeping` status, the wake sources, and the alarm
and fault state kept over the sleep; loaded only after a deep-sleep wake and around a sleep.

Never lets an active alarm's event_id or age be lost to a sleep."""

import json
import time

import machine

STATE = "flood_sleep.json"


def _iso(secs):
    t = time.gmtime(secs)
    if t[0] < 2024:
        return None  # clock not set (no NTP yet): no wall-clock promise
    return "%04d-%02d-%02dT%02d:%02d:%02d.000Z" % (t[0], t[1], t[2], t[3], t[4], t[5])


def announce(f, board):
    """Publish the retained `sleeping` status (QoS 1) with the coming sleep's timer and the
    UTC time it ends; returns its packet id (-1: not sent)."""
    s = f.sleep_ms(board) // 1000
    return board.client.publish(board.topic("status"), board.status(
        "sleeping", None, {"sleep_s": s, "wake_by": _iso(time.time() + s)}), 1, True)


def sleep(f, board, announced):
    """Keep what must outlive the sleep, arm the wake sources and sleep (never returns)."""
    import esp32

    ms = f.sleep_ms(board)
    save(f)
    board.boot_ok()  # a deliberate sleep ends a good boot (main.py skips counting the wake)
    if "floating" not in f.faults:
        # ext0 (an RTC GPIO: flood-v1's GPIO27) wakes on the float changing from what it
        # reads now: wet while it is dry, dry while a flood holds, so the end is seen. The
        # esp32 port passes the level to esp_sleep_enable_ext0_wakeup (modesp32.c:
        # WAKEUP_ALL_LOW = False, WAKEUP_ANY_HIGH = True) and sets no RTC pull for the sleep
        # (ESP-IDF examples/system/deep_sleep: pulls must go through rtc_gpio), so the
        # external 100k pull-up is what holds the line. A chattering input would wake the
        # board at once: then only the timer wakes it.
        lvl = f.float_pin.value()
        esp32.wake_on_ext0(f.float_pin, esp32.WAKEUP_ALL_LOW if lvl else esp32.WAKEUP_ANY_HIGH)
    if announced:
        board.client.disconnect()  # the broker keeps `sleeping` and drops the Last Will
    else:
        board.client.close("sleep")  # not announced: the Last Will says offline
    print("fw deepsleep", ms, "announced" if announced else "unannounced", "awake_ms",
          board.uptime_ms())
    machine.deepsleep(ms)


def save(f):
    if f.event_id is None and not f.faults and f.suspect is None:
        forget()
        return
    ev = None
    if f.event_id is not None:
        ev = [f.event_id, f.source, f.secs - f.event_s]
    fs = [[k, v[2], v[0], f.secs - v[1]] for k, v in f.faults.items()]
    dis = None
    if f.suspect is not None:
        dis = [f.suspect, f.secs - f.disagree_s]
    with open(STATE, "w") as fh:
        json.dump({"t": time.time(), "ev": ev, "f": fs, "dis": dis, "wet": f.wet}, fh)


def forget():
    import os

    try:
        os.remove(STATE)
    except OSError:
        pass


def boot(f, now):
    """After a deep-sleep wake, carry on with the stored alarm, faults and disagreement
    (their ages grown by the time slept: time.time() runs on through deep sleep). Read only
    after a deep-sleep wake (like RTC memory); every sleep rewrites or removes it."""
    try:
        with open(STATE) as fh:
            s = json.load(fh)
    except (OSError, ValueError):
        return
    slept = max(0, time.time() - s["t"])  # ESP-IDF keeps system time on the RTC timer
    if s["ev"]:
        f.event_id, f.source, age = s["ev"]
        f.event_s = f.secs - age - slept
        f.wet = s["wet"]
        f.raw = f.wet  # the first reading debounces against the stored state
    for k, sensor, eid, age in s["f"]:
        f.faults[k] = [eid, f.secs - age - slept, sensor]
    if "floating" in f.faults:
        f.stable_t = time.ticks_add(now, -4000)  # one quiet second ends it
    if s["dis"]:
        f.suspect = s["dis"][0]
        f.disagree_s = f.secs - s["dis"][1] - slept
