"""Remote commands: parse, validate and answer every command with exactly one ack;
loaded on demand by app.py and dropped after each command to keep the heap free.

Never raises into the loop: anything unexpected becomes an `internal` error ack."""

import gc
import json
import sys
import time

import store


def log(*parts):
    print("fw", *parts)


def handle(self, topic, payload):
    """Answer one command; returns (cid, cmd, args) when it needs the config code, which
    app.py loads only after this module is dropped (the heap holds one or the other)."""
    if topic is None:
        self.ack(None, None, False, code="too_large", message="command larger than buffer")
        return
    cid = None
    cmd = None
    try:
        try:
            msg = json.loads(bytes(payload))
        except (ValueError, UnicodeError):
            self.ack(None, None, False, code="malformed", message="not valid JSON")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("id"), str) or \
                not 1 <= len(msg["id"]) <= 64 or not isinstance(msg.get("cmd"), str):
            self.ack(None, None, False, code="malformed",
                      message="need an object with string id (1-64) and cmd")
            return
        cid = msg["id"]
        cmd = msg["cmd"]
        if cid in self.seen:  # a QoS 1 redelivery: it ran, and its ack is queued
            log("cmd", "duplicate", cid)
            return None
        self.seen.append(cid)
        if len(self.seen) > 8:
            self.seen.pop(0)
        args = msg.get("args", {})
        if not isinstance(args, dict):
            self.ack(cid, cmd, False, code="bad_args", message="args: must be an object")
            return
        log("cmd", cmd, cid)
        if cmd == "ota":
            return cid, cmd, args  # ota.py, loaded once this module is dropped
        if cmd in ("set_config", "calibrate"):
            h = args.get("broker_host")
            if isinstance(h, str) and not host_ok(h):  # the config code checks the rest
                self.ack(cid, cmd, False, code="bad_args",
                         message="broker_host: not an IPv4 address or host name")
                return
            return cid, cmd, args
        command(self, cid, cmd, args)
    except Exception as e:  # a command must never end the loop
        sys.print_exception(e)
        self.ack(cid, cmd, False, code="internal", message=repr(e)[:120])
    return None


def host_ok(v):
    """An IPv4 address or a host name: letters, digits, '-' and '.' (lwIP takes a numeric
    address as it is and asks the DNS for anything else). Checked here, not in config.py,
    because that module is loaded at boot, when the heap is tightest."""
    for ch in v:
        if not (ch.isalpha() or ch.isdigit() or ch in ".-"):
            return False
    return v != "" and ".." not in v and v[0] not in ".-" and v[-1] not in ".-"


def command(self, cid, cmd, args):
    if cmd == "ping":
        self.ack(cid, cmd, True, {"pong": True, "uptime_ms": self.uptime_ms()})
    elif cmd == "get_config":
        out = {}
        for k, v in self.cfg.items():  # secrets never leave the board
            out[k] = ("***" if v else "") if k in ("wifi_key", "mqtt_password") else v
        self.ack(cid, cmd, True, out)
    elif cmd == "self_test":
        checks, ok = self.sensor.self_test()
        try:
            store.write_atomic(self.root + "/selftest", "ok")
            checks["flash"] = "ok"
        except OSError as e:
            checks["flash"] = str(e)
            ok = False
        checks["free_heap_bytes"] = gc.mem_free()
        checks["wifi"] = self.wifi_up
        self.ack(cid, cmd, True, {"passed": ok, "checks": checks})
    elif cmd == "reboot":
        # An operator's reboot is a fresh try: it leaves safe mode (main.py counts anew)
        store.write_atomic(self.root + "/bootfails", "0")
        self.ack(cid, cmd, True, {"rebooting": True, "safe_mode": bool(self.safe)})
        self.reboot_at = time.ticks_add(time.ticks_ms(), 2000)
    else:
        self.ack(cid, cmd, False, code="unknown_command", message="unknown command: " + cmd)

