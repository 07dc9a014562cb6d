"""The headless agent survives what poles and basements do to it: broker outages, SIGKILL,
corrupt models and bad configs; nothing it detected is lost."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sim.broker import MosquittoBroker, free_port
from tests.agent_helpers import AgentProcess, frame_folder, node_config, short_clip
from tests.mqtt_helpers import Recorder, validate

EVENTS = "safecity/+/+/+/event/#"


def received_events(rec: Recorder) -> list[dict]:
    return [validate(m.topic, m.payload) for m in rec.matching("/event/")]


def numbered(msgs: list) -> set[tuple[str, str, int]]:
    """(event_id, phase, seq) of every event message received so far."""
    docs = [x.json() for x in msgs if "/event/" in x.topic]
    return {(d["event_id"], d["phase"], d["seq"]) for d in docs}


def dedupe(docs: list[dict]) -> list[dict]:
    """What a consumer keeps: one message per (event_id, phase, seq), first arrival."""
    seen: set[tuple[str, str, int]] = set()
    out = []
    for d in docs:
        key = (d["event_id"], d["phase"], d["seq"])
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


@pytest.fixture
def clip(tmp_path, vtest_path) -> Path:
    return short_clip(vtest_path, tmp_path / "walkway.avi")


@pytest.mark.slow
def test_sixty_second_broker_outage_loses_no_event(tmp_path, yolox_path, clip):
    broker = MosquittoBroker(persistence=True).start()
    try:
        rec = Recorder(broker.host, broker.port, EVENTS, client_id="city-platform",
                       persistent=True)
        cfg = node_config(tmp_path, clip=clip, model=yolox_path, port=broker.port,
                          camera={"loop": True, "speed": 2.0})
        agent = AgentProcess(cfg, tmp_path / "agent.log")
        agent.wait_log(r"event=intrusion phase=start", timeout=90)
        broker.stop()
        outage_from = len(agent.logged_events())
        time.sleep(60)
        during = agent.logged_events()[outage_from:]
        assert len(during) >= 3, "the agent kept detecting during the outage"
        assert agent.proc.poll() is None
        broker.start()
        agent.wait_log(r"event=mqtt_connected", count=2, timeout=30)
        assert agent.terminate() == 0
        logged = agent.logged_events()
        want = {(i, p, s) for _, p, i, s in logged}
        rec.wait_for(lambda m: numbered(m) >= want, timeout=60)
        docs = received_events(rec)
        rec.close()
    finally:
        broker.stop()
    kept = dedupe(docs)
    # in order, every seq exactly once, the same id for the same message if it came twice
    assert [d["seq"] for d in kept] == [s for *_, s in logged]
    assert [d["seq"] for d in kept] == list(range(1, len(logged) + 1))
    ids = {}
    for d in docs:
        assert ids.setdefault((d["seq"], d["phase"]), d["event_id"]) == d["event_id"]
    outage_seqs = {s for *_, s in during}
    assert all(d.get("historical") for d in kept if d["seq"] in outage_seqs)


@pytest.mark.slow
def test_events_spooled_before_sigkill_arrive_after_restart(tmp_path, yolox_path, clip):
    port = free_port()  # nothing listens yet: every event stays in the spool
    cfg = node_config(tmp_path, clip=clip, model=yolox_path, port=port,
                      camera={"loop": True, "speed": 2.0})
    first = AgentProcess(cfg, tmp_path / "first.log")
    first.wait_log(r"event=intrusion phase=start", timeout=90, count=2)
    first.kill()
    spooled = [(i, p, s) for _, p, i, s in first.logged_events()]
    assert spooled
    with MosquittoBroker(port=port) as broker:
        rec = Recorder(broker.host, broker.port, EVENTS)
        second = AgentProcess(cfg, tmp_path / "second.log")
        rec.wait_for(lambda m: numbered(m) >= set(spooled), timeout=90)
        assert second.terminate() == 0
        docs = received_events(rec)
        rec.close()
    boot1 = [d for d in dedupe(docs) if d["boot"] == 1]
    assert [(d["event_id"], d["phase"], d["seq"]) for d in boot1][:len(spooled)] == spooled
    assert all(d["historical"] for d in boot1)
    assert {d["boot"] for d in docs} <= {1, 2}


def test_corrupt_model_and_bad_config_refuse_to_start_and_keep_the_spool(
        tmp_path, yolox_path, clip):
    port = free_port()
    cfg = node_config(tmp_path, clip=clip, model=yolox_path, port=port,
                      camera={"loop": True, "speed": 2.0})
    first = AgentProcess(cfg, tmp_path / "first.log")
    first.wait_log(r"event=intrusion phase=start", timeout=90)
    assert first.terminate() == 0  # broker unreachable: the events stay spooled
    spooled = [(i, p, s) for _, p, i, s in first.logged_events()]
    state = tmp_path / "state"
    spool_before = (state / "spool.db").stat().st_size
    boot_before = (state / "boot").read_text()

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x01garbage" * 100)
    bad_model = node_config(tmp_path, clip=clip, model=corrupt, port=port, name="bad.toml")
    proc = AgentProcess(bad_model, tmp_path / "bad-model.log")
    assert proc.proc.wait(60) == 2
    out = proc.log().strip().splitlines()
    assert len(out) == 1 and str(corrupt) in out[0], out

    broken = tmp_path / "broken.toml"
    broken.write_text(cfg.read_text().replace("threads = 1", "threads = 0"))
    proc = AgentProcess(broken, tmp_path / "broken.log")
    assert proc.proc.wait(60) == 2
    assert "detector.threads" in proc.log()

    assert (state / "boot").read_text() == boot_before, "a refused start is not a boot"
    assert (state / "spool.db").stat().st_size >= spool_before
    with MosquittoBroker(port=port) as broker:
        rec = Recorder(broker.host, broker.port, EVENTS)
        again = AgentProcess(cfg, tmp_path / "again.log")
        rec.wait_for(lambda m: numbered(m) >= set(spooled), timeout=90)
        assert again.terminate() == 0
        rec.close()


def test_camera_removed_mid_run_reports_offline_and_recovers(broker, tmp_path, yolox_path,
                                                             vtest_path):
    frames = frame_folder(vtest_path, tmp_path / "frames", 20)
    cfg = node_config(tmp_path, clip=frames, model=yolox_path, port=broker.port,
                      camera={"kind": "folder", "loop": True, "fps": 10, "reconnect_max_s": 1})
    rec = Recorder(broker.host, broker.port, ["safecity/+/+/+/status",
                                              "safecity/+/+/+/telemetry"])
    agent = AgentProcess(cfg, tmp_path / "agent.log")

    def camera_state(state: str, after: int = 0):
        return lambda m: any(x.topic.endswith("/status") and x.json().get("camera") == state
                             for x in m[after:])

    rec.wait_for(camera_state("online"), timeout=60)
    frames.rename(tmp_path / "unplugged")
    mark = len(rec.messages)
    rec.wait_for(camera_state("offline", mark), timeout=30)
    mark = len(rec.messages)
    rec.wait_for(lambda m: any(x.topic.endswith("/telemetry") and
                               x.json()["metrics"]["camera"] == "offline" for x in m[mark:]),
                 timeout=30)
    assert agent.proc.poll() is None, "the agent keeps running without its camera"
    (tmp_path / "unplugged").rename(frames)
    rec.wait_for(camera_state("online", mark), timeout=30)
    assert agent.terminate() == 0
    for m in rec.messages:
        validate(m.topic, m.payload)
    rec.close()
