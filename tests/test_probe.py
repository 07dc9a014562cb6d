"""`edge-agent probe`: a technician's pass/fail per part of an installed node, against the
real camera source, model and broker; exit 0 only when every part passes."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np

from edge_agent.config import BrokerAddress, MqttConfig
from edge_agent.probe import check_broker
from sim.broker import free_port
from tests.agent_helpers import frame_folder, node_config


def probe(cfg, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", "probe", "--config",
                           str(cfg), "--out", str(out)], capture_output=True, text=True,
                          timeout=120)


def lines(r: subprocess.CompletedProcess) -> dict[str, str]:
    return {ln.split()[1].rstrip(":"): ln for ln in r.stdout.splitlines()
            if ln.startswith(("PASS ", "FAIL "))}


def test_a_working_node_passes_every_part_and_gets_its_annotated_frame(
        broker, tmp_path, yolox_path, vtest_path):
    frames = frame_folder(vtest_path, tmp_path / "frames", 3)
    cfg = node_config(tmp_path, clip=frames, model=yolox_path, port=broker.port,
                      camera={"kind": "folder"})
    out = tmp_path / "probe.jpg"
    r = probe(cfg, out)
    assert r.returncode == 0, r.stdout + r.stderr
    got = lines(r)
    assert set(got) == {"model", "host", "camera", "detector", "broker", "snapshot"}
    assert all(ln.startswith("PASS") for ln in got.values()), got
    assert "768x576 frame" in got["camera"] and "person" in got["detector"]
    assert f"127.0.0.1:{broker.port}: connected" in got["broker"]
    drawn = cv2.imread(str(out))
    original = cv2.imread(str(sorted(frames.iterdir())[0]))
    assert drawn is not None and drawn.shape == original.shape
    assert np.abs(drawn.astype(int) - original.astype(int)).sum() > 0, "boxes are drawn"
    assert "probe: all parts pass" in r.stdout


def test_a_missing_camera_and_a_down_broker_fail_with_their_reasons(
        tmp_path, yolox_path):
    port = free_port()
    cfg = node_config(tmp_path, clip=tmp_path / "no-camera", model=yolox_path, port=port,
                      camera={"kind": "folder"})
    r = probe(cfg, tmp_path / "probe.jpg")
    assert r.returncode == 1, r.stdout + r.stderr
    got = lines(r)
    assert got["model"].startswith("PASS") and got["host"].startswith("PASS")
    assert got["camera"].startswith("FAIL") and "no-camera" in got["camera"]
    assert got["detector"].startswith("FAIL") and got["snapshot"].startswith("FAIL")
    assert got["broker"].startswith("FAIL") and "refused" in got["broker"].lower()
    assert "FAILED: camera, detector, broker, snapshot" in r.stdout
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "probe.jpg").exists()


def test_the_broker_part_asks_every_broker_of_the_list(broker):
    # A member the node cannot reach is found at installation, not in a failover.
    dead = free_port()
    cfg = MqttConfig(brokers=[BrokerAddress(host="127.0.0.1", port=broker.port),
                              BrokerAddress(host="127.0.0.1", port=dead)])
    part = check_broker(cfg, "s1-cam-1-probe")
    assert not part.ok
    assert f"127.0.0.1:{broker.port}: connected" in part.detail
    assert f"127.0.0.1:{dead}: ConnectionRefusedError" in part.detail
    assert check_broker(cfg.model_copy(update={"brokers": cfg.brokers[:1]}),
                        "s1-cam-1-probe").ok
