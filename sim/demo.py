"""`make demo`: one camera node on the sample clip, publishing to a private local broker.

Prints every event as a consumer receives it, then a summary; starts and stops everything itself."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import tomli_w
from paho.mqtt.enums import CallbackAPIVersion

from sim import media
from sim.broker import MosquittoBroker

ROOT = Path(__file__).resolve().parent.parent
CAMERA = ROOT / "sim" / "cameras" / "vtest-plaza.toml"


def camera_config(template: Path, out: Path, *, clip: Path, model: Path, port: int,
                  state_dir: Path, realtime: bool = True, **overrides: Any) -> Path:
    """Write a runnable node config from a template with local paths filled in."""
    doc = tomllib.loads(template.read_text())
    doc["node"]["state_dir"] = str(state_dir)
    doc["camera"]["source"] = str(clip)
    doc["camera"]["realtime"] = realtime
    doc["detector"]["model"] = str(model)
    doc["mqtt"]["port"] = port
    for section, values in overrides.items():
        doc.setdefault(section, {}).update(values)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(tomli_w.dumps(doc))
    return out


class Printer:
    def __init__(self, host: str, port: int) -> None:
        self.counts: Counter[str] = Counter()
        self.snapshots = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-consumer")
        self.client.on_connect = lambda c, *a: c.subscribe("safecity/v1/#", qos=1)
        self.client.on_message = self._on_message
        self._ready = threading.Event()
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.connect(host, port)
        self.client.loop_start()
        self._ready.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.split("/")[4]
        if kind == "snapshot":
            self.snapshots += 1
            return
        doc = json.loads(msg.payload)
        if kind == "event":
            self.counts[f"{doc['type']}/{doc['phase']}"] += 1
            d = doc["details"]
            what = " ".join(f"{k}={v}" for k, v in d.items() if k != "box")
            print(f"  EVENT {doc['ts']} {doc['type']:<13} {doc['phase']:<7} "
                  f"seq={doc['seq']:<4} {what}", flush=True)
        elif kind == "status":
            print(f"  STATUS {doc['node']} {doc['state']} camera={doc.get('camera')}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--var", type=Path, default=ROOT / "var")
    args = ap.parse_args(argv)
    var = args.var.resolve()
    clip = media.sample_clip(args.shared, var)
    model = media.model("yolox-nano", args.shared, var)
    print(f"clip: {clip}\nmodel: {model}")
    with MosquittoBroker() as broker:
        print(f"broker: mosquitto on {broker.host}:{broker.port}")
        cfg = camera_config(CAMERA, var / "demo" / "cam-plaza.toml", clip=clip, model=model,
                            port=broker.port, state_dir=var / "demo" / "state")
        printer = Printer(broker.host, broker.port)
        rc = subprocess.call([sys.executable, "-m", "edge_agent.cli", "run", "--config",
                              str(cfg), "--log-level", "WARNING"])
        printer.client.loop_stop()
    print("\nsummary:")
    for key, n in sorted(printer.counts.items()):
        print(f"  {key:<24} {n}")
    print(f"  snapshots received       {printer.snapshots}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
