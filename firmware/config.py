"""Board configuration: defaults per board kind, JSON on flash, validation of every key.

A rejected change leaves the stored and running config untouched; never raises on bad
input from the network (returns an error message naming the key instead)."""

import json
import store

VERSION = "0.3.0"

# key: (type, min, max, default) -- min/max for numbers, length bounds for strings.
# Each sensor module has its own SPEC table (gas.SPEC, ...), loaded only on that board.
COMMON = {
    "site": (str, 1, 64, "site"), "node": (str, 1, 64, "board"),
    "wifi_ssid": (str, 0, 32, "safecity"), "wifi_key": (str, 0, 64, ""),
    "broker_host": (str, 1, 64, "127.0.0.1"), "broker_port": (int, 1, 65535, 1883),
    "mqtt_user": (str, 0, 64, ""), "mqtt_password": (str, 0, 64, ""),
    "keepalive_s": (int, 5, 600, 30), "telemetry_interval_s": (int, 1, 86400, 60),
    "queue_max": (int, 4, 256, 64), "wdt_timeout_ms": (int, 2000, 120000, 10000),
    "wifi_reset_after_s": (int, 10, 86400, 120), "reset_after_s": (int, 30, 604800, 900),
    "ntp": (bool, 0, 0, True),
}
SECRET = ("wifi_key", "mqtt_password")


def defaults(kind, spec):
    d = {k: v[3] for k, v in COMMON.items()}
    d[kind] = {k: v[3] for k, v in spec.items()}
    return d


def _check(spec, key, v):
    t, lo, hi = spec[0], spec[1], spec[2]
    if t is bool:
        return None if isinstance(v, bool) else "must be true or false"
    if t is str:
        if not isinstance(v, str):
            return "must be a string"
        return None if lo <= len(v) <= hi else "length must be %d..%d" % (lo, hi)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (t is int and not isinstance(v, int)):
        return "must be " + ("an integer" if t is int else "a number")
    if v != v or not lo <= v <= hi:
        return "must be in %s..%s" % (lo, hi)
    return None


def merge(cfg, kind, spec, changes, cross=None):
    """A new config with `changes` applied, or (None, error) naming the first bad key.
    `cross(section)` checks rules spanning keys of the sensor section."""
    if not isinstance(changes, dict):
        return None, "args: must be an object"
    new = {}
    for k in cfg:
        new[k] = dict(cfg[k]) if isinstance(cfg[k], dict) else cfg[k]
    for k, v in changes.items():
        if k == kind and isinstance(v, dict):
            for k2, v2 in v.items():
                if k2 not in spec:
                    return None, "%s.%s: unknown key" % (kind, k2)
                err = _check(spec[k2], k2, v2)
                if err:
                    return None, "%s.%s: %s" % (kind, k2, err)
                new[kind][k2] = float(v2) if spec[k2][0] is float else v2
        elif k in COMMON:
            err = _check(COMMON[k], k, v)
            if err:
                return None, "%s: %s" % (k, err)
            new[k] = v
        else:
            return None, "%s: unknown key" % k
    err = cross(new[kind]) if cross else None
    if err:
        return None, "%s.%s" % (kind, err)
    return new, None


def load(path, kind, spec, cross=None):
    """Defaults overlaid with the file; a broken file falls back to defaults (and says so)."""
    base = defaults(kind, spec)
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError) as e:
        return base, "config: %s unreadable (%s), using defaults" % (path, e)
    stored = {k: v for k, v in stored.items() if k in COMMON or k == kind}
    cfg, err = merge(base, kind, spec, stored, cross)
    if cfg is None:
        return base, "config: " + err + ", using defaults"
    return cfg, None


def save(path, cfg):
    store.write_atomic(path, json.dumps(cfg))


def public(cfg):
    """The config without secrets (for get_config)."""
    out = {}
    for k, v in cfg.items():
        out[k] = ("***" if v else "") if k in SECRET else v
    return out


def load_board(path):
    """The pin map (hw/boards/<kind>-v<n>.json copied to flash as board.json)."""
    with open(path) as f:
        return json.load(f)
