"""The board service: one loop that samples the sensor on time, keeps WiFi and MQTT up with
backoff and staged recovery, drains the flash outbox in order, sends telemetry, answers
commands and feeds the watchdog only while healthy.

Never blocks the sampling for the network and never lets a bad command end the loop."""

import gc
import json
import sys
import time

import machine

import otastate
import store

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations for mypy only; MicroPython never evaluates them
    from typing import Any

VERSION = "0.3.0"
board: Any = None  # the running Board (main() sets it): app.board at the REPL after Ctrl-C
SAFE_AFTER = 3  # failed boots in a row, beyond which the board starts in safe mode
BOOT_OK_S = 60  # seconds a boot must run its loop to count as good (clears `bootfails`)


def log(*parts):
    print("fw", *parts)


def drop(*names):
    """Unload modules needed only now and then (config validation, commands)."""
    for m in names:
        sys.modules.pop(m, None)
    gc.collect()


def iso_ts():
    """UTC RFC 3339 with milliseconds, or None while the clock is not set (before NTP)."""
    ns = time.time_ns()
    t = time.gmtime(ns // 1000000000)
    if t[0] < 2024:
        return None
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (t[0], t[1], t[2], t[3], t[4], t[5],
                                                    (ns // 1000000) % 1000)


class Board:
    # Set by setup.setup() at boot (that code is dropped from the heap afterwards).
    root: str
    version: str
    board: Any
    kind: str
    cfg: Any
    mqtt: Any
    mod: Any
    boot: int
    t0: Any  # ticks_ms at boot: only for intervals under 2**29 ms (the ticks wrap)
    up_s: int  # uptime, kept apart from ticks: seconds ...
    up_ms: int  # ... and the milliseconds below a second
    clock_at: Any  # ticks_ms when up_s/up_ms were last brought forward
    reset_cause: str
    seq: int
    outbox: store.Outbox
    client: Any
    sensor: Any
    wlan: Any
    wifi_next: Any  # ticks_ms
    wifi_backoff: int
    wifi_up: bool
    wifi_reconnects: int
    mqtt_next: Any  # ticks_ms
    mqtt_backoff: int
    mqtt_reconnects: int
    nb: int  # brokers in the config: broker_host:broker_port, then failover_brokers
    bi: int  # the one the client is pointed at (0: the first choice)
    mqtt_refused: int  # failed attempts since the last connection (failover.py)
    failback_at: Any  # ticks_ms of the next look at the first choice, or None
    probe: Any  # that look under way (failover.py), or None
    offline_at: int  # up_s when the link was last seen up (or went down)
    stage: int
    ntp: Any  # sntp.py's state (a list; its first item: when the next step is due), or None
    telemetry_next: Any  # ticks_ms
    reboot_at: Any
    wdt: Any
    wdt_next: Any  # ticks_ms
    net_next: Any  # ticks_ms
    heap_min: int
    ota: Any  # the OTA transfer under way (ota.Transfer), or None
    fails: int  # failed boots in a row before this one (main.py counts them on flash)
    safe: Any  # None, or why the board runs in safe mode: {"reason", "failed_boots", "error"}
    config_errors: Any  # what config.json had wrong at boot (named keys, ignored)
    trial_until: Any  # ticks_ms by which a network change on trial must reach a broker
    renew_at: Any  # ticks_ms by which to renew even with records still queued
    renew: int  # set_config asked for a new client (1), and a new WiFi association (2)
    sub_retry: Any  # ticks_ms of the next try after a refused subscription, or None
    sub_pid: int  # packet id of the last SUBSCRIBE to the cmd topic
    seen: Any  # the last command ids run: a redelivered command is not run twice
    loop_errors: int
    err_burst: int
    err_at: Any  # ticks_ms of the first loop error of the current burst

    def __init__(self, root=".", fails=0):
        import setup

        setup.setup(self, root, fails)
        del setup
        drop("setup")  # boot-only code leaves the heap
        self.ota = None
        if otastate.pending:  # an OTA transfer a reset interrupted goes on
            __import__("otafetch").resume(self)
        log("boot", self.boot, "kind", self.kind, "reset_cause", self.reset_cause,
            "queued", self.outbox.depth(), "failed_boots", fails,
            "safe_mode", self.safe["reason"] if self.safe else "no")

    def _make_sensor(self):
        m = self.mod
        cls = m.Gas if self.kind == "gas" else m.Flood if self.kind == "flood" else m.Vibration
        return cls(self.cfg, self.board, self.event)

    # -- messages --------------------------------------------------------------------------

    def topic(self, tail):
        return ("safecity/v1/%s/%s/%s" % (self.cfg["site"], self.cfg["node"], tail)).encode()

    def _base(self):
        return {"v": 1, "site": self.cfg["site"], "node": self.cfg["node"], "ts": iso_ts(),
                "uptime_ms": self.uptime_ms()}

    # -- time ------------------------------------------------------------------------------

    def _clock(self, now):
        """Bring the uptime forward. ESP32 ticks wrap at 2**30 ms and a ticks_diff over
        2**29 ms (6.2 days) turns negative, so uptime is a count of its own; called every
        pass of the loop, far more often than that. Both parts stay small ints."""
        d = time.ticks_diff(now, self.clock_at)
        if d > 0:
            self.clock_at = now
            ms = self.up_ms + d
            if ms >= 1000:
                self.up_s += ms // 1000
                ms %= 1000
            self.up_ms = ms

    def uptime_ms(self):
        self._clock(time.ticks_ms())
        return self.up_s * 1000 + self.up_ms

    def offline_s(self):
        return self.up_s - self.offline_at

    def event(self, etype, phase, severity, details, event_id=None, duration_s=None):
        """Number, persist and queue one event message; returns its event_id."""
        self.seq += 1
        if event_id is None:  # the flash's instance keeps ids unique across re-flashes
            inst = self.cfg["instance"]
            event_id = ("%s-%s-%d-%d" % (self.cfg["node"], inst, self.boot, self.seq) if inst
                        else "%s-%d-%d" % (self.cfg["node"], self.boot, self.seq))
        m = self._base()
        m["event_id"] = event_id
        m["boot"] = self.boot
        m["seq"] = self.seq
        m["type"] = etype
        m["phase"] = phase
        m["severity"] = severity
        m["details"] = details
        if duration_s is not None:
            m["duration_s"] = round(duration_s, 2)
        if not self.online():
            m["historical"] = True
        self.outbox.push(store.ALARM, self.topic("event/" + etype), json.dumps(m).encode())
        log("event", etype, phase, event_id)
        return event_id

    def status(self, state, reason=None, extra=None):
        m = {"v": 1, "site": self.cfg["site"], "node": self.cfg["node"], "ts": None,
             "state": state, "kind": self.kind, "boot": self.boot}
        if self.cfg["instance"]:
            m["instance"] = self.cfg["instance"]
        if reason:
            m["reason"] = reason
        else:
            m["ts"] = iso_ts()
            m["uptime_ms"] = self.uptime_ms()
            m["version"] = VERSION
            m["reset_cause"] = self.reset_cause
            if otastate.last:  # what the last OTA did, or the version on trial
                m["ota"] = otastate.last
            if self.online():
                m["broker"] = "%s:%d" % (self.client.host, self.client.port)
        if self.safe:
            m["safe_mode"] = self.safe
        if self.config_errors and not reason:
            m["config_errors"] = self.config_errors
        if extra:
            m.update(extra)  # e.g. a battery board's `sleeping`: sleep_s, wake_by
        return json.dumps(m).encode()

    # -- network ---------------------------------------------------------------------------

    def online(self):
        return self.client is not None and self.client.state == self.mqtt.UP

    def _on_connect(self):
        cl = self.client
        log("mqtt", "up")
        self.mqtt_backoff = 1000
        self.stage = 0
        cl.publish(self.topic("status"), self.status("safe_mode" if self.safe else "online"),
                   1, True)
        self.sub_pid = cl.subscribe(self.topic("cmd"), 1)
        if cl.inflight_pid:
            cl.retransmit()  # the unacknowledged one goes first again, marked DUP
        if self.nb > 1:
            self._fo("connected")
        if self.trial_until is not None:
            import nettrial  # a network change on trial reached a broker: keep it

            nettrial.commit(self)
            drop("nettrial", "config")

    def _on_suback(self, pid, granted):
        """A refused subscription (the broker's ACL, most often) is a fault: the board
        would never hear a command. Reported, and tried again every 30 s. Other
        subscriptions (an update's chunks) answer for themselves."""
        if pid != self.sub_pid:
            return
        if granted:
            self.sub_retry = None
            return
        log("mqtt", "subscribe_refused")
        self.sub_retry = time.ticks_add(time.ticks_ms(), 30000)
        self.event("fault", "instant", "warning",
                   {"where": "subscribe", "error": "broker refused the cmd subscription"})

    def _on_disconnect(self, reason):
        log("mqtt", "down", reason)
        self.offline_at = self.up_s
        self.mqtt_next = time.ticks_add(time.ticks_ms(), 500)
        if self.nb > 1 and reason not in ("reconfigured", "wifi down", "disconnect"):
            self._fo("lost")  # the broker went away, not our link or our choice

    def _on_fail(self, reason):
        log("mqtt", "connect_failed", reason)
        if self.nb > 1 and reason != "reconfigured":
            self._fo("refused")

    def _fo(self, step):
        """One step along the broker list (failover.py, loaded for it)."""
        import failover

        getattr(failover, step)(self, time.ticks_ms())
        drop("failover", "lookup")

    def _on_puback(self, pid):
        ob = self.outbox
        if ob.inflight >= 0:
            ob.done(ob.inflight)
            ob.inflight = -1

    def _reload(self):
        ob = self.outbox
        if ob.inflight < 0:
            return None
        r = ob.read(ob.inflight)
        return r[2], r[3]

    def _drain(self):
        cl = self.client
        while self.outbox.depth() and cl.can_publish_qos1():
            off, kind, topic, payload = self.outbox.head()
            if kind == store.TELEMETRY:
                if cl.publish(topic, payload, 0) < 0:
                    return
                self.outbox.done(off)
                continue
            if cl.publish(topic, payload, 1) < 0:
                return
            self.outbox.inflight = off
            return

    def _net(self, now):
        """WiFi and MQTT state machines with backoff, and staged recovery."""
        if self.renew and (not self.online() or not self.outbox.depth() or
                           time.ticks_diff(now, self.renew_at) >= 0):
            # New broker settings (set_config): here, with the command code gone from the
            # heap, and once the ack went out on the old link (or 3 s passed)
            import setup

            setup.make_client(self)
            drop("setup")
            if self.renew == 2:
                self.wlan.disconnect()  # associate again with the config's SSID and key
            self.renew = 0
        c = self.cfg
        up = self.wlan.isconnected()
        if not up:
            if self.wifi_up:
                log("wifi", "down")
                self.wifi_up = False
                self.client.close("wifi down")
                self.offline_at = self.up_s
            if time.ticks_diff(now, self.wifi_next) >= 0:
                try:
                    self.wlan.active(True)
                    self.wlan.connect(c["wifi_ssid"], c["wifi_key"])
                except OSError as e:
                    log("wifi", "error", e)
                self.wifi_reconnects += 1
                self.wifi_next = time.ticks_add(now, self.wifi_backoff)
                self.wifi_backoff = min(self.wifi_backoff * 2, 60000)
        elif not self.wifi_up:
            log("wifi", "up")
            self.wifi_up = True
            self.wifi_backoff = 1000
            self.mqtt_next = now
        cl = self.client
        if up and cl.state == self.mqtt.DOWN and time.ticks_diff(now, self.mqtt_next) >= 0:
            self.mqtt_reconnects += 1
            self.mqtt_next = time.ticks_add(now, self.mqtt_backoff)
            self.mqtt_backoff = min(self.mqtt_backoff * 2, 15000)
            if cl.addr is None:
                import lookup  # may hold the loop for seconds (DNS)

                lookup.broker(self, now)
                drop("lookup")
            if cl.addr is not None:
                try:
                    cl.connect()
                except OSError as e:
                    self._on_fail(e)
        if up and c["ntp"] and (self.ntp is None or time.ticks_diff(now, self.ntp[0]) >= 0):
            import sntp  # stays loaded only while an exchange is under way

            if sntp.step(self, now):
                drop("sntp")
        if self.online():
            self.offline_at = self.up_s
            if self.failback_at is not None and time.ticks_diff(now, self.failback_at) >= 0:
                self._fo("check")  # on another broker: does the first choice answer again?
            return
        if self.trial_until is not None and time.ticks_diff(now, self.trial_until) >= 0:
            import nettrial

            nettrial.revert(self)
            drop("nettrial", "config")
            return
        off = self.offline_s()
        if self.stage == 0 and off >= c["wifi_reset_after_s"]:
            log("recovery", "wifi_reset")
            self.stage = 1
            self.wlan.disconnect()
            self.wlan.active(False)
            self.wifi_next = now
        elif off >= c["reset_after_s"]:
            log("recovery", "reset")
            machine.reset()

    # -- commands (code loaded on demand and dropped again to keep the heap free) ----------

    def ack(self, cid, cmd, ok, result=None, code=None, message=None):
        """Queue exactly one acknowledgement (through the flash outbox, QoS 1)."""
        m = self._base()
        m["id"] = cid
        m["cmd"] = cmd
        m["ok"] = ok
        if ok:
            m["result"] = result
        else:
            m["error"] = {"code": code, "message": message}
        try:
            self.outbox.push(store.ACK, self.topic("cmd/ack"), json.dumps(m).encode())
        except ValueError as e:  # a result too large to send: say so instead
            if not ok:
                raise
            self.ack(cid, cmd, False, code="too_large", message=str(e))

    def _on_message(self, topic, payload):
        if topic is not None and topic.startswith(b"safecity/v1/_ota/"):
            if self.ota is not None:  # else a chunk of a transfer that is over: not a command
                self.ota.chunk_in(self, topic, payload)
            return
        spec = "spec_" + self.kind
        gc.collect()
        try:
            import commands

            todo = commands.handle(self, topic, payload)
            del commands
            drop("commands")
            if todo:  # set_config, calibrate (config.py) or ota (ota.py), loaded alone
                __import__("ota" if todo[1] == "ota" else "config").command(self, *todo)
        except MemoryError:
            drop("commands", "config", spec, "nettrial")
            try:
                self.ack(None, None, False, code="busy", message="out of memory, try again")
            except MemoryError:
                log("cmd", "dropped: out of memory")
        finally:
            drop("commands", "config", spec, "nettrial", "ota", "slots")

    # -- the loop --------------------------------------------------------------------------

    def step(self):
        """One pass of the loop; returns the milliseconds it may sleep."""
        s = self.sensor
        if self.kind == "vibration":
            s.tick(time.ticks_us())
        else:
            s.tick(time.ticks_ms())
        now = time.ticks_ms()
        self._clock(now)
        if time.ticks_diff(now, self.net_next) >= 0:
            self.net_next = time.ticks_add(now, 100)
            self._net(now)
            if self.ota is not None or otastate.trial is not None:
                __import__("trial").tick(self, now)  # OTA transfer, trial of a new version
            free = gc.mem_free()
            if free < self.heap_min:
                self.heap_min = free
        cl = self.client
        cl.poll()
        if cl.state == self.mqtt.UP:
            self._drain()
            cl.poll()
            if self.sub_retry is not None and time.ticks_diff(now, self.sub_retry) >= 0:
                self.sub_retry = time.ticks_add(now, 30000)
                self.sub_pid = cl.subscribe(self.topic("cmd"), 1)
        if time.ticks_diff(now, self.telemetry_next) >= 0:
            self.telemetry_next = time.ticks_add(now, self.cfg["telemetry_interval_s"] * 1000)
            import telemetry

            t = telemetry.build(self)
            drop("telemetry")
            if not (self.online() and cl.publish(self.topic("telemetry"), t, 0) >= 0):
                self.outbox.push(store.TELEMETRY, self.topic("telemetry"), t)
        if self.kind == "flood":
            s.maybe_sleep(self, now)  # battery boards: bounded wakes (flood.py)
        if self.reboot_at is not None and (time.ticks_diff(now, self.reboot_at) >= 0 or
                                           (self.online() and not self.outbox.depth())):
            import setup  # the reboot code lives with the boot code

            setup.reboot(self)
        if self.wdt is not None and time.ticks_diff(now, self.wdt_next) >= 0:
            self.wdt_next = time.ticks_add(now, 1000)
            if self.healthy(now):
                self.wdt.feed()
        if self.kind == "vibration":
            return s.due_us(time.ticks_us()) // 1000
        return min(s.due_ms(time.ticks_ms()), 20)

    def boot_ok(self):
        """This boot held (its loop ran BOOT_OK_S, or it went to sleep on purpose): clear
        the failed-boot count. Not in safe mode, which only an operator's reboot leaves."""
        if self.fails and not self.safe:
            store.write_atomic(self.root + "/bootfails", "0")
            self.fails = 0

    def healthy(self, now):
        """Sampling keeps up and the network is up or still within its recovery budget."""
        return self.offline_s() < self.cfg["reset_after_s"] + 30

    def run(self):
        import lookup

        t = lookup.wdt_ms(self.cfg)  # a DNS look-up must fit in it
        drop("lookup")
        log("wdt", t)
        try:  # the configured timeout, after main.py's boot one
            self.wdt = machine.WDT(timeout=t)
        except (OSError, ValueError) as e:  # a port that cannot change an armed watchdog
            log("wdt", "kept the boot timeout:", e)
        ok_at = time.ticks_add(time.ticks_ms(), BOOT_OK_S * 1000)
        while True:
            try:
                d = self.step()
                if self.fails and time.ticks_diff(time.ticks_ms(), ok_at) >= 0:
                    self.boot_ok()
            except Exception as e:  # the crash barrier (crash.py, loaded when needed)
                d = 100
                try:
                    import crash

                    crash.handle(self, e)
                    drop("crash")
                except MemoryError:  # no room even to load it: count it and carry on
                    self.loop_errors += 1
            if d > 0:
                time.sleep_ms(d)


def main(wdt=None, fails=0):
    global board
    board = Board(".", fails)
    board.wdt = wdt
    board.run()
