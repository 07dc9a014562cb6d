"""Sensor boards keep their promises over an unreliable link: retained birth and Last
Will, no alarm lost or reordered across a broker outage or a power cut, bad commands
answered with errors. Real firmware (unix port, 64K heap), real Mosquitto."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish

from sim.broker import MosquittoBroker
from tests.firmware_helpers import board, docs, online, wait_doc
from tests.mqtt_helpers import Recorder, validate


def test_birth_is_retained_and_the_last_will_fires_when_the_board_dies(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "gas", config={"keepalive_s": 5}) as (b, rec):
        birth = online(rec)
        late = Recorder(broker.host, broker.port, "safecity/v1/test/+/status")
        try:
            m = late.wait_for(lambda ms: len(ms) > 0, 10)[0]
            assert m.retain and validate(m.topic, m.payload)["state"] == "online"  # type: ignore[index]
        finally:
            late.close()
        b.kill()
        will = wait_doc(rec, "/status", lambda d: d["state"] == "offline", 15)
        assert will["reason"] == "connection_lost" and will["boot"] == birth["boot"]


def _gas_cycles(b: Any, n: int) -> None:
    for _ in range(n):
        b.set_gas_ppm(3000)
        time.sleep(1.0)
        b.set_gas_ppm(0)
        time.sleep(1.0)


def test_a_board_killed_with_queued_alarms_resends_them_in_order_after_restart(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "gas", setup=lambda b: b.wifi(False)) as (b, rec):
        time.sleep(2)
        _gas_cycles(b, 2)  # two start/end pairs, queued on flash while WiFi is down
        b.kill()
        b.wifi(True)
        assert docs(rec, "/event/") == []
        b.restart()
        events = rec.wait_for(lambda ms: len([m for m in ms if "/event/gas" in m.topic]) >= 4,
                              30)
        got = [validate(m.topic, m.payload) for m in events if "/event/gas" in m.topic]
        assert [(d["boot"], d["seq"], d["phase"]) for d in got] == [  # type: ignore[index]
            (1, 1, "start"), (1, 2, "end"), (1, 3, "start"), (1, 4, "end")]
        assert all(d["historical"] for d in got)  # type: ignore[index]
        births = [d for d in docs(rec, "/status") if d["state"] == "online"]
        assert births[-1]["boot"] == 2


def _cmd(broker: MosquittoBroker, payload: str | bytes) -> None:
    publish.single("safecity/v1/test/b1/cmd", payload, qos=1, hostname=broker.host,
                   port=broker.port)


def test_bad_commands_get_error_acks_and_the_board_keeps_its_config(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "gas") as (b, rec):
        online(rec)

        def ack(pred: Any) -> dict[str, Any]:
            return wait_doc(rec, "/cmd/ack", pred)

        _cmd(broker, b"{not json")
        bad = ack(lambda d: d["id"] is None)
        assert bad["ok"] is False and bad["error"]["code"] == "malformed"
        _cmd(broker, json.dumps({"id": "c1", "cmd": "launch_rockets"}))
        assert ack(lambda d: d["id"] == "c1")["error"]["code"] == "unknown_command"
        _cmd(broker, json.dumps({"id": "c2", "cmd": "set_config",
                                 "args": {"gas": {"alarm_ppm": -5}}}))
        err = ack(lambda d: d["id"] == "c2")["error"]
        assert err["code"] == "bad_args" and "gas.alarm_ppm" in err["message"]
        _cmd(broker, json.dumps({"id": "c3", "cmd": "set_config",
                                 "args": {"gas": {"alarm_ppm": 9000}}}))
        err = ack(lambda d: d["id"] == "c3")["error"]
        assert "high_ppm" in err["message"]  # alarm above high is rejected as a whole
        _cmd(broker, json.dumps({"id": "c4", "cmd": "set_config", "args": ["x"]}))
        assert ack(lambda d: d["id"] == "c4")["error"]["code"] == "bad_args"
        _cmd(broker, json.dumps({"id": "c5", "cmd": "get_config"}))
        cfg = ack(lambda d: d["id"] == "c5")["result"]
        assert cfg["gas"]["alarm_ppm"] == 1000.0 and cfg["mqtt_password"] == ""
        _cmd(broker, json.dumps({"id": "c6", "cmd": "set_config",
                                 "args": {"gas": {"alarm_ppm": 1500}}}))
        assert ack(lambda d: d["id"] == "c6")["ok"] is True
        _cmd(broker, json.dumps({"id": "c7", "cmd": "self_test"}))
        st = ack(lambda d: d["id"] == "c7")["result"]
        assert st["passed"] is True and st["checks"]["gas_circuit"] == "ok"
        _cmd(broker, json.dumps({"id": "c8", "cmd": "calibrate"}))
        assert ack(lambda d: d["id"] == "c8")["result"]["r0_ohm"] > 0
        b.set_gas_ppm(1200)  # above the old threshold, below the new one
        _cmd(broker, json.dumps({"id": "c9", "cmd": "ping"}))
        assert ack(lambda d: d["id"] == "c9")["ok"] is True
        time.sleep(1.5)
        assert docs(rec, "/event/gas") == []
        assert b.alive() and b.exits == []
        _cmd(broker, json.dumps({"id": "c10", "cmd": "reboot"}))
        assert ack(lambda d: d["id"] == "c10")["ok"] is True
        again = wait_doc(rec, "/status", lambda d: d["state"] == "online" and d["boot"] == 2)
        assert again["reset_cause"] == "hard"  # machine.reset() is esp_restart()


def test_a_60s_broker_outage_loses_no_alarm_and_keeps_order(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "gas") as (b, rec):
        online(rec)
        rec.close()
        broker.stop()
        _gas_cycles(b, 3)  # six events while the broker is gone
        time.sleep(54)
        broker.start()
        after = Recorder(broker.host, broker.port, "safecity/v1/test/#")
        try:
            msgs = after.wait_for(
                lambda ms: len([m for m in ms if "/event/gas" in m.topic]) >= 6, 60)
            got = [validate(m.topic, m.payload) for m in msgs if "/event/gas" in m.topic]
            keys = [(d["seq"], d["phase"]) for d in got]  # type: ignore[index]
            assert keys[:6] == [(1, "start"), (2, "end"), (3, "start"), (4, "end"),
                                (5, "start"), (6, "end")]
            assert all(d["historical"] for d in got[:6])  # type: ignore[index]
        finally:
            after.close()
