"""Firmware figures for TLS: what the broker's CA, the TLS context and a TLS connection
cost on the MicroPython heap, how long one poll() holds the loop during the handshake,
and a vibration board's peak heap over a run on TLS.

Measures only; never asserts. mbedtls's record buffers and handshake scratch are not on
this heap, on the unix port (libc) nor on an ESP32 (ESP-IDF's heap): docs/firmware.md."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish

from sim.board import SimBoard, run_upy
from tests.mqtt_helpers import Recorder
from tests.tls_helpers import TlsBroker, der, tls_broker

_CONNECT = """
import gc, sys, time, mqtt
gc.collect()
base = gc.mem_alloc()
tls = None
if CA:  # as boot makes it: the module leaves the heap, the context stays
    import tlsctx
    tls, err = tlsctx.context(".")
    del tlsctx
    sys.modules.pop("tlsctx")
gc.collect()
ctx_b = gc.mem_alloc() - base
c = mqtt.MQTTClient(b"bench-tls", "127.0.0.1", PORT, None, None, 30, None, None, tls)
ups = []
c.on_connect = lambda: ups.append(1)
gc.collect()
low = gc.mem_free()
t0 = time.ticks_us()
c.connect()
worst = 0
while not ups and time.ticks_diff(time.ticks_us(), t0) < 10000000:
    a = time.ticks_us()
    c.poll()
    worst = max(worst, time.ticks_diff(time.ticks_us(), a))
    low = min(low, gc.mem_free())
    time.sleep_ms(1)
total = time.ticks_diff(time.ticks_us(), t0)
gc.collect()
print(int(bool(ups)), ctx_b, gc.mem_alloc() - base, gc.mem_free() - low, worst, total)
"""


def figure(name: str, value: Any, unit: str, target: str, met: bool | None,
           note: str = "") -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "target": target, "met": met,
            "note": note}


def _connect(tmp: Path, tb: TlsBroker, tls: bool, repeats: int) -> list[list[int]]:
    d = tmp / ("tls" if tls else "plain")
    d.mkdir()
    if tls:
        (d / "ca.der").write_bytes(der(tb.ca))
    port = tb.tls_port if tls else tb.broker.port
    rows = []
    for _ in range(repeats):
        out = run_upy(f"CA = {tls}\nPORT = {port}\n" + _CONNECT, d)
        rows.append([int(x) for x in out.split()[-6:]])
    return rows


def connection(tmp: Path, tb: TlsBroker, repeats: int = 3) -> list[dict[str, Any]]:
    plain = _connect(tmp, tb, False, repeats)
    tls = _connect(tmp, tb, True, repeats)
    ok = all(r[0] for r in plain + tls)
    up_plain = max(r[2] for r in plain)
    up_tls = max(r[2] for r in tls)
    return [
        figure("TLS context with the broker's CA (tlsctx.context), resident", tls[0][1], "B",
               "", None, "MicroPython heap, 64-bit unix port; the SSLContext object holds "
               "mbedtls's config, entropy and DRBG state; the parsed CA is outside this heap"),
        figure("MQTT client connected, plain", up_plain, "B", "", None if ok else False),
        figure("MQTT client connected over TLS", up_tls, "B", "", None if ok else False,
               f"+{up_tls - up_plain} B for TLS (context + SSLSocket); the 16 KB in / 4 KB "
               "out record buffers are outside the MicroPython heap"),
        figure("  handshake's transient heap above the connected level (TLS)",
               max(r[3] for r in tls), "B", "", None,
               f"plain connect: {max(r[3] for r in plain)} B"),
        figure("longest single poll() during the TLS handshake", max(r[4] for r in tls) / 1000,
               "ms", "", None, f"worst of {repeats} on this machine's CPU; the key exchange and "
               "the certificate check run inside one call. An ESP32 is far slower: "
               "micropython/micropython-esp32#131 reports about 1.2 s for a whole blocking "
               "handshake at 240 MHz; the vibration FIFO spans 640 ms"),
        figure("TLS handshake to CONNACK, loopback", max(r[5] for r in tls) / 1000, "ms", "",
               None, f"plain: {max(r[5] for r in plain) / 1000:.1f} ms"),
    ]


def _run_board(tmp: Path, tb: TlsBroker, tls: bool, seconds: float) -> list[dict[str, Any]]:
    """Live telemetry metrics of a vibration board with 1 s telemetry and 4 commands."""
    node = "tls" if tls else "plain"
    rec = Recorder(tb.broker.host, tb.broker.port, f"safecity/v1/bench/{node}/#")
    b = SimBoard("vibration", node, tb.broker.host, tb.tls_port if tls else tb.broker.port,
                 tmp / node, site="bench", config={"telemetry_interval_s": 1, "tls": tls},
                 ca_der=der(tb.ca) if tls else None)
    b.set_accel()
    b.start()
    try:
        time.sleep(seconds / 2)
        for i, c in enumerate(("get_config", "self_test", "ping", "get_config")):
            publish.single(f"safecity/v1/bench/{node}/cmd", f'{{"id": "t{i}", "cmd": "{c}"}}',
                           qos=1, hostname=tb.broker.host, port=tb.broker.port)
            time.sleep(1)
        time.sleep(seconds / 2 - 4)
        mets = [m.json()["metrics"] for m in rec.matching("/telemetry")]
    finally:
        b.stop()
        rec.close()
    return [m for m in mets if not m.get("historical")]


def long_run(tmp: Path, tb: TlsBroker, seconds: float = 20.0) -> list[dict[str, Any]]:
    """The same vibration board (the heaviest) on plain MQTT and on TLS."""
    plain = _run_board(tmp, tb, False, seconds)
    tls = _run_board(tmp, tb, True, seconds)
    p_peak = max((m["heap_used_bytes"] for m in plain), default=None)
    peak = max((m["heap_used_bytes"] for m in tls), default=None)
    low = min((m["min_free_heap_bytes"] for m in tls), default=None)
    p_low = min((m["min_free_heap_bytes"] for m in plain), default=None)
    return [
        figure("peak live heap, vibration board on TLS (after GC)", peak, "B", "< 65536",
               None if peak is None else peak < 65536,
               f"plain MQTT in the same run: {p_peak} B; {len(tls)} telemetry reports over "
               f"{seconds:.0f} s with 4 commands; heap_used_bytes as the firmware reports "
               "it, 64-bit unix port (objects up to twice an ESP32's)"),
        figure("  lowest free heap seen by the board on TLS", low, "B", "> 0",
               None if low is None else low > 0,
               f"plain: {p_low} B; min_free_heap_bytes (sampled every 100 ms, before GC) "
               "of the firmware's 64K"),
    ]


def run(tmp: Path | None = None) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as d, tls_broker() as tb:
        base = Path(d) if tmp is None else tmp / "tls"
        base.mkdir(exist_ok=True)
        return connection(base, tb) + long_run(base, tb)


if __name__ == "__main__":
    for f in run():
        print(f)
