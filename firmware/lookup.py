"""DNS look-ups, which hold the whole board on an ESP32 (lwIP: up to 7 s per DNS server), run
with the watchdog fed right before and right after; the watchdog timeout that fits one.
Loaded for a look-up (or at start), then dropped.

Never feeds the watchdog of an unhealthy board and never raises (returns the error)."""

import time

import app

RETRY_MS = 30000  # after a failed look-up of the broker, the next one waits at least this
# lwIP core/dns.c dns_check_entry(): with DNS_MAX_RETRIES 4 a query nobody answers is given
# up after 1+1+2+3 s on each DNS server in turn, and ESP-IDF keeps up to three
# (lwipopts.h DNS_MAX_SERVERS 3; DHCP may hand out that many): 21 s at worst.
DNS_WORST_MS = 21000
_SLACK_MS = 1000  # anything else between the feed and the look-up


def wdt_ms(cfg):
    """The watchdog timeout to run with: wdt_timeout_ms, raised to fit a DNS look-up nobody
    answers (fed right before it) when the board looks a name up (a named broker, or NTP),
    so a dead DNS can never reset the board, let alone into a reset loop."""
    t = cfg["wdt_timeout_ms"]
    named = cfg["ntp"]
    for h in [cfg["broker_host"]] + [b.rpartition(":")[0] for b in
                                      cfg["failover_brokers"].split(",") if b]:
        named = named or not all(p.isdigit() for p in h.split("."))
    return max(t, DNS_WORST_MS + _SLACK_MS) if named else t


def feed(self):
    now = time.ticks_ms()
    if self.wdt is not None and self.healthy(now):
        self.wdt.feed()
        self.wdt_next = time.ticks_add(now, 1000)


def run(self, fn, host):
    """fn() resolves `host` for app.Board `self`; returns None, or the OSError it raised.
    Fed before and after, a look-up has the whole watchdog period (wdt_ms fits lwIP's
    worst case in it)."""
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
        if self.nb > 1:  # the next broker of the list, but not before RETRY_MS either
            self._fo("refused")
        self.mqtt_next = time.ticks_add(now, max(self.mqtt_backoff, RETRY_MS))
