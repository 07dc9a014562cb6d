"""Faults on the event path cost no event and never stop the pipeline: a relay that throws,
a snapshot folder on a full or broken card, a spool that cannot be written."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import cv2

from edge_agent.agent import Agent
from edge_agent.capture.frame import Frame
from edge_agent.config import load_config
from sim.demo import CAMERA, camera_config
from tests.mqtt_helpers import Recorder, validate


def agent_for(tmp: Path, model: Path, clip: Path, port: int = 1, **sections: Any) -> Agent:
    path = camera_config(CAMERA, tmp / "node.toml", clip=clip, model=model, port=port,
                         state_dir=tmp / "state", detector={"threads": 1}, **sections)
    return Agent(load_config(path), path)


def play(agent: Agent, vtest: Path, frames: int = 60, start: int = 250) -> list[Any]:
    cap = cv2.VideoCapture(str(vtest))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    out = []
    for i in range(frames):
        ok, img = cap.read()
        assert ok
        out += agent.process(Frame(img, i, 1.7e9 + i / 10, 100.0 + i / 10))
    cap.release()
    return out


def spooled(agent: Agent, kind: str = "event") -> list[dict]:
    return [json.loads(r.payload) for r in agent.spool.after(0, 10_000) if r.kind == kind]


def test_a_relay_that_throws_loses_no_event(pins, tmp_path, yolox_path, vtest_path, caplog):
    agent = agent_for(tmp_path, yolox_path, vtest_path,
                      gpio={"relay": 22, "relay_events": ["intrusion", "crowding"]})
    assert agent.gpio is not None and agent.gpio.relay is not None

    def broken(*args: Any) -> None:
        raise RuntimeError("relay driver fault")

    agent.gpio.relay.device.on = broken  # type: ignore[method-assign]
    try:
        events = play(agent, vtest_path)
        docs = spooled(agent)
    finally:
        agent.spool.close()
    assert events and len(docs) == len(events), "every event decided is stored"
    assert [d["seq"] for d in docs] == list(range(1, len(docs) + 1)), "numbering unbroken"
    assert "event=gpio_failed" in caplog.text


def test_a_snapshot_folder_that_cannot_be_written_costs_the_snapshot_only(
        tmp_path, yolox_path, vtest_path, caplog):
    agent = agent_for(tmp_path, yolox_path, vtest_path, snapshot={"mode": "reference"})
    (tmp_path / "state" / "snapshots").write_text("a file where the folder should be")
    try:
        events = play(agent, vtest_path)
        docs = spooled(agent)
    finally:
        agent.spool.close()
    starts = [d for d in docs if d["phase"] in ("start", "instant")]
    assert starts and len(docs) == len(events)
    assert all(d["snapshot"]["topic"].endswith(".jpg") for d in starts)
    assert "event=snapshot_failed" in caplog.text


def test_a_spool_that_cannot_be_written_still_sends_the_alarm(broker, tmp_path, yolox_path,
                                                              vtest_path, caplog):
    agent = agent_for(tmp_path, yolox_path, vtest_path, port=broker.port,
                      snapshot={"mode": "off"})
    rec = Recorder(broker.host, broker.port, "safecity/+/+/+/event/+")
    agent.uplink.start()
    try:
        assert agent.uplink.wait_connected(10)

        def full(*args: Any, **kwargs: Any) -> int:
            raise sqlite3.OperationalError("database or disk is full")

        agent.spool.put = full  # type: ignore[method-assign]
        events = play(agent, vtest_path)
        assert events
        msgs = rec.wait_for(lambda m: len(m) >= len(events), 20)
        docs = [validate(m.topic, m.payload) for m in msgs]
        assert [d["seq"] for d in docs] == list(range(1, len(events) + 1))
        assert "event=spool_write_failed" in caplog.text
    finally:
        agent.uplink.stop()
        agent.spool.close()
        rec.close()
