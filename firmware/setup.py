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


def load(config, path, kind, spec, cross=None):
    """Defaults overlaid with the file; a broken file falls back to defaults (and says so)."""
    base = defaults(config, kind, spec)
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError) as e:
        return base, "config: %s unreadable (%s), using defaults" % (path, e)
    stored = {k: v for k, v in stored.items() if k == kind or config.find(config.COMMON, k)}
    cfg, err = config.merge(base, kind, spec, stored, cross)
    if cfg is None:
        return base, "config: " + err + ", using defaults"
    return cfg, None


# machine.reset_cause() values of the esp32 port (PWRON_RESET 1 .. SOFT_RESET 5). The port
# reports a brownout as power-on, and machine.reset() and a panic both as hard.
CAUSES = ("unknown", "power_on", "hard", "watchdog", "deep_sleep", "soft")


def setup(self, root):
    self.root = root
    self.version = app.VERSION
    with open(root + "/board.json") as f:
        self.board = json.load(f)
    self.board.pop("notes", None)  # wiring notes are for people, not for the heap
    self.kind = self.board["kind"]
    import config

    spec = __import__("spec_" + self.kind)
    self.cfg, err = load(config, root + "/config.json", self.kind, spec.SPEC, spec.cross)
    if err:
        app.log("config_error", err)
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
    self.outbox = store.Outbox(root + "/outbox.log", self.cfg["queue_max"])
    self.client = None
    make_client(self)  # big buffers first, while the heap is not yet fragmented
    mod = __import__(self.kind)  # gas.py, flood.py or vibration.py
    self.mod = mod
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


def make_client(self):
    """A new MQTT client (Last Will included), keeping an unacknowledged alarm in flight."""
    c = self.cfg
    old = self.client
    tls = None
    if c["tls"]:  # the CA on flash changes only with a reflash: a built context is kept
        tls = getattr(old, "tls", None)
        if tls is None or isinstance(tls, str):
            import tlsctx

            tls, err = tlsctx.context(self.root)
            app.drop("tlsctx")
            if err:
                app.log("config_error", err)
                tls = err
    cl = self.mqtt.MQTTClient(("%s-%s" % (c["site"], c["node"])).encode(), c["broker_host"],
                         c["broker_port"], c["mqtt_user"].encode() or None,
                         c["mqtt_password"].encode() or None, c["keepalive_s"],
                         self.topic("status"), self.status("offline", "connection_lost"), tls)
    if old is not None:
        old.close("reconfigured")
        if old.inflight_pid:  # keep the unacknowledged alarm for the new connection
            cl.inflight_topic = old.inflight_topic
            cl.inflight_msg = old.inflight_msg
            cl.inflight_pid = old.inflight_pid
    cl.on_connect = self._on_connect
    cl.on_disconnect = self._on_disconnect
    cl.on_fail = self._on_fail
    cl.on_puback = self._on_puback
    cl.reload = self._reload
    cl.on_message = self._on_message
    self.client = cl


def reboot(self):
    """Graceful: offline status (reason reboot), DISCONNECT, then machine.reset()."""
    cl = self.client
    if self.online():
        cl.publish(self.topic("status"), self.status("offline", "reboot"), 0, True)
        cl.disconnect()
    machine.reset()
