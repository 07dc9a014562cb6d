"""Rolls a signed OTA bundle out to sensor boards through the broker they already use: the
bundle as retained chunks under safecity/v1/_ota/<site>/<id>/<n>, then an `ota` command to
each board, canaries first; each wave waits for every board's verdict in its status.

What `flash.sh ota` runs. Never offers the bundle to the next wave when a canary failed,
and never publishes anything with --dry-run (which needs no broker)."""

from __future__ import annotations

import argparse
import json
import math
import re
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollout.bundle import FIRMWARE, Bundle, BundleError, build, load

SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
CHUNK = 384
"""Bytes per chunk: with its topic (at most 105 bytes for a 64-character site) and MQTT
framing, a chunk fits the board's 512-byte receive buffer (firmware/mqtt.py _RX_SIZE)."""
TRIAL_S = 120
"""Seconds a board must stay online and healthy on the new version before it keeps it."""
SENSOR_KINDS = ("gas", "flood", "vibration")
FAILED = ("refused", "failed", "rolled_back")


def chunk_limit(site: str) -> int:
    """The largest chunk a board on `site` accepts (firmware/ota.py check)."""
    return 505 - (len("safecity/v1/_ota/") + len(site) + 24)


@dataclass
class Verdict:
    node: str
    ok: bool
    why: str


@dataclass
class Watch:
    """Acks and status messages of one site, as they arrive (retained ones kept apart)."""

    site: str
    cond: threading.Condition = field(default_factory=threading.Condition)
    live: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    retained: dict[str, dict[str, Any]] = field(default_factory=dict)

    def on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        parts = msg.topic.split("/")
        with self.cond:
            if msg.retain and parts[-1] == "status":
                self.retained[parts[3]] = doc
            elif not msg.retain:
                self.live.append((msg.topic, doc))
            self.cond.notify_all()


def verdict(node: str, cid: str, version: str,
            msgs: list[tuple[str, dict[str, Any]]]) -> Verdict | None:
    """The board's answer to our offer so far: confirmed, refused, rolled back, or None."""
    for topic, d in msgs:
        if f"/{node}/" not in topic:
            continue
        if topic.endswith("/cmd/ack") and d.get("id") == cid and not d.get("ok"):
            err = d.get("error") or {}
            msg = str(err.get("message", ""))
            if "already running" in msg:
                return Verdict(node, True, f"already runs {version}")
            return Verdict(node, False, f"offer {err.get('code')}: {msg}")
        ota = d.get("ota") if topic.endswith("/status") else None
        if isinstance(ota, dict) and ota.get("version") == version:
            state = ota.get("state")
            if state == "confirmed" and d.get("version") == version:
                return Verdict(node, True, f"runs {version}, trial passed")
            if state in FAILED:
                return Verdict(node, False, f"{state}: {ota.get('reason', '')}")
    return None


