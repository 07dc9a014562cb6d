"""Remote commands: parse, validate and answer every command with exactly one ack;
loaded on demand by app.py and dropped after each command to keep the heap free.

Never raises into the loop: anything unexpected becomes an `internal` error ack."""

import gc
import json
import sys
import time

import config
import store


def log(*parts):
    print("fw", *parts)


def ack(self, cid, cmd, ok, result=None, code=None, message=None):
    m = self._base()
    m["id"] = cid
    m["cmd"] = cmd
    m["ok"] = ok
    if ok:
        m["result"] = result
    else:
        m["error"] = {"code": code, "message": message}
    self.outbox.push(store.ACK, self.topic("cmd/ack"), json.dumps(m).encode())

def handle(self, topic, payload):
    if topic is None:
        ack(self, None, None, False, code="too_large", message="command larger than buffer")
        return
    cid = None
    cmd = None
    try:
        try:
            msg = json.loads(bytes(payload))
        except (ValueError, UnicodeError):
            ack(self, None, None, False, code="malformed", message="not valid JSON")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("id"), str) or \
                not 1 <= len(msg["id"]) <= 64 or not isinstance(msg.get("cmd"), str):
            ack(self, None, None, False, code="malformed",
                      message="need an object with string id (1-64) and cmd")
            return
        cid = msg["id"]
        cmd = msg["cmd"]
        args = msg.get("args", {})
        if not isinstance(args, dict):
            ack(self, cid, cmd, False, code="bad_args", message="args: must be an object")
            return
        command(self, cid, cmd, args)
    except Exception as e:  # a command must never end the loop
        sys.print_exception(e)
        ack(self, cid, cmd, False, code="internal", message=repr(e)[:120])

def command(self, cid, cmd, args):
    spec = __import__("spec_" + self.kind)
    log("cmd", cmd, cid)
    if cmd == "ping":
        ack(self, cid, cmd, True, {"pong": True, "uptime_ms":
                                   time.ticks_diff(time.ticks_ms(), self.t0)})
    elif cmd == "get_config":
        ack(self, cid, cmd, True, config.public(self.cfg))
    elif cmd == "set_config":
        new, err = config.merge(self.cfg, self.kind, spec.SPEC, args, spec.cross)
        if new is None:
            ack(self, cid, cmd, False, code="bad_args", message=err)
            return
        config.save(self.root + "/config.json", new)
        net = any(new[k] != self.cfg[k] for k in ("site", "node", "broker_host",
                                                  "broker_port", "mqtt_user",
                                                  "mqtt_password", "keepalive_s"))
        self.cfg = new
        self.sensor.configure(new)
        ack(self, cid, cmd, True, {"applied": sorted(args)})
        if net:
            self._setup_mqtt()
    elif cmd == "calibrate":
        if self.kind != "gas":
            ack(self, cid, cmd, False, code="rejected", message="calibrate: gas boards only")
            return
        r0, err = self.sensor.calibrate()
        if r0 is None:
            ack(self, cid, cmd, False, code="busy" if "warming" in err else "rejected",
                      message=err)
            return
        new, _ = config.merge(self.cfg, self.kind, spec.SPEC, {"gas": {"r0_ohm": r0}})
        config.save(self.root + "/config.json", new)
        self.cfg = new
        ack(self, cid, cmd, True, {"r0_ohm": round(r0, 1)})
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
        ack(self, cid, cmd, True, {"passed": ok, "checks": checks})
    elif cmd == "reboot":
        ack(self, cid, cmd, True, {"rebooting": True})
        self.reboot_at = time.ticks_add(time.ticks_ms(), 2000)
    else:
        ack(self, cid, cmd, False, code="unknown_command", message="unknown command: " + cmd)

