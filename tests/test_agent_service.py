"""The agent as systemd runs it: READY=1 after the first frame and the broker, watchdog pings
only while frames flow, and the local health endpoint telling the truth."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error
import urllib.request

from sim.broker import free_port
from tests.agent_helpers import AgentProcess, frame_folder, node_config


def test_ready_watchdog_and_health_follow_frames_and_broker(broker, tmp_path, yolox_path,
                                                           vtest_path):
    frames = frame_folder(vtest_path, tmp_path / "frames", 10)
    health = free_port()
    cfg = node_config(tmp_path, clip=frames, model=yolox_path, port=broker.port,
                      camera={"kind": "folder", "loop": True, "fps": 10,
                              "reconnect_min_s": 0.2, "reconnect_max_s": 0.5},
                      health={"port": health, "stale_frames_s": 2.0})
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.5)
    agent = AgentProcess(cfg, tmp_path / "agent.log",
                         env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"})
    got: list[tuple[float, str]] = []

    def collect(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                got.append((time.monotonic(), sock.recv(4096).decode()))
            except TimeoutError:
                pass

    def healthz() -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        collect(25)
        texts = [t for _, t in got]
        ready = [i for i, t in enumerate(texts) if "READY=1" in t.split("\n")]
        assert ready, texts
        assert agent.log().index("event=first_frame") < agent.log().index("event=ready")
        pings = [at for at, t in got[ready[0]:] if "WATCHDOG=1" in t.split("\n")]
        assert len(pings) >= 5, texts  # every half interval while frames flow
        code, doc = healthz()
        assert code == 200, doc
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert "safecity_edge_camera_up 1" in metrics and "safecity_edge_frames_total" in metrics

        frames.rename(tmp_path / "unplugged")  # frames stop: the pings must stop too
        collect(3)  # health.stale_frames_s (2 s) passes; what was sent before is read here
        got.clear()
        collect(4)
        assert not [t for _, t in got if "WATCHDOG=1" in t.split("\n")], \
            "no watchdog ping without frames: systemd restarts a stuck node"
        code, doc = healthz()
        assert code == 503, doc
        assert agent.proc.poll() is None

        (tmp_path / "unplugged").rename(frames)
        got.clear()
        collect(8)
        assert [t for _, t in got if "WATCHDOG=1" in t.split("\n")], "pings resume"

        got.clear()
        agent.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while agent.proc.poll() is None and time.monotonic() < deadline:
            collect(0.5)
        collect(0.5)
        assert agent.terminate() == 0
        assert any("STOPPING=1" in t.split("\n") for _, t in got), got
    finally:
        if agent.proc.poll() is None:
            agent.kill()
        sock.close()
