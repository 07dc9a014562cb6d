"""Boot: read the pin map and config, bump the boot counter, open the outbox, create the
MQTT client and the sensor. Loaded once by app.Board and dropped after boot.

Never touches the network (the loop connects) so a bad config cannot hang the boot."""

import gc
import json
import sys
import time

import machine

import app
import store

def defaults(config, kind, spec):
    d = config.defaults(config.COMMON)
    d[kind] = config.defaults(spec)
    return d


def _read(path):
    """(the file's object, None), (None, why it is unusable), or (None, None) when absent."""
    try:
        with open(path) as f:
            d = json.load(f)
    except OSError:
        return None, None
    except ValueError as e:
        return None, str(e)
    if isinstance(d, dict):
        return d, None
    return None, "not an object"


def load(config, root, kind, spec, cross=None):
    """Defaults, then the last good config, then config.json key by key: a bad key is named
    and skipped, so its last good value stays; one bad key never costs the others, and the
    board never falls back to factory WiFi or broker settings while a good copy exists."""
    cfg = defaults(config, kind, spec)
    errs = []
    for name in (config.GOOD, "/config.json"):
        stored, err = _read(root + name)
        if err:
            errs.append("%s unreadable (%s)" % (name[1:], err))
        for k, v in (stored or {}).items():
            if k in ("gas", "flood", "vibration") and k != kind:
                continue  # another sensor's section: not ours to check
            if k == kind and isinstance(v, dict):
                for k2 in v:
                    err = config.put(cfg, kind, spec, k, {k2: v[k2]})
                    if err and name != config.GOOD:
                        errs.append(err + " (ignored)")
                continue
            err = config.put(cfg, kind, spec, k, v)
            if err and name != config.GOOD:
                errs.append(err + " (ignored)")
        del stored
    err = cross(cfg[kind]) if cross else None
    if err:
        errs.append("%s.%s (sensor settings reset to defaults)" % (kind, err))
        cfg[kind] = config.defaults(spec)
    return cfg, errs


# machine.reset_cause() values of the esp32 port (PWRON_RESET 1 .. SOFT_RESET 5). The port
# reports a brownout as power-on, and machine.reset() and a panic both as hard.
CAUSES = ("unknown", "power_on", "hard", "watchdog", "deep_sleep", "soft")


def safe_mode(root, fails):
    """Why this boot runs in safe mode (after more than app.SAFE_AFTER failed boots), or None."""
    if fails <= app.SAFE_AFTER:
        return None
    err = ""
    try:
        with open(root + "/lasterror") as f:
            err = f.read()
    except OSError:
        pass
    return {"reason": "boot_loop", "failed_boots": fails - 1, "error": err}


