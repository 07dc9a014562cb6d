"""Board configuration: the common settings table, validation of every key, set_config.

A rejected change leaves the stored and running config untouched; never raises on bad
input from the network (returns an error message naming the key instead)."""

import json
import time

import store


# "key type min max default;..." -- type i(nt), f(loat), b(ool), s(tring: length bounds),
# n(ame: a topic segment, [A-Za-z0-9][A-Za-z0-9_-]*), x (hex id: empty or exactly max digits),
# l(ist of brokers: "host:port,host:port", at most 4, up to max characters).
# Kept as one string (parsed on demand) because a dict of tuples of boxed floats costs
# several KB of heap on the board. Each sensor has its own table in spec_<kind>.py.
COMMON = (
    "site n 1 64 site;node n 1 64 board;instance x 0 8 ;"
    "wifi_ssid s 0 32 safecity;wifi_key s 0 64 ;"
    "broker_host s 1 64 127.0.0.1;broker_port i 1 65535 1883;mqtt_user s 0 64 ;"
    "mqtt_password s 0 64 ;keepalive_s i 5 600 30;telemetry_interval_s i 1 86400 60;"
    "queue_max i 4 256 64;wdt_timeout_ms i 2000 120000 10000;"
    "wifi_reset_after_s i 10 86400 120;reset_after_s i 30 604800 900;ntp i 0 86400 21600;"
    "net_trial_s i 30 3600 180"
    ";tls b 0 0 0;failover_brokers l 0 200 ;failover_jitter_s i 0 300 2;failback_s i 10 86400 300"
)
# Set at flash time (flash.sh esp32) and never by set_config: the broker's ACL is per user
# and topic, so a remote rename would have the broker acknowledge and drop every alarm.
# tls too: turned off, the board would send its password in clear.
IDENTITY = ("site", "node", "instance", "mqtt_user", "mqtt_password", "tls")
# Keys a remote change of which is a trial: kept only once a broker is reached with them.
NETWORK = ("wifi_ssid", "wifi_key", "broker_host", "broker_port", "failover_brokers")
GOOD = "/config.good.json"  # the last config a board ran with (or was told) that worked


def entries(table):
    """(key, type, min, max, default) for every entry of a settings table."""
    for item in table.split(";"):
        k, t, lo, hi, d = item.split(" ")
        if t == "i":
            yield k, t, int(lo), int(hi), int(d)
        elif t == "f":
            yield k, t, float(lo), float(hi), float(d)
        elif t == "b":
            yield k, t, 0, 0, d == "1"
        else:
            yield k, t, int(lo), int(hi), d


def find(table, key):
    for e in entries(table):
        if e[0] == key:
            return e
    return None


def defaults(table):
    return {e[0]: e[4] for e in entries(table)}


def _check(e, v):
    t, lo, hi = e[1], e[2], e[3]
    if t == "b":
        return None if isinstance(v, bool) else "must be true or false"
    if t == "s":
        if not isinstance(v, str):
            return "must be a string"
        return None if lo <= len(v) <= hi else "length must be %d..%d" % (lo, hi)
    if t == "l":
        if not isinstance(v, str) or len(v) > hi:
            return "must be a string of at most %d characters" % hi
        return _brokers(v) if v else None
    if t == "n" or t == "x":
        if not isinstance(v, str):
            return "must be a string"
        if t == "x":
            ok = len(v) in (lo, hi) and all(c in "0123456789abcdef" for c in v)
            return None if ok else "must be %d lowercase hex digits" % hi
        ok = lo <= len(v) <= hi and (v[0].isalpha() or v[0].isdigit())
        for c in v:
            ok = ok and (c.isalpha() or c.isdigit() or c in "_-") and ord(c) < 128
        return None if ok else "must be 1-64 of A-Z a-z 0-9 _ - starting with a letter or digit"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or \
            (t == "i" and not isinstance(v, int)):
        return "must be " + ("an integer" if t == "i" else "a number")
    if v != v or not lo <= v <= hi:
        return "must be in %s..%s" % (lo, hi)
    return None


def _brokers(v):
    """Why a failover list ("host:port,host:port") is unusable, naming the entry, or None."""
    seen = []
    for i, b in enumerate(v.split(",")):
        h, _, p = b.rpartition(":")
        ok = h != "" and ".." not in h and h[0] not in ".-" and h[-1] not in ".-"
        for ch in h:  # an IPv4 address or a host name, as lwIP takes them
            ok = ok and (ch.isalpha() or ch.isdigit() or ch in ".-") and ord(ch) < 128
        if not (ok and p.isdigit() and 1 <= int(p) <= 65535):
            return "entry %d (%s) must be host:port" % (i + 1, b)
        if b in seen:
            return "entry %d (%s) is listed twice" % (i + 1, b)
        seen.append(b)
    return None if len(seen) <= 4 else "at most 4 brokers"


