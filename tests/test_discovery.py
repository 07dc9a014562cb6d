"""Home Assistant discovery on the real broker: documented fields, retained configs, our
contract's topics, and republishing when Home Assistant announces itself online."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import jinja2
import paho.mqtt.client as mqtt
import pytest

from edge_agent.uplink import messages
from edge_agent.uplink.discovery import KIND_EVENTS, Discovery, discovery_messages
from edge_agent.uplink.messages import Identity
from edge_agent.uplink.topics import Topics
from sim.broker import MosquittoBroker
from tests.mqtt_helpers import Recorder, schema_for, validator
from tests.test_broker_acl import USERS, SecureBroker, make_certs, secure_broker  # noqa: F401

# Home Assistant's documented required options per component, and the option names it
# knows (integrations/{event,binary_sensor,sensor}.mqtt and integrations/mqtt discovery).
REQUIRED = {"event": {"state_topic", "event_types"}, "binary_sensor": {"state_topic"},
            "sensor": {"state_topic"}, "camera": {"topic"}, "button": {"command_topic"}}
COMMON_OPTIONS = {"availability", "device", "origin", "name", "unique_id", "qos",
                  "value_template", "json_attributes_topic", "json_attributes_template",
                  "device_class", "entity_category", "icon", "enabled_by_default"}
OPTIONS = {
    "event": COMMON_OPTIONS | {"state_topic", "event_types"},
    "binary_sensor": COMMON_OPTIONS | {"state_topic", "payload_on", "payload_off", "off_delay",
                                       "expire_after", "force_update"},
    "sensor": COMMON_OPTIONS | {"state_topic", "unit_of_measurement", "state_class",
                                "expire_after", "force_update", "suggested_display_precision"},
    "camera": COMMON_OPTIONS | {"topic", "image_encoding"},
    "button": COMMON_OPTIONS | {"command_topic", "command_template", "payload_press", "retain"},
}
DEVICE_CLASSES = {
    "binary_sensor": {"gas", "moisture", "vibration", "tamper", "safety", "motion", "occupancy",
                      "problem", "smoke"},
    "event": {"button", "doorbell", "motion"},
    "button": {"identify", "restart", "update"},
}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
TOPIC = re.compile(r"^homeassistant/(event|binary_sensor|sensor|camera|button)/([A-Za-z0-9_-]+)/"
                   r"([A-Za-z0-9_-]+)/config$")
ENUM_TYPES = set(validator("event").schema["properties"]["type"]["enum"])


def node_client(broker: MosquittoBroker, discovery: Discovery) -> mqtt.Client:
    """A paho client wired the way the uplink should wire it: attach + on_connect hook."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gangnam-cam-01")
    discovery.attach(client)
    connected = threading.Event()

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        discovery.on_connect(c)
        connected.set()

    client.on_connect = on_connect
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert connected.wait(10)
    return client