class Rollout:
    def __init__(self, host: str, port: int, site: str, user: str | None = None,
                 password: str | None = None, ca_file: Path | None = None) -> None:
        import paho.mqtt.client as mqtt  # only here: a dry run needs no broker and no paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.site = site
        self.watch = Watch(site)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
        if user:
            c.username_pw_set(user, password)
        if ca_file:
            c.tls_set(ca_certs=str(ca_file), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_message = self.watch.on_message
        answer: list[Any] = []
        got = threading.Event()

        def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            answer.append(rc)
            got.set()

        c.on_connect = on_connect
        c.connect(host, port, keepalive=30)
        c.loop_start()
        self.client = c
        if not got.wait(15) or answer[0].is_failure:
            self.close()
            raise OSError("no answer" if not answer else f"refused: {answer[0]}")
        for t in (f"safecity/v1/{site}/+/status", f"safecity/v1/{site}/+/cmd/ack"):
            c.subscribe(t, 1)
        time.sleep(0.5)  # the retained status messages arrive right after the subscription

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def boards(self) -> list[str]:
        """Every sensor board of the site with a retained status."""
        return sorted(n for n, d in self.watch.retained.items() if d.get("kind") in SENSOR_KINDS)

    def publish_chunks(self, bundle: Bundle, chunk: int) -> int:
        """The bundle as retained QoS 1 chunks; returns how many, once the broker has them."""
        base = f"safecity/v1/_ota/{self.site}/{bundle.id}/"
        infos = []
        for i in range(math.ceil(len(bundle.data) / chunk)):
            part = bundle.data[i * chunk:(i + 1) * chunk]
            infos.append(self.client.publish(base + str(i), part, qos=1, retain=True))
        for info in infos:
            info.wait_for_publish(30)
        return len(infos)

    def offer(self, node: str, bundle: Bundle, chunk: int, trial_s: int = TRIAL_S) -> str:
        cid = f"ota-{bundle.id[:8]}-{node}"[:64]
        args = {"id": bundle.id, "version": bundle.version, "size": len(bundle.data),
                "chunks": math.ceil(len(bundle.data) / chunk), "chunk": chunk,
                "trial_s": trial_s}
        self.client.publish(f"safecity/v1/{self.site}/{node}/cmd",
                            json.dumps({"id": cid, "cmd": "ota", "args": args}), qos=1)
        return cid

    def wave(self, nodes: list[str], bundle: Bundle, chunk: int, timeout_s: float,
             trial_s: int = TRIAL_S) -> list[Verdict]:
        """Offer to every node of the wave and wait for each one's verdict."""
        with self.watch.cond:
            start = len(self.watch.live)
        cids = {n: self.offer(n, bundle, chunk, trial_s) for n in nodes}
        deadline = time.monotonic() + timeout_s
        done: dict[str, Verdict] = {}
        with self.watch.cond:
            while len(done) < len(nodes):
                msgs = self.watch.live[start:]
                for n in nodes:
                    if n not in done:
                        v = verdict(n, cids[n], bundle.version, msgs)
                        if v is not None:
                            done[n] = v
                            print(f"  {n}: {'ok' if v.ok else 'FAILED'}: {v.why}", flush=True)
                left = deadline - time.monotonic()
                if len(done) == len(nodes) or left <= 0:
                    break
                self.watch.cond.wait(min(left, 1.0))
        for n in nodes:
            if n not in done:
                done[n] = Verdict(n, False, f"no verdict within {timeout_s:g} s")
                print(f"  {n}: FAILED: {done[n].why}", flush=True)
        return [done[n] for n in nodes]


def waves(targets: list[str], canary: int) -> list[list[str]]:
    if canary <= 0 or canary >= len(targets):
        return [targets]
    return [targets[:canary], targets[canary:]]


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="flash.sh ota", description=__doc__)
    ap.add_argument("--bundle", type=Path, default=FIRMWARE)
    ap.add_argument("--key", type=Path, required=True)
    ap.add_argument("--site", required=True)
    ap.add_argument("--device-id", action="append", default=[])
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--canary", type=int, default=1)
    ap.add_argument("--broker", default="")
    ap.add_argument("--user", default="")
    ap.add_argument("--pass-file", type=Path)
    ap.add_argument("--ca-file", type=Path)
    ap.add_argument("--chunk", type=int, default=CHUNK)
    ap.add_argument("--timeout-s", type=float, default=900.0)
    ap.add_argument("--trial-s", type=int, default=TRIAL_S)
    ap.add_argument("--dry-run", action="store_true")
    return ap.parse_args(argv)