def put(cfg, kind, spec, k, v):
    """Check one key (`kind` with a dict: that sensor key by key) and set it in `cfg` in
    place; returns the error naming the first bad key, or None. Allocates no copy."""
    if k == kind and isinstance(v, dict):
        for k2, v2 in v.items():
            e = find(spec, k2)
            if e is None:
                return "%s.%s: unknown key" % (kind, k2)
            err = _check(e, v2)
            if err:
                return "%s.%s: %s" % (kind, k2, err)
            cfg[kind][k2] = float(v2) if e[1] == "f" else v2
        return None
    e = find(COMMON, k)
    if e is None:
        return "%s: unknown key" % k
    if k == "ntp" and isinstance(v, bool):
        v = 21600 if v else 0  # older configs: ntp on or off
    err = _check(e, v)
    if err:
        return "%s: %s" % (k, err)
    cfg[k] = v
    return None


def merge(cfg, kind, spec, changes, cross=None):
    """A new config with `changes` applied, or (None, error) naming the first bad key.
    `cross(section)` checks rules spanning keys of the sensor section."""
    if not isinstance(changes, dict):
        return None, "args: must be an object"
    new = {}
    for k in cfg:
        new[k] = dict(cfg[k]) if isinstance(cfg[k], dict) else cfg[k]
    for k, v in changes.items():  # into the copy: a bad key leaves cfg as it was
        err = put(new, kind, spec, k, v)
        if err:
            return None, err
    err = cross(new[kind]) if cross else None
    if err:
        return None, "%s.%s" % (kind, err)
    return new, None


def save(path, cfg):
    # json.dump streams to the file: no config-sized string on a fragmented heap
    with open(path + ".tmp", "w") as f:
        json.dump(cfg, f)
    import os

    os.rename(path + ".tmp", path)


def command(self, cid, cmd, args):
    """set_config and calibrate for app.Board `self`: validate everything first, then save
    and apply; a rejected change acks an error and keeps the old config. A change of
    network keys is a trial (see revert): the last good config stays beside it."""
    spec = __import__("spec_" + self.kind)
    for k in IDENTITY:
        if k in args:
            self.ack(cid, cmd, False, code="rejected",
                     message="%s: set at flash time (flash.sh esp32), not remotely" % k)
            return
    if self.trial_until is not None:
        self.ack(cid, cmd, False, code="busy",
                 message="a network change is on trial: try again once it passed or reverted")
        return
    if cmd == "calibrate":
        if self.kind != "gas":
            self.ack(cid, cmd, False, code="rejected", message="calibrate: gas boards only")
            return
        r0, err = self.sensor.calibrate()
        if r0 is None:
            self.ack(cid, cmd, False, code="busy" if "warming" in err else "rejected",
                     message=err)
            return
        args = {"gas": {"r0_ohm": r0}}
    new, err = merge(self.cfg, self.kind, spec.SPEC, args, spec.cross)
    if new is None:
        self.ack(cid, cmd, False, code="bad_args", message=err)
        return
    if new["tls"] and self.cfg["ntp"] and not new["ntp"]:  # an ESP32's clock starts in 2000
        self.ack(cid, cmd, False, code="rejected",
                 message="ntp: stays on with tls (the broker's certificate is checked against "
                 "the clock)")
        return
    net = [k for k in NETWORK if new[k] != self.cfg[k]]
    save(self.root + "/config.json", new)
    if not net:
        save(self.root + GOOD, new)
    old = self.cfg
    self.cfg = new
    if net:
        import nettrial

        nettrial.start(self, net)
    self.sensor.configure(new)
    if cmd == "calibrate":
        self.ack(cid, cmd, True, {"r0_ohm": round(new["gas"]["r0_ohm"], 1)})
    elif net:
        self.ack(cid, cmd, True, {"applied": sorted(args), "trial_s": new["net_trial_s"]})
    else:
        self.ack(cid, cmd, True, {"applied": sorted(args)})
    if net:
        self.renew = 2  # the loop makes a new client and associates again (app.Board._net)
    elif new["keepalive_s"] != old["keepalive_s"]:
        self.renew = 1  # a new client only
    self.renew_at = time.ticks_add(time.ticks_ms(), 3000)
