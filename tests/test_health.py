"""Health endpoint: a real HTTP server on loopback, read with urllib, exposition parsed."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.health import HealthServer, cpu_temp_c, render, rss_bytes

SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"(?:\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\]|\\.)*\""
    r"(?:,[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\]|\\.)*\")*)?\})?"
    r" (?P<value>[-+]?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|NaN|Inf))$")


def parse_exposition(text: str) -> dict[str, dict[str, Any]]:
    """A strict reader of the Prometheus text format 0.0.4 (what a scraper rejects, this
    rejects): every sample belongs to a family declared by # TYPE before it."""
    assert text.endswith("\n"), "exposition must end with a newline"
    families: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            families.setdefault(name, {"samples": {}})["help"] = line.split(" ", 3)[3]
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "untyped", "summary", "histogram")
            assert "type" not in families.get(name, {}), f"TYPE twice for {name}"
            families.setdefault(name, {"samples": {}})["type"] = kind
        else:
            m = SAMPLE.match(line)
            assert m, f"not a valid sample line: {line!r}"
            fam = families.get(m["name"])
            assert fam is not None and "type" in fam, f"{m['name']}: sample before its TYPE"
            key = m["labels"] or ""
            assert key not in fam["samples"], f"duplicate sample {line!r}"
            fam["samples"][key] = float(m["value"])
    return families


class Source:
    """What the pipeline would hand over: its telemetry metrics, changeable by the test."""

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {
            "fps": 9.8, "inference_ms": 41.5, "frames": 1200, "detector_runs": 300,
            "dropped_frames": 3, "events": 7, "spool_depth": 2, "spool_dropped_events": 0,
            "spool_dropped_telemetry": 5, "camera": "online", "broker": "online",
            "last_frame_age_s": 0.1,
        }
        self.fail = False

    def __call__(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("pipeline is gone")
        return dict(self.metrics)


@pytest.fixture
def served() -> Iterator[tuple[str, Source]]:
    source = Source()
    server = HealthServer(source, port=0, stale_frames_s=5.0)
    port = server.start()
    yield f"http://127.0.0.1:{port}", source
    server.stop()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def test_healthz_ok_when_frames_flow_and_broker_up(served: tuple[str, Source]) -> None:
    url, _ = served
    code, ctype, body = get(url + "/healthz")
    assert code == 200 and ctype == "application/json"
    assert json.loads(body)["ok"] is True


@pytest.mark.parametrize("change, reason", [
    ({"broker": "offline"}, "broker_offline"),
    ({"camera": "offline"}, "camera_offline"),
    ({"last_frame_age_s": 42.0}, "no_frames_for_42s"),
])
def test_healthz_503_names_the_reason(served: tuple[str, Source], change: dict[str, Any],
                                      reason: str) -> None:
    url, source = served
    source.metrics.update(change)
    code, _, body = get(url + "/healthz")
    assert code == 503
    assert json.loads(body) == {**json.loads(body), "ok": False, "reasons": [reason]}


def test_metrics_parse_as_prometheus_text(served: tuple[str, Source]) -> None:
    url, source = served
    code, ctype, body = get(url + "/metrics")
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
    fam = parse_exposition(body)
    assert fam["safecity_edge_fps"]["samples"][""] == 9.8
    assert fam["safecity_edge_inference_seconds"]["samples"][""] == pytest.approx(0.0415)
    assert fam["safecity_edge_dropped_frames_total"]["type"] == "counter"
    assert fam["safecity_edge_events_total"]["samples"][""] == 7
    assert fam["safecity_edge_spool_depth"]["samples"][""] == 2
    assert fam["safecity_edge_spool_dropped_total"]["samples"] == {
        'kind="event"': 0, 'kind="telemetry"': 5}
    assert fam["safecity_edge_camera_up"]["samples"][""] == 1
    assert fam["safecity_edge_broker_up"]["samples"][""] == 1
    assert fam["safecity_edge_uptime_seconds"]["samples"][""] >= 0
    rss = fam["safecity_edge_resident_memory_bytes"]["samples"][""]
    assert rss > 1_000_000  # a Python process with numpy loaded is well above 1 MB
    temp = cpu_temp_c()
    if temp is None:
        assert "safecity_edge_cpu_temperature_celsius" not in fam
    else:
        assert fam["safecity_edge_cpu_temperature_celsius"]["samples"][""] == temp

    source.metrics["broker"] = "offline"
    fam = parse_exposition(get(url + "/metrics")[2])
    assert fam["safecity_edge_broker_up"]["samples"][""] == 0


def test_failing_source_answers_500_and_server_survives(served: tuple[str, Source]) -> None:
    url, source = served
    source.fail = True
    assert get(url + "/healthz")[0] == 500
    assert get(url + "/nope")[0] == 404
    source.fail = False
    assert get(url + "/healthz")[0] == 200


def test_only_loopback_binds() -> None:
    with pytest.raises(ValueError, match="loopback"):
        HealthServer(Source(), host="0.0.0.0")


def test_cpu_temperature_from_sysfs_layout(tmp_path: Path) -> None:
    for i, (kind, milli) in enumerate([("acpitz", "27800"), ("cpu-thermal", "51234")]):
        zone = tmp_path / f"thermal_zone{i}"
        zone.mkdir()
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(milli + "\n")
    assert cpu_temp_c(tmp_path) == 51.2
    assert cpu_temp_c(tmp_path / "missing") is None
    assert rss_bytes(tmp_path / "nostatm") is None


def test_unknown_numeric_metrics_become_gauges_strings_are_skipped() -> None:
    fam = parse_exposition(render({"gas_ppm": 310.5, "note": "hello", "flag": True,
                                   "inference_ms": None}))
    assert fam == {"safecity_edge_gas_ppm": {"help": "Telemetry metric gas_ppm.",
                                             "type": "gauge", "samples": {"": 310.5}}}
