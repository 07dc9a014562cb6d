"""OTA figures: the transfer rate of a signed bundle through a real Mosquitto to a board on
the 64K heap, the heap it takes at its peak, the RSA check's cost, and what the resident
slot code costs; measured on the real firmware under the MicroPython unix port.

Measures only; never asserts (targets are printed next to each figure)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.firmware import figure
from rollout import publish as rollout
from rollout.bundle import FIRMWARE, build, modulus
from sim.board import FIRMWARE_HEAP, SimBoard, heap_bytes, run_upy
from sim.broker import MosquittoBroker
from tests.mqtt_helpers import Recorder

_RSA = """
import gc, time
gc.collect()
c = gc.mem_alloc()
import otastate
gc.collect()
resident = gc.mem_alloc() - c
import otainstall
n = int(open("key").read().strip(), 16)
sig = open("sig", "rb").read()
digest = open("digest", "rb").read()
open("ota_key", "w").write(open("key").read())
gc.collect()
gc.disable()
a = gc.mem_alloc()
t = time.ticks_us()
why = otainstall.check_sig(digest, sig)
dt = time.ticks_diff(time.ticks_us(), t)
b = gc.mem_alloc()
gc.enable()
print(why, dt, b - a, resident)
"""


def rsa_check(tmp: Path, key: Path) -> list[dict[str, Any]]:
    """One signature check as the board does it (ota.check_sig) and the resident slots.py."""
    import hashlib

    d = tmp / "rsa"
    d.mkdir()
    body = b"x" * 1000
    (d / "body").write_bytes(body)
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key), str(d / "body")],
                         check=True, capture_output=True).stdout
    (d / "sig").write_bytes(sig)
    (d / "digest").write_bytes(hashlib.sha256(body).digest())
    (d / "key").write_text(modulus(key))
    why, us, alloc, resident = run_upy(_RSA, d).split()[-4:]
    return [
        figure("RSA-2048 signature check (otainstall.check_sig) on the unix port", int(us) / 1000,
               "ms", "", None, "ok" if why == "None" else "did not verify: " + why),
        figure("  heap it allocates (gc disabled, all of it garbage after)", int(alloc), "B",
               "< 8192", int(alloc) < 8192, "64-bit port; mpz digits are 16 bits"),
        figure("resident heap of otastate.py (what OTA keeps loaded)", int(resident),
               "B", "", None, "three values; slots.py (picks the slot) is dropped after "
               "boot, trial.py and otafetch.py are loaded only while needed"),
    ]


def transfer(tmp: Path, broker: MosquittoBroker, key: Path) -> list[dict[str, Any]]:
    """A gas board takes a whole bundle; rate and heap from the board's own log lines."""
    src = tmp / "fw"
    shutil.copytree(FIRMWARE, src)
    app = src / "app.py"
    app.write_text(re.sub(r'VERSION = "[^"]+"', 'VERSION = "9.9.9-bench"', app.read_text()))
    bundle = build(src, key)
    rec = Recorder(broker.host, broker.port, "safecity/v1/bench/#")
    b = SimBoard("gas", "ota", broker.host, broker.port, tmp / "ota", site="bench",
                 config={"telemetry_interval_s": 1})
    b.set_gas_ppm(0)
    b.flash.mkdir(parents=True, exist_ok=True)
    (b.flash / "ota_key").write_text(modulus(key))
    b.start()
    r = None
    try:
        rec.wait_for(lambda ms: sum("/telemetry" in m.topic for m in ms) >= 3, 30)
        idle = max(m.json()["metrics"]["heap_used_bytes"] for m in rec.matching("/telemetry"))
        r = rollout.Rollout(broker.host, broker.port, "bench")
        r.publish_chunks(bundle, rollout.CHUNK)
        t0 = time.monotonic()
        v = r.wave(["ota"], bundle, rollout.CHUNK, 120, 5)[0]
        total = time.monotonic() - t0
        log = b.log_text()
    finally:
        if r is not None:
            r.close()
        b.stop()
        rec.close()
    got = re.search(r"fw ota received (\d+) bytes ms (\d+) peak_heap (\d+)", log)
    inst = re.search(r"fw ota installed \S+ ms (\d+) peak_heap (\d+)", log)
    if not (v.ok and got and inst):
        return [figure("OTA update", None, "", "passes", False, v.why)]
    size, ms = int(got.group(1)), int(got.group(2))
    fetch_peak, install_peak = int(got.group(3)), int(inst.group(2))
    budget = heap_bytes(FIRMWARE_HEAP)
    return [
        figure("OTA transfer rate through Mosquitto (384-byte retained chunks)",
               size / ms * 1000 / 1024, "KB/s", "", None,
               f"{size} bytes in {ms} ms; 4 chunks asked for at a time, stored on the "
               "simulated flash (its stalls included); loopback broker, so the board's loop "
               "(a pass every 20 ms or less) sets the pace, not the link"),
        figure("  install at the next boot (SHA-256 from flash, RSA check, unpack)",
               int(inst.group(1)), "ms", "", None, "board clock, before import app"),
        figure("  offer to trial passed (+ a restart, online, a 5 s trial)", total, "s",
               "", None, "host clock"),
        figure("OTA peak heap while fetching, with the board running (upper bound)",
               fetch_peak, "B", f"< {budget}", fetch_peak < budget,
               f"idle before the offer: {idle} B (telemetry heap_used_bytes); each chunk "
               "starts with a collection and the figure adds all it allocated"),
        figure("OTA peak heap while installing at boot (upper bound)", install_peak, "B",
               f"< {budget}", install_peak < budget,
               "before the board's own objects: the RSA check needs kilobytes in one piece, "
               "which the running board's fragmented heap does not have"),
    ]


def run(tmp: Path, broker: MosquittoBroker) -> list[dict[str, Any]]:
    key = tmp / "bench-ota.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    return rsa_check(tmp, key) + transfer(tmp, broker, key)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d, MosquittoBroker() as br:
        for f in run(Path(d), br):
            print(f)