@pytest.mark.parametrize("kind", sorted(KIND_EVENTS))
def test_payloads_have_documented_fields_and_contract_topics(kind: str) -> None:
    topics = Topics("safecity/v1", "gangnam", f"{kind}-07")
    msgs = discovery_messages(topics, kind)
    contract_topics = {topics.status, topics.telemetry} | {topics.event(t) for t in ENUM_TYPES}
    unique_ids = set()
    for topic, payload in msgs:
        m = TOPIC.match(topic)
        assert m, topic
        component, node_id, object_id = m.groups()
        assert node_id == topics.node
        doc = json.loads(payload)
        assert REQUIRED[component] <= doc.keys(), (topic, doc.keys())
        assert doc.keys() <= OPTIONS[component], doc.keys() - OPTIONS[component]
        assert doc["unique_id"] not in unique_ids
        unique_ids.add(doc["unique_id"])
        assert doc["device"]["identifiers"] and doc["device"]["name"]
        assert {"model", "manufacturer", "sw_version"} <= doc["device"].keys()
        for a in doc["availability"]:
            assert a["topic"] == topics.status and schema_for(a["topic"]) == "status"
            assert (a["payload_available"], a["payload_not_available"]) == ("online", "offline")
            assert "value_json.state" in a["value_template"]
            for state, shown in (("online", "online"), ("sleeping", "online"),
                                 ("offline", "offline"), ("safe_mode", "offline")):
                assert render(a["value_template"], {"state": state}) == shown
        if component == "camera":  # the node's event snapshots, newest shown
            assert doc["topic"] == topics.snapshot("+") and kind == "camera"
            continue
        if component == "button":
            assert doc["command_topic"] == topics.button(object_id) and kind == "camera"
            continue
        assert doc["state_topic"] in contract_topics, doc["state_topic"]
        assert schema_for(doc["state_topic"]) in ("event", "telemetry")
        if "device_class" in doc and component in DEVICE_CLASSES:
            assert doc["device_class"] in DEVICE_CLASSES[component]
        if component == "event":
            assert doc["event_types"] and all(isinstance(t, str) for t in doc["event_types"])
            assert "event_type" in doc["value_template"]
        if component == "binary_sensor":
            assert doc["state_topic"].endswith("/event/" + object_id)
            assert {"payload_on", "payload_off"} <= doc.keys()
        if component == "sensor":
            assert doc.get("state_class", "measurement") in STATE_CLASSES
    produced = {json.loads(p)["state_topic"].rsplit("/", 1)[1] for _, p in msgs
                if "/event/" in json.loads(p).get("state_topic", "")}
    assert produced == set(KIND_EVENTS[kind])


def test_latched_types_are_binary_sensors_with_fitting_classes() -> None:
    topics = Topics("safecity/v1", "s", "n")
    by_topic = {t: json.loads(p) for t, p in
                discovery_messages(topics, "camera") + discovery_messages(topics, "gas")
                + discovery_messages(topics, "flood") + discovery_messages(topics, "vibration")}
    assert by_topic["homeassistant/binary_sensor/n/gas/config"]["device_class"] == "gas"
    assert by_topic["homeassistant/binary_sensor/n/flood/config"]["device_class"] == "moisture"
    assert by_topic["homeassistant/binary_sensor/n/vibration/config"]["device_class"] \
        == "vibration"
    assert by_topic["homeassistant/binary_sensor/n/tamper_switch/config"]["device_class"] \
        == "tamper"
    assert by_topic["homeassistant/binary_sensor/n/intrusion/config"]["device_class"] \
        == "occupancy"
    assert by_topic["homeassistant/event/n/sos/config"]["event_types"] == ["sos"]
    assert "sensor_fault" not in str(discovery_messages(topics, "camera"))


def test_narrowed_to_configured_rules_and_bad_input_rejected() -> None:
    topics = Topics("safecity/v1", "s", "n")
    msgs = discovery_messages(topics, "camera", event_types=["intrusion"], readings=["fps"])
    assert [t for t, _ in msgs] == ["homeassistant/binary_sensor/n/intrusion/config",
                                    "homeassistant/sensor/n/fps/config",
                                    "homeassistant/camera/n/latest_snapshot/config",
                                    "homeassistant/button/n/snapshot/config",
                                    "homeassistant/button/n/self_test/config",
                                    "homeassistant/button/n/restart/config",
                                    "homeassistant/sensor/n/uptime/config"]
    with pytest.raises(ValueError, match="unknown node kind 'toaster'"):
        discovery_messages(topics, "toaster")
    with pytest.raises(ValueError, match="no entity mapping"):
        discovery_messages(topics, "camera", event_types=["earthquake"])


