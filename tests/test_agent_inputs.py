"""A camera node's SOS button and tamper switch need no camera and no broker: their events
are stored in the spool while both are away, and an input held open at shutdown ends."""

from __future__ import annotations

import json
import threading

from edge_agent.agent import Agent
from edge_agent.config import load_config
from edge_agent.uplink.spool import Spool
from sim.broker import free_port
from tests.agent_helpers import node_config
from tests.mqtt_helpers import validate
from tests.test_gpio import eventually

SOS, TAMPER = 17, 27


def spooled_events(agent: Agent) -> list[dict]:
    rows = agent.spool.after(0, 1000)
    return [json.loads(r.payload) for r in rows if r.kind == "event"]


def test_inputs_are_served_and_stored_with_no_camera_and_no_broker(pins, tmp_path, yolox_path):
    cfg = node_config(tmp_path, clip=tmp_path / "no-camera", model=yolox_path,
                      port=free_port(),
                      camera={"kind": "folder", "loop": True, "reconnect_min_s": 0.2,
                              "reconnect_max_s": 0.5},
                      gpio={"sos_button": SOS, "tamper_switch": TAMPER, "bounce_s": 0})
    agent = Agent(load_config(cfg), cfg)
    runner = threading.Thread(target=agent.run)
    runner.start()
    sos, lid = pins.pin(SOS), pins.pin(TAMPER)
    try:
        # the lid reads open at boot (pull-up, nothing closing it): that is a tamper start
        assert eventually(lambda: len(spooled_events(agent)) == 1, 10.0)
        lid.drive_low()  # lid shut
        sos.drive_low()  # SOS pressed and released
        sos.drive_high()
        assert eventually(lambda: len(spooled_events(agent)) == 3, 10.0)
        lid.drive_high()  # opened again, and the node stops while it is open
        assert eventually(lambda: len(spooled_events(agent)) == 4, 10.0)
        assert not agent.uplink.connected and agent.stats.frames == 0
    finally:
        agent.stop()
        runner.join(30)
    assert not runner.is_alive()
    spool = Spool(tmp_path / "state" / "spool.db")
    try:
        rows = [r for r in spool.after(0, 1000) if r.kind == "event"]
        docs = [validate(r.topic, r.payload) for r in rows]
    finally:
        spool.close()
    assert [(d["type"], d["phase"]) for d in docs] == [
        ("tamper_switch", "start"), ("tamper_switch", "end"), ("sos", "instant"),
        ("tamper_switch", "start"), ("tamper_switch", "end")]
    assert docs[2]["severity"] == "critical"
    assert docs[1]["event_id"] == docs[0]["event_id"] and "reason" not in docs[1]
    assert docs[4]["event_id"] == docs[3]["event_id"] and docs[4]["reason"] == "shutdown"
    assert docs[4]["duration_s"] >= 0
