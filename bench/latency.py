"""Runs `edge-agent run` as a process with a camera-paced clip and a subscriber on loopback:
capture-to-subscriber latency of events, start-up time to the first status, peak memory.

Measures only; never asserts. The subscriber is the consumer a real site would run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


@dataclass
class AgentRun:
    latencies_ms: list[float] = field(default_factory=list)
    """Event `ts` (the frame's capture time) to arrival at the subscriber, start/instant/
    update phases (an end's ts is the time the agent decided it, not a capture time)."""
    inference_ms: list[float] = field(default_factory=list)
    """The agent's own mean inference time from each telemetry message."""
    startup_s: float = float("nan")
    """Process start to the first live (not retained) `online` status at the subscriber."""
    peak_rss_mb: float = float("nan")
    peak_anon_mb: float = float("nan")
    """The largest anonymous part of the resident set seen (the agent's own heap, arenas,
    buffers and stacks); the rest of the RSS is library code and data mapped from files,
    shared with other processes that map the same libraries."""
    returncode: int | None = None


def _parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_agent(config: Path, host: str, port: int, timeout_s: float = 120.0) -> AgentRun:
    out = AgentRun()
    lock = threading.Lock()
    t_start = [0.0]

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        if msg.retain or "/snapshot/" in msg.topic:
            return  # a retained status is from an earlier run
        doc = json.loads(msg.payload)
        with lock:
            if "/event/" in msg.topic and doc.get("phase") != "end":
                out.latencies_ms.append((now - _parse_ts(doc["ts"])) * 1000)
            elif msg.topic.endswith("/status") and doc.get("state") == "online" \
                    and out.startup_s != out.startup_s:
                out.startup_s = now - t_start[0]
            elif msg.topic.endswith("/telemetry"):
                inf = doc.get("metrics", {}).get("inference_ms")
                if isinstance(inf, int | float):
                    out.inference_ms.append(float(inf))

    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-latency")
    client.on_connect = lambda c, *a: c.subscribe("safecity/#", qos=1)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError("bench subscriber did not subscribe")
        t_start[0] = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "run", "--config",
                                 str(config), "--log-level", "WARNING"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        hwm = anon = 0.0
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            status = _status_mb(proc.pid)
            hwm = max(hwm, status.get("VmHWM", 0.0))
            anon = max(anon, status.get("RssAnon", 0.0))
            time.sleep(0.2)
        if proc.poll() is None:
            proc.terminate()
        out.returncode = proc.wait(30)
        out.peak_rss_mb = hwm
        out.peak_anon_mb = anon
        time.sleep(0.5)  # the last messages in flight
    finally:
        client.loop_stop()
        client.disconnect()
    return out


def _status_mb(pid: int) -> dict[str, float]:
    """The memory lines of /proc/PID/status in MB: VmHWM (the peak resident set so far, as
    the kernel counts it), RssAnon, RssFile."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile") and value.strip().endswith("kB"):
                out[key] = int(value.split()[0]) / 1024
    except (OSError, ValueError):
        pass
    return out
