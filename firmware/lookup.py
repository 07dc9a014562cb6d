"""DNS look-ups, which hold the whole board on an ESP32 (lwIP: up to 7 s per DNS server), run
with the watchdog fed right before and right after. Loaded for a look-up, then dropped.

Never feeds the watchdog of an unhealthy board and never raises (returns the error)."""

import time

import app

RETRY_MS = 30000  # after a failed look-up of the broker, the next one waits at least this


def feed(self):
    now = time.ticks_ms()
    if self.wdt is not None and self.healthy(now):
        self.wdt.feed()
        self.wdt_next = time.ticks_add(now, 1000)


def run(self, fn, host):
    """fn() resolves `host` for app.Board `self`; returns None, or the OSError it raised.
    Fed before and after, a look-up has the whole watchdog period (config.net_error checks
    that lwIP's worst case fits in it)."""
    feed(self)
    t = time.ticks_ms()
    err = None
    try:
        fn()
    except OSError as e:
        err = e
    feed(self)
    app.log("dns", host, "failed %s" % err if err else "ok",
            "ms", time.ticks_diff(time.ticks_ms(), t))
    return err


def broker(self, now):
    """Resolve the broker's name for the MQTT client; a failure postpones the next attempt
    by at least RETRY_MS, since each one may have held the loop for seconds."""
    cl = self.client
    if run(self, cl.resolve, cl.host) is not None:
        self.mqtt_next = time.ticks_add(now, max(self.mqtt_backoff, RETRY_MS))