def check(a: argparse.Namespace) -> tuple[list[str], str, int]:
    """Targets, broker host and port; raises BundleError naming the bad option."""
    if not SEGMENT.match(a.site):
        raise BundleError(f"--site '{a.site}' is not a topic segment "
                          "([A-Za-z0-9][A-Za-z0-9_-]{0,63})")
    targets = [t for v in a.device_id for t in v.split(",") if t]
    for t in targets:
        if not SEGMENT.match(t):
            raise BundleError(f"--device-id '{t}' is not a topic segment")
    if bool(targets) == a.all:
        raise BundleError("give --device-id ID (repeat it, or ID,ID,...) or --all, not both")
    if a.canary < 0:
        raise BundleError("--canary must be 0 or more")
    if not 5 <= a.trial_s <= 3600:
        raise BundleError("--trial-s must be 5-3600 (seconds)")
    if not 64 <= a.chunk <= chunk_limit(a.site):
        raise BundleError(f"--chunk must be 64..{chunk_limit(a.site)} for site '{a.site}'")
    host, port = "", 0
    if not a.dry_run or a.broker:
        m = re.match(r"^([A-Za-z0-9.-]{1,64})(?::(\d{1,5}))?$", a.broker)
        if not m:
            raise BundleError(f"--broker '{a.broker}' is not HOST[:PORT]")
        host = m.group(1)
        port = int(m.group(2) or (8883 if a.ca_file else 1883))
        if not 1 <= port <= 65535:
            raise BundleError(f"--broker '{a.broker}': port must be 1-65535")
    return targets, host, port


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    try:
        targets, host, port = check(a)
        bundle = load(a.bundle) if a.bundle.is_file() else build(a.bundle, a.key)
        if a.bundle.is_file():  # built earlier: still checked against this key
            from rollout.bundle import modulus, verify

            if not verify(bundle.data, modulus(a.key)):
                raise BundleError(f"--bundle {a.bundle}: not signed by --key {a.key}")
        password = a.pass_file.read_text().strip() if a.pass_file else None
    except (BundleError, OSError) as e:
        print(f"flash.sh: error: {e}", file=sys.stderr)
        return 2
    n = math.ceil(len(bundle.data) / a.chunk)
    print(f"bundle: version {bundle.version}, {len(bundle.data)} bytes, "
          f"{len(bundle.files)} modules, id {bundle.id}, signature verified")
    topic = f"safecity/v1/_ota/{a.site}/{bundle.id}"
    if a.dry_run:
        print(f"would publish {n} retained chunks of {a.chunk} bytes on {topic}/0..{n - 1}")
        if a.all:
            print(f"would offer it to every sensor board with a retained status under "
                  f"safecity/v1/{a.site}/+/status, {a.canary} canary first")
        plan = waves(targets, a.canary) if targets else []
        for i, w in enumerate(plan):
            what = "canary" if i == 0 and len(plan) > 1 else "wave"
            print(f"would offer it to ({what}): {' '.join(w)}, then wait up to "
                  f"{a.timeout_s:g} s for each board's {a.trial_s} s trial")
        print("dry run: nothing published")
        return 0
    try:
        r = Rollout(host, port, a.site, a.user or None, password, a.ca_file)
    except ImportError:
        print("flash.sh: error: needs paho-mqtt (this checkout's .venv has it: make venv, "
              "or PYTHON=...)", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"flash.sh: FAILED: broker {host}:{port}: {e}", file=sys.stderr)
        return 1
    try:
        if a.all:
            targets = r.boards()
            if not targets:
                print(f"flash.sh: FAILED: no sensor board has a retained status under "
                      f"safecity/v1/{a.site}/+/status", file=sys.stderr)
                return 1
        print(f"publishing {n} retained chunks on {topic}/0..{n - 1}", flush=True)
        r.publish_chunks(bundle, a.chunk)
        plan = waves(targets, a.canary)
        for i, w in enumerate(plan):
            what = "canary" if i == 0 and len(plan) > 1 else "wave"
            print(f"offering {bundle.version} to ({what}): {' '.join(w)}", flush=True)
            bad = [v for v in r.wave(w, bundle, a.chunk, a.timeout_s, a.trial_s) if not v.ok]
            if bad:
                rest = [t for later in plan[i + 1:] for t in later]
                print(f"flash.sh: FAILED: {len(bad)} of {len(w)} boards failed"
                      + (f"; stopped, not offered to: {' '.join(rest)}" if rest else ""),
                      file=sys.stderr)
                return 1
        print(f"done: {len(targets)} boards run {bundle.version}")
        return 0
    finally:
        r.close()


if __name__ == "__main__":
    sys.exit(main())
