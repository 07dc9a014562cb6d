"""Commands to a running camera node over the real broker: every one acknowledged, bad ones
rejected with the old config kept, and none of them can crash or stall the agent."""

from __future__ import annotations

import json

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.agent_helpers import AgentProcess, node_config, short_clip
from tests.mqtt_helpers import Recorder, validate

BASE = "safecity/v1/demo-block/cam-plaza"


class Operator:
    """The city platform's side: sends commands and waits for their acks."""

    def __init__(self, broker) -> None:
        self.rec = Recorder(broker.host, broker.port, [f"{BASE}/cmd/ack", f"{BASE}/snapshot/#",
                                                       f"{BASE}/status"])
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, payload: bytes | dict, cmd_id: str | None = None, timeout: float = 20,
             tail: str = "cmd"):
        raw = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        before = len(self.rec.matching("/cmd/ack"))
        self.client.publish(f"{BASE}/{tail}", raw, qos=1).wait_for_publish(5)
        msgs = self.rec.wait_for(lambda m: len([x for x in m if x.topic.endswith("/cmd/ack")])
                                 > before, timeout=timeout)
        ack = [x for x in msgs if x.topic.endswith("/cmd/ack")][before]
        doc = validate(ack.topic, ack.payload)
        if cmd_id is not None:
            assert doc["id"] == cmd_id
        return doc

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        self.rec.close()


def test_commands_over_mqtt(broker, tmp_path, yolox_path, vtest_path):
    clip = short_clip(vtest_path, tmp_path / "walkway.avi")
    cfg = node_config(tmp_path, clip=clip, model=yolox_path, port=broker.port,
                      camera={"loop": True}, mqtt={"password": "s3cret", "username": "cam"})
    cfg.chmod(0o640)
    op = Operator(broker)
    agent = AgentProcess(cfg, tmp_path / "agent.log")
    try:
        agent.wait_log("event=mqtt_connected", timeout=90)
        agent.wait_log("event=first_frame", timeout=90)
        assert op.send({"id": "p1", "cmd": "ping"}, "p1")["result"] == {"pong": True}

        conf = op.send({"id": "g1", "cmd": "get_config"}, "g1")["result"]
        assert conf["mqtt"]["password"] == "***" and conf["node"]["id"] == "cam-plaza"
        assert "s3cret" not in agent.log(), "secrets never reach the log"

        # a valid live change is applied and survives a restart
        crowd = [r for r in conf["rules"] if r["type"] == "crowding"][0]
        rules = [dict(r, max_count=2) if r is crowd else r for r in conf["rules"]]
        ack = op.send({"id": "s1", "cmd": "set_config", "args": {"config": {"rules": rules}}})
        assert ack["ok"] and ack["result"]["applied"] == ["rules"], ack
        conf = op.send({"id": "g2", "cmd": "get_config"})["result"]
        assert [r for r in conf["rules"] if r["type"] == "crowding"][0]["max_count"] == 2

        # an invalid change names the field, and the old config stays
        ack = op.send({"id": "s2", "cmd": "set_config", "args": {"config": {
            "zones": [{"name": "walkway", "points": [[0, 0], [1, 1]]}]}}}, "s2")
        assert not ack["ok"] and ack["error"]["code"] == "bad_args"
        assert "zones[0].points" in ack["error"]["message"]
        ack = op.send({"id": "s3", "cmd": "set_config", "args": {"config": {
            "detector": {"threads": "many"}}}}, "s3")
        assert not ack["ok"] and "detector.threads" in ack["error"]["message"]
        assert op.send({"id": "g3", "cmd": "get_config"})["result"] == conf

        # snapshot: a redacted JPEG on the snapshot topic
        snap = op.send({"id": "n1", "cmd": "snapshot"}, "n1")["result"]
        jpeg = op.rec.wait_for(lambda m: any(x.topic == snap["topic"] for x in m))
        assert [x for x in jpeg if x.topic == snap["topic"]][0].payload[:2] == b"\xff\xd8"
        assert snap["redacted"] is True

        # a dashboard button: its topic runs the command it names, and nothing else
        pressed = op.send({"id": "ha-1", "cmd": "snapshot"}, "ha-1", tail="button/snapshot")
        assert pressed["ok"] and pressed["result"]["redacted"] is True
        ack = op.send({"id": "ha-2", "cmd": "set_config", "args": {"config": {}}}, "ha-2",
                      tail="button/snapshot")
        assert not ack["ok"] and ack["error"]["code"] == "rejected"

        test = op.send({"id": "t1", "cmd": "self_test"}, "t1")["result"]
        assert test["checks"]["broker"]["ok"] and test["checks"]["camera"]["ok"], test
        assert test["checks"]["detector"]["runs"] > 0

        # malformed input: one error ack each, the agent keeps running
        for payload, code in ((b"{not json", "malformed"), (b"x" * 20000, "too_large"),
                              (b'{"id": "u1", "cmd": "format_disk"}', "unknown_command"),
                              (b'{"id": "b1", "cmd": "set_config", "args": {"config": 3}}',
                               "bad_args")):
            ack = op.send(payload)
            assert not ack["ok"] and ack["error"]["code"] == code, (payload[:20], ack)
        assert op.send({"id": "p2", "cmd": "ping"})["ok"]

        ack = op.send({"id": "r1", "cmd": "restart"}, "r1")
        assert ack["ok"]
        assert agent.proc.wait(30) == 75, "non-zero, so systemd's Restart=on-failure restarts"
        agent = AgentProcess(cfg, tmp_path / "agent2.log")
        agent.wait_log("event=mqtt_connected", timeout=90)
        agent.wait_log("event=first_frame", timeout=90)
        conf = op.send({"id": "g4", "cmd": "get_config"})["result"]
        assert [r for r in conf["rules"] if r["type"] == "crowding"][0]["max_count"] == 2
        assert agent.terminate() == 0
    finally:
        if agent.proc.poll() is None:
            agent.kill()
        op.close()
