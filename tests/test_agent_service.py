"""The agent as systemd runs it (Type=notify, WatchdogSec): this test plays systemd's part on
the notify socket with WATCHDOG_USEC set. READY comes once the agent is initialised, never
waiting on the camera or the broker; the watchdog follows the agent's own loop; camera and
broker health are reported and recovered inside the process."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from sim.broker import MosquittoBroker, free_port
from tests.agent_helpers import AgentProcess, frame_folder, node_config
from tests.mqtt_helpers import Recorder, validate

WATCHDOG_USEC = 1_000_000
"""systemd's WatchdogSec=1: the agent pings every half second while its loop turns."""


class Systemd:
    """The service manager's side of sd_notify: a datagram socket that records every
    notification with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self.got: list[tuple[float, list[str]]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.got.append((time.monotonic(), data.decode().split("\n")))

    def since(self, t: float) -> list[list[str]]:
        with self._lock:
            return [lines for at, lines in self.got if at >= t]

    def pings(self, t0: float, t1: float | None = None) -> int:
        with self._lock:
            return sum("WATCHDOG=1" in lines for at, lines in self.got
                       if at >= t0 and (t1 is None or at < t1))

    def statuses(self, t: float = 0.0) -> list[str]:
        return [line[len("STATUS="):] for lines in self.since(t) for line in lines
                if line.startswith("STATUS=")]

    def wait(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.1)
        raise AssertionError(f"no {what} within {timeout}s; got {self.since(0)[-20:]}")

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self._sock.close()


def healthz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def assert_watchdog_fed(systemd: Systemd, seconds: float, why: str) -> None:
    """Over `seconds`, a ping at least every WatchdogSec: systemd would not kill the agent."""
    t0 = time.monotonic()
    time.sleep(seconds)
    pings = systemd.pings(t0)
    assert pings >= int(seconds / (WATCHDOG_USEC / 1e6)), f"{pings} pings in {seconds}s {why}"


def stop_gracefully(agent: AgentProcess, systemd: Systemd) -> None:
    t0 = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.terminate(timeout=30) == 0, agent.log()[-3000:]
    time.sleep(0.3)
    assert any("STOPPING=1" in lines for lines in systemd.since(t0))


def test_camera_unreachable_at_boot_is_ready_fed_and_recovers_in_process(
        broker, tmp_path, yolox_path, vtest_path):
    staged = frame_folder(vtest_path, tmp_path / "staged", 10)
    frames = tmp_path / "frames"  # not there at boot: the camera is unplugged
    health = free_port()
    cfg = node_config(tmp_path, clip=frames, model=yolox_path, port=broker.port,
                      camera={"kind": "folder", "loop": True, "fps": 10,
                              "reconnect_min_s": 0.2, "reconnect_max_s": 0.5},
                      health={"port": health, "stale_frames_s": 2.0})
    systemd = Systemd(tmp_path / "notify.sock")
    rec = Recorder(broker.host, broker.port, ["safecity/+/+/+/status"])
    agent = AgentProcess(cfg, tmp_path / "agent.log", env=systemd.env())
    try:
        systemd.wait(lambda: any("READY=1" in x for x in systemd.since(0)), 60, "READY=1")
        ready = next(x for x in systemd.since(0) if "READY=1" in x)
        assert "STATUS=running: camera offline, broker offline" in ready \
            or "STATUS=running: camera offline, broker online" in ready, ready
        assert "event=first_frame" not in agent.log()
        assert_watchdog_fed(systemd, 6, "with no camera")
        assert agent.proc.poll() is None
        code, doc = healthz(health)
        assert code == 503 and "camera_offline" in doc["reasons"], doc
        rec.wait_for(lambda m: any(x.json().get("camera") == "offline" for x in m), 30)

        mark = time.monotonic()
        staged.rename(frames)  # the camera is plugged in: capture finds it by itself
        systemd.wait(lambda: "running: camera online, broker online" in systemd.statuses(mark),
                     30, "STATUS camera online")
        rec.wait_for(lambda m: any(x.json().get("camera") == "online" for x in m), 30)
        assert healthz(health)[0] == 200
        assert_watchdog_fed(systemd, 3, "with the camera back")
        stop_gracefully(agent, systemd)
        for m in rec.messages:
            validate(m.topic, m.payload)
    finally:
        if agent.proc.poll() is None:
            agent.kill()
        systemd.close()
        rec.close()


def test_camera_lost_mid_run_ends_its_events_keeps_the_watchdog_and_drops_the_relay(
        broker, tmp_path, yolox_path, vtest_path):
    frames = frame_folder(vtest_path, tmp_path / "frames", 40)
    cfg = node_config(tmp_path, clip=frames, model=yolox_path, port=broker.port,
                      camera={"kind": "folder", "loop": True, "fps": 10,
                              "reconnect_min_s": 0.2, "reconnect_max_s": 0.5},
                      health={"stale_frames_s": 2.0},
                      gpio={"relay": 22, "relay_events": ["intrusion"], "relay_hold_s": 0.5})
    systemd = Systemd(tmp_path / "notify.sock")
    rec = Recorder(broker.host, broker.port, ["safecity/+/+/+/event/+",
                                              "safecity/+/+/+/status",
                                              "safecity/+/+/+/zone/+"])
    agent = AgentProcess(cfg, tmp_path / "agent.log",
                         env=systemd.env() | {"GPIOZERO_PIN_FACTORY": "mock"})

    def walkway() -> list[dict]:
        return [x.json() for x in rec.messages if x.topic.endswith("/zone/walkway")]


    def events(phase: str) -> list[dict]:
        return [x.json() for x in rec.messages if "/event/" in x.topic
                and x.json()["phase"] == phase]

    try:
        rec.wait_for(lambda m: events("start") and
                     any(e["type"] == "intrusion" for e in events("start")), 90)
        agent.wait_log("event=relay_on", 30)
        rec.wait_for(lambda m: any(z["count"] > 0 for z in walkway()), 30)
        frames.rename(tmp_path / "unplugged")
        mark = time.monotonic()
        agent.wait_log("event=camera_lost", 30)

        def all_closed() -> bool:
            ended = {e["event_id"] for e in events("end")}
            return {e["event_id"] for e in events("start")} <= ended

        rec.wait_for(lambda m: all_closed(), 30)
        log = agent.log()
        lost_at = log.index("event=camera_lost")
        after = log[lost_at:]
        assert "event=relay_off" in after, "the relay follows the events the loss ended"
        assert "event=relay_on" not in after
        lost_ends = [e for e in events("end") if e.get("reason") == "camera_lost"]
        assert lost_ends, events("end")
        rec.wait_for(lambda m: walkway()[-1]["count"] == 0, 10)  # nobody is seen any more
        assert_watchdog_fed(systemd, 4, "while the camera is gone")
        systemd.wait(lambda: any("camera offline" in s for s in systemd.statuses(mark)), 10,
                     "STATUS camera offline")
        assert agent.proc.poll() is None

        (tmp_path / "unplugged").rename(frames)
        agent.wait_log("event=camera_watching", 30, count=2)
        stop_gracefully(agent, systemd)
        starts = [e["event_id"] for e in events("start")]
        ends = [e["event_id"] for e in events("end")]
        assert sorted(starts) == sorted(ends), "every start gets exactly one end"
        for m in rec.messages:
            validate(m.topic, m.payload)
    finally:
        if agent.proc.poll() is None:
            agent.kill()
        systemd.close()
        rec.close()


def test_broker_down_at_boot_is_ready_logs_why_and_delivers_when_it_comes(
        tmp_path, yolox_path, vtest_path):
    frames = frame_folder(vtest_path, tmp_path / "frames", 40)
    port = free_port()  # nothing listens there yet
    cfg = node_config(tmp_path, clip=frames, model=yolox_path, port=port,
                      camera={"kind": "folder", "loop": True, "fps": 10},
                      mqtt={"reconnect_min_s": 0.2, "reconnect_max_s": 1})
    systemd = Systemd(tmp_path / "notify.sock")
    agent = AgentProcess(cfg, tmp_path / "agent.log", env=systemd.env())
    broker = rec = None
    try:
        systemd.wait(lambda: any("READY=1" in x for x in systemd.since(0)), 60, "READY=1")
        agent.wait_log(r"event=intrusion phase=start", 60)
        assert_watchdog_fed(systemd, 5, "with no broker")
        log = agent.log()
        failed = re.findall(r"event=mqtt_connect_failed .*", log)
        assert failed and "refused" in failed[0].lower(), log[-3000:]
        # several attempts were made (reconnect_max_s=1) but one cause is logged once a minute
        assert len(failed) == 1, failed
        assert any("broker offline" in s for s in systemd.statuses())

        broker = MosquittoBroker(port=port).start()
        rec = Recorder(broker.host, broker.port, ["safecity/+/+/+/event/+"])
        rec.wait_for(lambda m: any(x.json()["type"] == "intrusion" and x.json()["phase"]
                                   == "start" and x.json().get("historical") for x in m), 60)
        agent.wait_log("event=mqtt_connect_recovered", 10)
        systemd.wait(lambda: any("broker online" in s for s in systemd.statuses()), 10,
                     "STATUS broker online")
        stop_gracefully(agent, systemd)
    finally:
        if agent.proc.poll() is None:
            agent.kill()
        systemd.close()
        if rec is not None:
            rec.close()
        if broker is not None:
            broker.stop()


def test_health_endpoint_and_metrics_tell_the_truth(broker, tmp_path, yolox_path, vtest_path):
    frames = frame_folder(vtest_path, tmp_path / "frames", 10)
    health = free_port()
    cfg = node_config(tmp_path, clip=frames, model=yolox_path, port=broker.port,
                      camera={"kind": "folder", "loop": True, "fps": 10,
                              "reconnect_min_s": 0.2, "reconnect_max_s": 0.5},
                      health={"port": health, "stale_frames_s": 2.0})
    agent = AgentProcess(cfg, tmp_path / "agent.log")
    try:
        agent.wait_log("event=first_frame", 60)
        deadline = time.monotonic() + 30
        while healthz(health)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert healthz(health)[0] == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert "safecity_edge_camera_up 1" in metrics and "safecity_edge_frames_total" in metrics
        shutil.move(str(frames), str(tmp_path / "unplugged"))
        deadline = time.monotonic() + 30
        while healthz(health)[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.3)
        code, doc = healthz(health)
        assert code == 503 and doc["reasons"], doc
        assert agent.terminate() == 0
    finally:
        if agent.proc.poll() is None:
            agent.kill()