def render(template: str, doc: dict[str, Any]) -> str:
    """A template as Home Assistant renders it (Jinja, `value_json`, its `to_json`)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["to_json"] = json.dumps
    return env.from_string(template).render(value_json=doc, value=json.dumps(doc)).strip()


def test_zone_occupancy_sensors_stay_on_while_anyone_is_in_the_zone() -> None:
    topics = Topics("safecity/v1", "gangnam", "cam-07")
    msgs = {t: json.loads(p) for t, p in discovery_messages(
        topics, "camera", event_types=["intrusion", "loitering"],
        zones={"walkway": ["person", "bicycle"], "gate": []})}
    assert "homeassistant/binary_sensor/cam-07/intrusion/config" not in msgs, \
        "no per-event intrusion sensor: it went off when the first of several people left"
    binary = msgs["homeassistant/binary_sensor/cam-07/intrusion_walkway/config"]
    count = msgs["homeassistant/sensor/cam-07/zone_walkway_count/config"]
    assert "homeassistant/sensor/cam-07/zone_gate_count/config" in msgs
    assert "homeassistant/binary_sensor/cam-07/intrusion_gate/config" not in msgs
    for doc in (binary, count):
        assert doc["state_topic"] == topics.zone("walkway")
        assert schema_for(doc["state_topic"]) == "zone"
        assert REQUIRED["binary_sensor" if doc is binary else "sensor"] <= doc.keys()
    assert binary["device_class"] == "occupancy"

    def zone_doc(labels: dict[str, int]) -> dict[str, Any]:
        doc = messages.zone(Identity("gangnam", "cam-07", "camera", 1), 1.7e9, "walkway",
                            labels)
        validator("zone").validate(doc)
        return doc

    # two people in, one leaves, the other leaves; a car alone is not an intrusion
    timeline = [({"person": 2}, "ON", "2"), ({"person": 1}, "ON", "1"),
                ({"person": 1, "car": 1}, "ON", "2"), ({"car": 1}, "OFF", "1"),
                ({"bicycle": 1}, "ON", "1"), ({}, "OFF", "0")]
    for labels, on, n in timeline:
        doc = zone_doc(labels)
        assert render(binary["value_template"], doc) == on, labels
        assert render(count["value_template"], doc) == n, labels
        assert json.loads(render(count["json_attributes_template"], doc)) == labels


def test_published_retained_on_connect_and_again_when_ha_comes_online(
        broker: MosquittoBroker) -> None:
    topics = Topics("safecity/v1", "gangnam", "cam-01")
    msgs = discovery_messages(topics, "camera")
    expected = {t: p for t, p in msgs}
    live = Recorder(broker.host, broker.port, "homeassistant/+/+/+/config")
    discovery = Discovery(msgs, lambda *a: None)
    node = node_client(broker, discovery)
    try:
        got = live.wait_for(lambda ms: len(ms) >= len(msgs), 10)
        assert {m.topic: m.payload for m in got} == expected
        assert all(m.qos == 1 for m in got)

        late = Recorder(broker.host, broker.port, "homeassistant/#")   # e.g. HA restarting
        retained = late.wait_for(lambda ms: len(ms) >= len(msgs), 10)
        assert all(m.retain for m in retained)
        assert {m.topic for m in retained} == expected.keys()
        late.close()

        ha = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="homeassistant")
        ha.connect(broker.host, broker.port)
        ha.loop_start()
        ha.publish("homeassistant/status", b"offline", qos=1).wait_for_publish(5)
        ha.publish("homeassistant/status", b"online", qos=1).wait_for_publish(5)
        again = live.wait_for(lambda ms: len(ms) >= 2 * len(msgs), 10)
        assert {m.topic: m.payload for m in again[len(msgs):]} == expected
        deadline = time.monotonic() + 5
        while discovery.rounds < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert discovery.rounds == 2          # 'offline' did not trigger a round
        ha.loop_stop()
        ha.disconnect()
    finally:
        node.loop_stop()
        node.disconnect()
        live.close()


def test_cli_publishes_retained_configs_for_a_sensor_board_and_removes_them(
        broker: MosquittoBroker) -> None:
    import subprocess
    import sys

    topics = Topics("safecity/v1", "gangnam", "gas-007")
    expected = dict(discovery_messages(topics, "gas"))
    run = [sys.executable, "-m", "edge_agent.cli", "discovery", "--kind", "gas",
           "--site", "gangnam", "--node", "gas-007", "--port", str(broker.port)]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"published {len(expected)} of {len(expected)}" in proc.stdout
    ha = Recorder(broker.host, broker.port, "homeassistant/#")  # HA starting later
    got = ha.wait_for(lambda ms: len(ms) >= len(expected), 10)
    assert {m.topic: m.payload for m in got} == expected and all(m.retain for m in got)
    ha.close()
    proc = subprocess.run(run + ["--remove"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    time.sleep(0.5)
    later = Recorder(broker.host, broker.port, "homeassistant/#")
    time.sleep(1.0)
    assert later.messages == [], "removed entities leave no retained config behind"
    later.close()
    bad = subprocess.run(run[:-6] + ["--site", "bad site", "--node", "x"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--site 'bad site'" in bad.stderr


def test_buttons_send_a_fresh_command_that_the_node_runs_only_on_its_own_topic() -> None:
    """Each press renders a new command id (nodes answer each id once) and the command its
    topic names; a node refuses anything else that arrives on a button topic."""
    from edge_agent.commands import Commands

    topics = Topics("safecity/v1", "s", "n")
    docs = {t: json.loads(p) for t, p in discovery_messages(topics, "camera")}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    commands = Commands(Identity("s", "n", "camera", 1),
                        {"snapshot": lambda a: {"taken": True}, "self_test": lambda a: {},
                         "restart": lambda a: {}, "set_config": lambda a: {}})
    for cmd in ("snapshot", "self_test", "restart"):
        doc = docs[f"homeassistant/button/n/{cmd}/config"]
        presses = []
        for t in (1.001, 1.002):
            class Now:
                def timestamp(self, t: float = t) -> float:
                    return 1_800_000_000 + t
            presses.append(json.loads(env.from_string(doc["command_template"]).render(
                value="PRESS", now=Now)))
        assert presses[0]["cmd"] == cmd and presses[0]["id"] != presses[1]["id"]
        ack = commands.handle(json.dumps(presses[0]).encode(), cmd)
        assert ack["ok"], ack
    # The ACL lets Home Assistant write button topics only; a node still checks them.
    for payload, topic_cmd in ((b'{"id": "x", "cmd": "set_config", "args": {}}', "snapshot"),
                               (b'{"id": "y", "cmd": "set_config", "args": {}}', "set_config"),
                               (b'{"id": "z", "cmd": "snapshot"}', "restart")):
        ack = commands.handle(payload, topic_cmd)
        assert not ack["ok"] and ack["error"]["code"] == "rejected", ack


def test_cli_over_tls_and_every_refusal_has_its_reason(secure_broker: SecureBroker,  # noqa: F811
                                                        tmp_path: Any) -> None:
    """The production broker (hw/mosquitto: TLS, passwords, the ACL): a board's discovery
    goes through as the board's own user, and each way it can fail says why."""
    import subprocess
    import sys

    sb = secure_broker
    pw = tmp_path / "pw"
    pw.write_text(USERS["cam-01"] + "\n")
    base = [sys.executable, "-m", "edge_agent.cli", "discovery", "--kind", "gas",
            "--site", "gangnam", "--node", "cam-01", "--port", str(sb.tls_port),
            "--username", "cam-01", "--password-file", str(pw)]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(base + list(extra), capture_output=True, text=True,
                              timeout=60)

    ok = run("--ca-file", str(sb.ca))
    assert ok.returncode == 0, ok.stderr
    assert "published" in ok.stdout
    other_ca = tmp_path / "other"
    other_ca.mkdir()
    make_certs(other_ca)
    bad_ca = run("--ca-file", str(other_ca / "ca.crt"))
    assert bad_ca.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in bad_ca.stderr
    plain = run()  # no TLS spoken to a TLS listener
    assert plain.returncode == 1 and "discovery: broker" in plain.stderr
    pw.write_text("wrong\n")
    bad_pw = run("--ca-file", str(sb.ca))
    assert bad_pw.returncode == 1 and "login refused" in bad_pw.stderr
    pw.write_text(USERS["cam-02"] + "\n")  # another node's user: the ACL refuses
    denied = subprocess.run([*base[:-4], "--username", "cam-02", "--password-file",
                             str(pw), "--ca-file", str(sb.ca)],
                            capture_output=True, text=True, timeout=60)
    assert denied.returncode == 1 and "every config refused" in denied.stderr
    assert "Not authorized" in denied.stderr
    missing = run("--ca-file", str(tmp_path / "nope.crt"))
    assert missing.returncode == 1 and "nope.crt" in missing.stderr