def setup(self, root, fails=0):
    import tlsctx

    # First, while the heap is in one piece: a TLS context is one block of about 3 KB that
    # a fragmented heap may not have later (None without ca.der; the client then builds it
    # at its first connect and says why it cannot).
    tls = tlsctx.context(root)[0]
    app.drop("tlsctx")
    self.root = root
    self.fails = fails
    self.safe = safe_mode(root, fails)
    self.loop_errors = 0
    self.sub_retry = None
    self.sub_pid = 0
    self.renew = 0
    self.renew_at = 0
    self.seen = []
    self.err_burst = 0
    self.err_at = 0
    self.version = app.VERSION
    with open(root + "/board.json") as f:
        self.board = json.load(f)
    self.board.pop("notes", None)  # wiring notes are for people, not for the heap
    self.kind = self.board["kind"]
    import config

    spec = __import__("spec_" + self.kind)
    self.cfg, errs = load(config, root, self.kind, spec.SPEC, spec.cross)
    gc.collect()
    for err in errs:
        app.log("config_error", err)
    self.config_errors = errs
    self.trial_until = None
    try:
        open(root + "/config.trial").close()
        import nettrial  # a network change on trial when the board reset: resume

        nettrial.start(self, None)
        del nettrial
        app.drop("nettrial")
    except OSError:
        if not errs:
            try:
                open(root + config.GOOD).close()
            except OSError:  # first boot after flashing: what flash.sh wrote is the good one
                config.save(root + config.GOOD, self.cfg)
    del config, spec
    app.drop("config", "spec_" + self.kind)  # reloaded only by commands
    import mqtt
    import network

    self.mqtt = mqtt
    self.boot = store.next_boot(root + "/boot")
    self.t0 = time.ticks_ms()
    self.clock_at = self.t0
    self.up_s = 0
    self.up_ms = 0
    rc = machine.reset_cause()
    self.reset_cause = CAUSES[rc] if 0 < rc < len(CAUSES) else "unknown"
    self.seq = 0
    self.outbox = store.Outbox(root + "/outbox.log", self.cfg["queue_max"],
                               max_send=2 + mqtt.MAX_MESSAGE)
    self.client = None
    self.probe = None
    make_client(self, tls)  # big buffers first, while the heap is not yet fragmented
    if self.safe:  # network, MQTT, commands and OTA only: no sensor code is even loaded
        self.mod = None
        import idle

        self.sensor = idle.Idle()
    else:
        self.mod = __import__(self.kind)  # gas.py, flood.py or vibration.py
        gc.collect()
        self.sensor = self._make_sensor()
    self.wlan = network.WLAN(network.STA_IF)
    self.wifi_next = self.t0
    self.wifi_backoff = 1000
    self.wifi_up = False
    self.wifi_reconnects = 0
    self.mqtt_next = self.t0
    self.mqtt_backoff = 1000
    self.mqtt_reconnects = 0
    self.offline_at = 0
    self.stage = 0  # staged recovery: 0 normal, 1 WiFi reset done
    self.ntp = None  # sntp.py keeps its state here once NTP runs
    self.telemetry_next = self.t0
    self.reboot_at = None
    self.wdt = None
    self.wdt_next = self.t0
    self.net_next = self.t0
    self.heap_min = gc.mem_free()


def make_client(self, ctx=None):
    """A new MQTT client (Last Will included), keeping an unacknowledged alarm in flight.
    The old one is closed and freed first: two clients' buffers do not fit the heap."""
    c = self.cfg
    old = self.client
    keep = None
    tls = None
    if old is not None:
        old.close("reconfigured")
        if old.inflight_pid:  # keep the unacknowledged alarm for the new connection
            keep = (old.inflight_topic, old.inflight_msg, old.inflight_pid)
        tls = old.tls  # its TLS context, kept: the CA on flash changes only with a reflash
        self.client = old = None
        gc.collect()
    if not c["tls"]:
        tls = None
    elif tls is None:
        tls = ctx or self.root  # or where ca.der is: the client builds its context from it
    cl = self.mqtt.MQTTClient(("%s-%s" % (c["site"], c["node"])).encode(), c["broker_host"],
                         c["broker_port"], c["mqtt_user"].encode() or None,
                         c["mqtt_password"].encode() or None, c["keepalive_s"],
                         self.topic("status"), self.status("offline", "connection_lost"), tls)
    if keep is not None:
        cl.inflight_topic, cl.inflight_msg, cl.inflight_pid = keep
    cl.on_connect = self._on_connect
    cl.on_disconnect = self._on_disconnect
    cl.on_fail = self._on_fail
    cl.on_puback = self._on_puback
    cl.reload = self._reload
    cl.on_message = self._on_message
    cl.on_suback = self._on_suback
    self.client = cl
    # The first choice first (again after set_config); failover.py moves along the list.
    s = c["failover_brokers"]
    self.nb = 1 + s.count(",") + 1 if s else 1
    self.bi = 0
    self.mqtt_refused = 0
    self.failback_at = None
    if self.probe is not None:
        self.probe[0].close()
        self.probe = None


def reboot(self):
    """Graceful: offline status (reason reboot), DISCONNECT, then machine.reset()."""
    cl = self.client
    if self.online():
        cl.publish(self.topic("status"), self.status("offline", "reboot"), 0, True)
        cl.disconnect()
    machine.reset()
