"""`edge-agent probe`: a technician's check of an installed node, part by part.

Loads the config and the model as `run` would, grabs one frame from the configured camera,
runs the detector on it, connects to the broker with the node's credentials, and writes the
frame with its detections drawn. One PASS/FAIL line per part, with the reason a technician
can act on; exit 0 only when every part passes. Never publishes to the contract's topics."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2

from edge_agent import changes
from edge_agent.capture import open_source
from edge_agent.capture.frame import Image
from edge_agent.config import Config, MqttConfig
from edge_agent.detect.detector import Detector
from edge_agent.detect.types import Detection
from edge_agent.uplink.connect import mqtt_answer

CAMERA_TIMEOUT_S = 15.0
"""A camera that gives no frame in this long fails (an RTSP stream can take seconds)."""
BROKER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Part:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def probe(cfg: Config, out: Path) -> list[Part]:
    """Every part's result, in the order a technician would fix them."""
    parts: list[Part] = []
    detector: Detector | None = None
    try:
        built = changes.build(cfg)
        detector = built.detector
        assert detector is not None
        w, h = detector.input_size
        parts.append(Part("model", True, f"{cfg.detector.model} ({detector.format}, "
                                         f"{w}x{h}, {len(detector.labels)} classes)"))
    except changes.BuildError as exc:
        parts.append(Part("model", False, "; ".join(exc.problems)))
    host = changes.host_problems(cfg)
    parts.append(Part("host", not host, "; ".join(host) or
                      f"state directory {cfg.node.state_dir} writable"))
    image, why = grab_frame(cfg)
    parts.append(Part("camera", image is not None,
                      why if image is None else f"{cfg.camera.kind} {cfg.camera.source!s}: "
                      f"{image.shape[1]}x{image.shape[0]} frame"))
    found: list[Detection] = []
    if image is not None and detector is not None:
        t0 = time.perf_counter()
        found = detector.detect(image)
        ms = (time.perf_counter() - t0) * 1000
        counts: dict[str, int] = {}
        for d in found:
            counts[d.label] = counts.get(d.label, 0) + 1
        seen = ", ".join(f"{n} {label}" for label, n in sorted(counts.items())) or "nothing"
        parts.append(Part("detector", True, f"{seen} in {ms:.0f} ms"))
    else:
        parts.append(Part("detector", False, "not run: needs the model and a frame"))
    parts.append(check_broker(cfg.mqtt, f"{cfg.node.site}-{cfg.node.id}-probe"))
    if image is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(out), annotate(image, found)):
                raise OSError("OpenCV could not encode or write it")
            parts.append(Part("snapshot", True, f"wrote {out}"))
        except OSError as exc:
            parts.append(Part("snapshot", False, f"{out}: {exc.strerror or exc}"))
    else:
        parts.append(Part("snapshot", False, "no frame to write"))
    return parts


def grab_frame(cfg: Config) -> tuple[Image | None, str]:
    """One frame, or why not; a driver stuck in a read cannot hang the probe."""
    source = open_source(cfg.camera)
    got: list[Image | None] = []
    error: list[str] = []

    def read() -> None:
        try:
            source.open()
            got.append(source.read())
        except Exception as exc:  # every source error is a reason for the technician
            error.append(str(exc) or type(exc).__name__)
        finally:
            try:
                source.close()
            except Exception as exc:
                error.append(f"closing: {exc}")

    thread = threading.Thread(target=read, name="probe-camera", daemon=True)
    thread.start()
    thread.join(CAMERA_TIMEOUT_S)
    if thread.is_alive():
        return None, f"{source.name}: no frame within {CAMERA_TIMEOUT_S:.0f} s"
    if error:
        return None, f"{source.name}: {error[0]}"
    if not got or got[0] is None:
        return None, f"{source.name}: delivered no frame (empty or ended)"
    return got[0], ""


def check_broker(cfg: MqttConfig, client_id: str) -> Part:
    """Connect to each broker of the list as the node would (credentials, TLS) and wait
    for its answer: a member a node cannot reach is found at installation, not in a
    failover."""
    found = [(b, mqtt_answer(cfg, b, client_id, BROKER_TIMEOUT_S)) for b in cfg.addresses]
    if all(why is None for _, why in found):
        tls = ", TLS" if cfg.tls is not None else ""
        user = f" as {cfg.username}" if cfg.username else ""
        return Part("broker", True, "; ".join(f"{b}: connected{user}{tls}" for b, _ in found))
    return Part("broker", False, "; ".join(f"{b}: {why or 'connected'}" for b, why in found))


def annotate(image: Image, found: list[Detection]) -> Image:
    out = image.copy()
    for d in found:
        x1, y1, x2, y2 = (int(v) for v in d.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 200, 255), 2)
        cv2.putText(out, f"{d.label} {d.score:.2f}", (x1, max(12, y1 - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 200, 255), 1, cv2.LINE_AA)
    return out
