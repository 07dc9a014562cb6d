"""Local health endpoint: /healthz verdict and /metrics in Prometheus text format, on loopback.

Reads metrics only through the callable the pipeline gives; never binds a public address
and never changes the agent's state."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)

MetricValue = float | int | str | bool | None
MetricsSource = Callable[[], Mapping[str, MetricValue]]
PREFIX = "safecity_edge_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# telemetry key -> (Prometheus name, type, help, scale, labels)
KNOWN: dict[str, tuple[str, str, str, float, str]] = {
    "fps": ("fps", "gauge", "Frames processed per second (recent window).", 1.0, ""),
    "inference_ms": ("inference_seconds", "gauge", "Mean detector run time.", 1e-3, ""),
    "frames": ("frames_total", "counter", "Frames processed since start.", 1.0, ""),
    "detector_runs": ("detector_runs_total", "counter", "Detector runs since start.", 1.0, ""),
    "dropped_frames": ("dropped_frames_total", "counter",
                       "Frames the grabber dropped because processing fell behind.", 1.0, ""),
    "events": ("events_total", "counter", "Event messages produced since start.", 1.0, ""),
    "spool_depth": ("spool_depth", "gauge",
                    "Messages stored on disk waiting for a broker acknowledgement.", 1.0, ""),
    "spool_dropped_events": ("spool_dropped_total", "counter",
                             "Messages dropped by the spool's size/age bounds.", 1.0,
                             'kind="event"'),
    "spool_dropped_telemetry": ("spool_dropped_total", "counter",
                                "Messages dropped by the spool's size/age bounds.", 1.0,
                                'kind="telemetry"'),
    "spool_dropped_snapshots": ("spool_dropped_total", "counter",
                                "Messages dropped by the spool's size/age bounds.", 1.0,
                                'kind="snapshot"'),
    "snapshots_failed": ("snapshots_failed_total", "counter",
                         "Snapshots not sent or written (too large to encode, a full card).",
                         1.0, ""),
    "purged_snapshots": ("snapshots_purged_total", "counter",
                         "Stored snapshots deleted after the retention period.", 1.0, ""),
    "cpu_temp_c": ("cpu_temperature_celsius", "gauge", "SoC temperature.", 1.0, ""),
    "rss_bytes": ("resident_memory_bytes", "gauge", "Resident memory of the agent.", 1.0, ""),
    "uptime_s": ("uptime_seconds", "gauge", "Seconds since the agent started.", 1.0, ""),
}
UP = {"camera": ("camera_up", "1 when the camera delivers frames."),
      "broker": ("broker_up", "1 when connected to the MQTT broker.")}


# -- host readings ---------------------------------------------------------------------------
def cpu_temp_c(thermal: Path = Path("/sys/class/thermal")) -> float | None:
    """The CPU/SoC zone's temperature (millidegrees in sysfs), or None where unreadable."""
    zones = sorted(thermal.glob("thermal_zone*"))
    preferred = [z for z in zones if _read(z / "type").lower().startswith(("cpu", "soc", "x86"))]
    for zone in preferred + zones:
        raw = _read(zone / "temp")
        try:
            return round(int(raw) / 1000.0, 1)
        except ValueError:
            continue
    return None


def rss_bytes(statm: Path = Path("/proc/self/statm")) -> int | None:
    parts = _read(statm).split()
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1]) * os.sysconf("SC_PAGE_SIZE")


def host_metrics() -> dict[str, MetricValue]:
    """Readings for heartbeat telemetry and /metrics; None where the host does not say."""
    return {"cpu_temp_c": cpu_temp_c(), "rss_bytes": rss_bytes()}


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


# -- verdict and exposition ---------------------------------------------------------------------
def verdict(metrics: Mapping[str, MetricValue], stale_frames_s: float) -> tuple[bool, list[str]]:
    """Healthy when frames flow and the broker is connected; else the reasons why not.

    Expects the pipeline's `camera`/`broker` ("online"/"offline") and, when it has one,
    `last_frame_age_s`."""
    reasons = []
    if metrics.get("camera") != "online":
        reasons.append("camera_offline")
    age = metrics.get("last_frame_age_s")
    if isinstance(age, int | float) and age > stale_frames_s:
        reasons.append(f"no_frames_for_{int(age)}s")
    if metrics.get("broker") != "online":
        reasons.append("broker_offline")
    return not reasons, reasons


def render(metrics: Mapping[str, MetricValue]) -> str:
    """Prometheus text exposition (version 0.0.4), written by prometheus_client from one
    collection of the metrics: known ones with their names, types and units, any other
    number as a gauge, strings and unknowns (None) left out."""
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

    def add(name: str, kind: str, help_: str, labels: str, value: float) -> None:
        full = PREFIX + name
        fam = families.get(full)
        if fam is None:
            label_names = [labels.split("=", 1)[0]] if labels else []
            fam = (CounterMetricFamily(full.removesuffix("_total"), help_, labels=label_names)
                   if kind == "counter" else GaugeMetricFamily(full, help_, labels=label_names))
            families[full] = fam
        label_values = [labels.split("=", 1)[1].strip('"')] if labels else []
        fam.add_metric(label_values, value)

    for key, value in metrics.items():
        if key in UP:
            name, help_ = UP[key]
            add(name, "gauge", help_, "", 1.0 if value == "online" else 0.0)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # strings and unknowns (None) are not samples
        if key in KNOWN:
            name, kind, help_, scale, labels = KNOWN[key]
            add(name, kind, help_, labels, float(value) * scale)
        elif _NAME.match(key):
            add(key, "gauge", f"Telemetry metric {key}.", "", float(value))

    class Once:
        def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
            yield from families.values()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Once())
    return generate_latest(registry).decode()


# -- server ------------------------------------------------------------------------------------
class HealthServer:
    """Serves /healthz and /metrics from a thread; `start()` returns the bound port.

    Every request calls `source()`; an exception there answers 500 and is logged, the
    agent keeps running."""

    def __init__(self, source: MetricsSource, port: int = 0, stale_frames_s: float = 10.0,
                 host: str = "127.0.0.1") -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"health endpoint host {host!r}: only loopback is allowed")
        self.source = source
        self.stale_frames_s = stale_frames_s
        self._started = time.monotonic()
        try:
            self._httpd = ThreadingHTTPServer((host, port), self._handler())
        except OSError as exc:
            raise ValueError(f"health.port: cannot listen on {host}:{port}: "
                             f"{exc.strerror or exc}") from None
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="health-http",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> int:
        self._thread.start()
        log.info("event=health_listening address=127.0.0.1 port=%d", self.port)
        return self.port

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def snapshot(self) -> dict[str, MetricValue]:
        doc: dict[str, MetricValue] = {"uptime_s": round(time.monotonic() - self._started, 3)}
        doc.update(host_metrics())
        doc.update(self.source())
        return doc

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path not in ("/healthz", "/metrics"):
                    self._send(404, "application/json", {"error": f"no such path {path}"})
                    return
                try:
                    metrics = server.snapshot()
                except Exception:
                    log.exception("event=health_source_failed")
                    self._send(500, "application/json", {"ok": False,
                                                         "reasons": ["metrics_unavailable"]})
                    return
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE, render(metrics))
                    return
                ok, reasons = verdict(metrics, server.stale_frames_s)
                self._send(200 if ok else 503, "application/json",
                           {"ok": ok, "reasons": reasons, "camera": metrics.get("camera"),
                            "broker": metrics.get("broker"), "fps": metrics.get("fps")})

            def _send(self, code: int, ctype: str, body: Any) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("event=health_request " + format, *args)

        return Handler
