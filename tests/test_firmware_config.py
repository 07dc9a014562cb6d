"""A board's config cannot brick it: every key is checked on its own and a bad one is named
and ignored, identity is set at flash time only, a remote WiFi or broker change is a trial
that reverts by itself, and the MQTT session survives the board being away.
Real firmware (unix port, 64K heap), real Mosquitto."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import paho.mqtt.publish as publish

from sim.board import firmware_setting_problems
from sim.broker import MosquittoBroker, free_port
from tests.firmware_helpers import ack, board, command, docs, online, wait_doc


def test_site_and_node_must_be_topic_safe_names() -> None:
    bad = firmware_setting_problems([
        ("a", "gas", {"node": "b1/cmd"}), ("b", "gas", {"site": "+"}),
        ("c", "gas", {"node": "#"}), ("d", "gas", {"node": "-lead"}),
        ("e", "gas", {"node": "x" * 65}), ("f", "gas", {"instance": "XYZ"})])
    assert [p.split(":")[0] for p in bad] == ["a.node", "b.site", "c.node", "d.node", "e.node",
                                              "f.instance"]
    assert firmware_setting_problems([("g", "gas", {"node": "gas-07_b", "site": "Gangnam2",
                                                    "instance": "0a1b2c3d"})]) == []


def test_one_bad_key_is_named_and_ignored_not_the_whole_config(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    # Before, one out-of-range key reset everything to defaults, broker 127.0.0.1:1883
    # included, and the board never reached its broker again.
    with board(broker, tmp_path, "gas", config={"telemetry_interval_s": 0, "queue_max": "8",
                                                "gas": {"alarm_ppm": -5}}) as (b, rec):
        st = online(rec)
        errs = " | ".join(st["config_errors"])
        assert "telemetry_interval_s: must be in 1..86400" in errs
        assert "queue_max: must be an integer" in errs
        assert "gas.alarm_ppm: must be in" in errs
        command(broker, "b1", "g1", "get_config")
        cfg = ack(rec, "g1")["result"]
        assert cfg["broker_port"] == broker.port and cfg["telemetry_interval_s"] == 60
        assert cfg["keepalive_s"] == 10  # the good keys of the same file were kept


def test_identity_is_not_set_remotely(broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "gas") as (b, rec):
        online(rec)
        for i, key in enumerate(("node", "site", "mqtt_user", "mqtt_password", "instance")):
            command(broker, "b1", f"i{i}", "set_config", {key: "other"})
            a = ack(rec, f"i{i}")
            assert not a["ok"] and a["error"]["code"] == "rejected"
            assert a["error"]["message"].startswith(key + ": set at flash time")
        command(broker, "b1", "g", "get_config")
        assert ack(rec, "g")["result"]["node"] == "b1"


def test_a_broker_change_that_reaches_no_broker_reverts_by_itself(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "gas", config={"net_trial_s": 30}) as (b, rec):
        online(rec)
        dead = free_port()
        command(broker, "b1", "c1", "set_config", {"broker_port": dead})
        a = ack(rec, "c1")
        assert a["ok"] and a["result"]["trial_s"] == 30
        assert json.loads((b.flash / "config.json").read_text())["broker_port"] == dead
        fault = wait_doc(rec, "/event/fault", lambda d: True, 60)
        assert fault["details"]["where"] == "set_config"
        assert "broker_port" in fault["details"]["error"]
        assert json.loads((b.flash / "config.json").read_text())["broker_port"] == broker.port
        command(broker, "b1", "g", "get_config")
        assert ack(rec, "g")["result"]["broker_port"] == broker.port


def test_a_wifi_change_that_works_is_kept(broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "gas", setup=lambda b: b.set("wifi", "ssid", "safecity"),
               config={"wifi_ssid": "safecity"}) as (b, rec):
        online(rec)
        command(broker, "b1", "w0", "set_config", {"wifi_ssid": "city-new"})
        assert ack(rec, "w0")["ok"]
        b.set("wifi", "ssid", "city-new")  # the site's access point was moved to the new name
        time.sleep(3)
        assert "config trial passed" in b.log_text()
        good = json.loads((b.flash / "config.good.json").read_text())
        assert good["wifi_ssid"] == "city-new" and not (b.flash / "config.trial").exists()
        assert docs(rec, "/event/fault") == []


def test_a_wifi_change_to_an_unknown_network_reverts_and_survives_a_reset(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "gas", setup=lambda b: b.set("wifi", "ssid", "safecity"),
               config={"wifi_ssid": "safecity", "net_trial_s": 30}) as (b, rec):
        online(rec)
        command(broker, "b1", "w1", "set_config", {"wifi_ssid": "typo-net"})
        assert ack(rec, "w1")["ok"]
        time.sleep(3)
        b.restart()  # a power cut during the trial: it resumes after the boot
        fault = wait_doc(rec, "/event/fault", lambda d: True, 60)
        assert "wifi_ssid" in fault["details"]["error"]
        assert json.loads((b.flash / "config.json").read_text())["wifi_ssid"] == "safecity"


def test_commands_sent_while_the_board_is_away_arrive_once(broker: MosquittoBroker,
                                                            tmp_path: Path) -> None:
    with board(broker, tmp_path, "gas") as (b, rec):
        online(rec)
        b.wifi(False)
        wait_doc(rec, "/status", lambda d: d["state"] == "offline", 30)
        command(broker, "b1", "away-1", "ping")  # queued by the broker (persistent session)
        msg = json.dumps({"id": "twice", "cmd": "self_test"})
        for _ in range(2):  # a redelivery: same id again
            publish.single("safecity/v1/test/b1/cmd", msg, qos=1, hostname=broker.host,
                           port=broker.port)
        b.wifi(True)
        assert ack(rec, "away-1", 40)["ok"]
        ack(rec, "twice")
        time.sleep(2)
        assert len([d for d in docs(rec, "/cmd/ack") if d["id"] == "twice"]) == 1
        assert "cmd duplicate twice" in b.log_text()


def test_the_birth_message_is_qos1(broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "gas") as (b, rec):
        online(rec)
        births = [m for m in rec.matching("/status") if m.json()["state"] == "online"]
        assert births and births[0].qos == 1


def test_a_record_the_client_could_never_send_is_refused_not_stored(tmp_path: Path) -> None:
    """Records of 1015-1024 bytes used to be stored and then block the queue for ever."""
    code = """
import store, mqtt
ob = store.Outbox("ob.log", 8, max_send=2 + mqtt.MAX_MESSAGE)
t = b"safecity/v1/s/n/event/gas"
ob.push(store.ALARM, t, b"a" * (mqtt.MAX_MESSAGE - len(t)))
try:
    ob.push(store.ALARM, t, b"b" * (mqtt.MAX_MESSAGE - len(t) + 1))
    print("stored")
except ValueError as e:
    print("refused", e)
ob.push(store.ALARM, t, b"c")
print(ob.depth(), mqtt.MAX_MESSAGE)
# An oversized record left by older firmware is skipped at load, and counted; not the rest.
old = store.Outbox("old.log", 8, max_send=1024)
old.push(store.ALARM, t, b"x" * (1020 - 2 - len(t)))
old.push(store.ALARM, t, b"y")
old.f.close()
new = store.Outbox("old.log", 8, max_send=2 + mqtt.MAX_MESSAGE)
print(new.depth(), new.drops_alarm, bytes(new.head()[3]))
"""
    from sim.board import run_upy

    out = run_upy(code, tmp_path).split("\n")
    assert out[0].startswith("refused record too large: 1015 bytes, at most 1014")
    assert out[1] == "2 1012"
    assert out[2] == "1 1 b'y'"
    # And the client really sends the largest record it accepts.
    code2 = """
import mqtt
c = mqtt.MQTTClient(b"x", "127.0.0.1")
c.state = mqtt.UP
t = b"safecity/v1/s/n/event/gas"
print(c.publish(t, b"a" * (mqtt.MAX_MESSAGE - len(t)), 1))
"""
    assert run_upy(code2, tmp_path).strip() == "1"


def test_a_refused_subscription_is_a_reported_fault_and_retried(tmp_path: Path) -> None:
    """Mosquitto's dynamic-security plugin refuses the subscription (SUBACK 0x80), as a
    broker whose ACL has no read rule for the board's cmd topic would."""
    plugin = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
    assert plugin.exists(), "Debian's mosquitto package ships this plugin"
    # Not under tmp_path: the broker may drop to the mosquitto user, who cannot enter it.
    d = Path(tempfile.mkdtemp(prefix="dynsec-"))
    d.chmod(0o755)
    salt = os.urandom(12)
    board_user = {"username": "b1", "salt": base64.b64encode(salt).decode(), "iterations": 101,
                  "password": base64.b64encode(hashlib.pbkdf2_hmac(
                      "sha512", b"pw-b1", salt, 101)).decode(), "roles": []}
    watcher = {"rolename": "watch", "acls": [
        {"acltype": "subscribePattern", "topic": "#", "allow": True}]}
    (d / "dynsec.json").write_text(json.dumps({  # the board may publish, not subscribe
        "defaultACLAccess": {"publishClientSend": True, "publishClientReceive": True,
                             "subscribe": False, "unsubscribe": True},
        "clients": [board_user], "roles": [watcher],
        "groups": [{"groupname": "anon", "roles": [{"rolename": "watch"}]}],
        "anonymousGroup": "anon"}))
    (d / "dynsec.json").chmod(0o644)
    conf = f"plugin {plugin}\nplugin_opt_config_file {d}/dynsec.json\n"
    with MosquittoBroker(extra_config=conf) as br, \
            board(br, tmp_path, "gas", config={"mqtt_user": "b1",
                                               "mqtt_password": "pw-b1"}) as (b, rec):
        fault = wait_doc(rec, "/event/fault", lambda d: True, 30)
        assert fault["details"]["where"] == "subscribe"
        deadline = time.monotonic() + 45
        while b.log_text().count("subscribe_refused") < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert b.log_text().count("subscribe_refused") >= 2  # tried again after 30 s


def test_queued_commands_survive_a_broker_restart_with_persistence(tmp_path: Path) -> None:
    with MosquittoBroker(persistence=True) as br, board(br, tmp_path, "gas") as (b, rec):
        online(rec)
        b.wifi(False)
        time.sleep(1)
        command(br, "b1", "kept-1", "ping")
        br.stop()
        br.start()  # same port, the saved session and its queued command
        rec.close()
        rec2 = type(rec)(br.host, br.port, "safecity/v1/test/#")
        try:
            b.wifi(True)
            assert ack(rec2, "kept-1", 40)["ok"]
        finally:
            rec2.close()


def test_the_flash_instance_keeps_event_ids_unique_across_reflashes(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    """An erase resets the boot counter; flash.sh writes a new `instance` each time, so
    boot 1's first event differs between two flashes of the same device id."""
    ids = []
    for n, inst in enumerate(("0a1b2c3d", "9f8e7d6c")):
        with board(broker, tmp_path / f"flash{n}", "gas", config={"instance": inst}) as (b, rec):
            st = online(rec)
            assert st["instance"] == inst and st["boot"] == 1
            b.set_gas_ppm(3000)
            ev = wait_doc(rec, "/event/gas", lambda d: d["phase"] == "start", 30)
            ids.append(ev["event_id"])
    assert ids == ["b1-0a1b2c3d-1-1", "b1-9f8e7d6c-1-1"]
