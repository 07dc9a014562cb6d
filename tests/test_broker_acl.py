"""hw/mosquitto on a real Mosquitto: passwords, per-node ACL patterns and the TLS listener.

A node must not publish as another node nor read another node's commands; shown with real
paho clients and the repository's config template, rendered with test paths and ports."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from sim.board import SimBoard
from sim.broker import MosquittoBroker, free_port
from tests.tls_helpers import der, make_certs

HW = Path(__file__).resolve().parent.parent / "hw" / "mosquitto"
SITE = "gangnam"
USERS = {"cam-01": "pw-a", "cam-02": "pw-b", "operator": "pw-op", "homeassistant": "pw-ha"}


def topic(node: str, tail: str) -> str:
    return f"safecity/v1/{SITE}/{node}/{tail}"


@dataclass
class SecureBroker:
    broker: MosquittoBroker
    tls_port: int
    ca: Path


@pytest.fixture
def secure_broker() -> Iterator[SecureBroker]:
    passwd_exe = shutil.which("mosquitto_passwd")
    if passwd_exe is None:
        pytest.fail("mosquitto_passwd missing (Debian package mosquitto; make test installs it)")
    # Mosquitto started as root drops to the `mosquitto` user before it reads the password
    # and ACL files: they go in a directory of their own that this user can read.
    tmp_path = Path(tempfile.mkdtemp(prefix="mosq-acl-"))
    tmp_path.chmod(0o755)
    etc = tmp_path / "etc"
    etc.mkdir()
    passwd = etc / "passwd"
    for i, (user, pw) in enumerate(USERS.items()):
        subprocess.run([passwd_exe, *(["-c"] if i == 0 else []), "-b", str(passwd), user, pw],
                       check=True, capture_output=True)
    shutil.copy(HW / "acl", etc / "acl")
    make_certs(etc)
    tls_port = free_port()
    conf = (HW / "mosquitto.conf").read_text()
    conf = conf.replace("/etc/mosquitto/safecity/", f"{etc}/")
    conf = conf.replace("/var/lib/mosquitto/", f"{tmp_path}/")
    conf = conf.replace("listener 8883\n", f"listener {tls_port} 127.0.0.1\n")
    # MosquittoBroker opens its own plain loopback listener; the template's plain one is
    # the same thing on a fixed port, so it is left out here.
    conf = conf.replace("listener 1883 127.0.0.1\n", "")
    assert f"listener {tls_port}" in conf and "acl_file" in conf
    for f in etc.iterdir():
        f.chmod(0o644)
    etc.chmod(0o755)
    try:
        with MosquittoBroker(extra_config=conf, anonymous=False) as b:
            yield SecureBroker(b, tls_port, etc / "ca.crt")
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


class Client:
    """A real paho client (MQTT 5, so PUBACK/SUBACK carry the broker's reason codes)."""

    def __init__(self, broker: MosquittoBroker, user: str | None, password: str | None,
                 subscribe: list[str] | None = None, will: str | None = None,
                 tls: tuple[int, Path] | None = None) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"test-{user}-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv5)
        if user is not None:
            self.c.username_pw_set(user, password)
        if will:
            self.c.will_set(will, b'{"state":"offline"}', qos=1, retain=True)
        port = broker.port
        if tls:
            port, ca = tls
            self.c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
        self.received: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, ReasonCode] = {}
        self.subacks: list[ReasonCode] = []
        self.connect_rc: ReasonCode | None = None
        self._cond = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        self._subscribe = subscribe or []
        self.c.connect(broker.host, port)
        self.c.loop_start()
        self.wait(lambda: self.connect_rc is not None
                  and (self.connect_rc.is_failure or len(self.subacks) >= len(self._subscribe)))

    def _on_connect(self, c: mqtt.Client, u: Any, flags: Any, rc: ReasonCode,
                    props: Any = None) -> None:
        with self._cond:
            self.connect_rc = rc
            self._cond.notify_all()
        for t in self._subscribe:
            c.subscribe(t, qos=1)

    def _on_subscribe(self, c: mqtt.Client, u: Any, mid: int, rcs: list[ReasonCode],
                      props: Any = None) -> None:
        with self._cond:
            self.subacks.extend(rcs)
            self._cond.notify_all()

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.received.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def _on_publish(self, c: mqtt.Client, u: Any, mid: int, rc: ReasonCode,
                    props: Any = None) -> None:
        with self._cond:
            self.pubacks[mid] = rc
            self._cond.notify_all()

    def wait(self, pred: Any, timeout: float = 10.0) -> None:
        with self._cond:
            assert self._cond.wait_for(pred, timeout), "timed out"

    def publish(self, t: str, payload: bytes) -> ReasonCode:
        """QoS 1; returns the broker's PUBACK reason (Not authorized when the ACL denies)."""
        mid = self.c.publish(t, payload, qos=1).mid
        self.wait(lambda: mid in self.pubacks)
        return self.pubacks[mid]

    def topics(self) -> list[str]:
        with self._cond:
            return [t for t, _ in self.received]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_wrong_password_and_anonymous_are_refused(secure_broker: SecureBroker) -> None:
    b = secure_broker.broker
    bad = Client(b, "cam-01", "wrong")
    assert bad.connect_rc is not None and bad.connect_rc.is_failure
    bad.close()
    anonymous = Client(b, None, None)
    assert anonymous.connect_rc is not None and anonymous.connect_rc.is_failure
    anonymous.close()


def test_node_cannot_publish_as_another_node(secure_broker: SecureBroker) -> None:
    b = secure_broker.broker
    watcher = Client(b, "operator", USERS["operator"], subscribe=["safecity/v1/#"])
    b_sub = Client(b, "operator", USERS["operator"], subscribe=[topic("cam-02", "#")])
    a = Client(b, "cam-01", USERS["cam-01"])

    for tail in ("event/intrusion", "status", "telemetry", "cmd/ack", "snapshot/x-1-1",
                 "zone/walkway"):
        rc = a.publish(topic("cam-02", tail), b'{"spoofed":true}')
        assert rc.getName() == "Not authorized", (tail, rc)
    assert a.publish(f"safecity/v1/{SITE}/cam-02/cmd", b"{}").getName() == "Not authorized"
    assert a.publish(topic("cam-01", "cmd"), b"{}").getName() == "Not authorized"
    assert a.publish("homeassistant/sensor/cam-02/fps/config", b"{}").getName() \
        == "Not authorized"

    # own messages go through; they were sent after the spoofs, so had any spoof been let
    # through the watcher (subscribed to both nodes) would have received it first
    assert not a.publish(topic("cam-01", "event/intrusion"), b'{"own":true}').is_failure
    assert not a.publish(topic("cam-01", "zone/walkway"), b'{"own":true}').is_failure
    assert not a.publish("homeassistant/sensor/cam-01/fps/config", b"{}").is_failure
    watcher.wait(lambda: topic("cam-01", "zone/walkway") in watcher.topics())
    assert watcher.topics() == [topic("cam-01", "event/intrusion"),
                                topic("cam-01", "zone/walkway")]
    assert b_sub.received == []
    for c in (watcher, b_sub, a):
        c.close()


def test_will_on_another_nodes_status_is_never_delivered(secure_broker: SecureBroker) -> None:
    b = secure_broker.broker
    b_sub = Client(b, "operator", USERS["operator"], subscribe=[topic("cam-02", "status")])
    a = Client(b, "cam-01", USERS["cam-01"], will=topic("cam-02", "status"))
    if a.connect_rc is not None and not a.connect_rc.is_failure:
        a.c.loop_stop()
        a.c.socket().close()  # vanish without DISCONNECT: the broker would send the will
    own = Client(b, "cam-01", USERS["cam-01"], will=topic("cam-01", "status"))
    own.c.loop_stop()
    own.c.socket().close()
    watch = Client(b, "operator", USERS["operator"], subscribe=["safecity/v1/#"])
    watch.wait(lambda: topic("cam-01", "status") in watch.topics())  # own will: retained
    assert topic("cam-02", "status") not in watch.topics()
    assert b_sub.received == []
    for c in (b_sub, watch):
        c.close()


def test_node_reads_only_its_own_commands(secure_broker: SecureBroker) -> None:
    b = secure_broker.broker
    a = Client(b, "cam-01", USERS["cam-01"],
               subscribe=[topic("cam-01", "cmd"), topic("cam-02", "cmd"), "safecity/v1/#", "#"])
    node_b = Client(b, "cam-02", USERS["cam-02"], subscribe=[topic("cam-02", "cmd")])
    op = Client(b, "operator", USERS["operator"], subscribe=[topic("+", "cmd/ack")])

    assert not op.publish(topic("cam-02", "cmd"), b'{"id":"c-2","cmd":"ping"}').is_failure
    assert not op.publish(topic("cam-01", "cmd"), b'{"id":"c-1","cmd":"ping"}').is_failure
    node_b.wait(lambda: topic("cam-02", "cmd") in node_b.topics())    # B got its command
    a.wait(lambda: topic("cam-01", "cmd") in a.topics())              # A got its own...
    # ...and nothing else (overlapping subscriptions may deliver its own more than once)
    assert set(a.topics()) == {topic("cam-01", "cmd")}

    # the node acknowledges on its own ack topic; the operator reads it
    assert not a.publish(topic("cam-01", "cmd/ack"), b'{"id":"c-1","ok":true}').is_failure
    op.wait(lambda: topic("cam-01", "cmd/ack") in op.topics())
    # other nodes' events are not readable either: B's event is routed (PUBACKed) before
    # the operator's next command to A, which A does receive
    assert not node_b.publish(topic("cam-02", "event/fall"), b"{}").is_failure
    assert not op.publish(topic("cam-01", "cmd"), b'{"id":"c-3","cmd":"ping"}').is_failure
    a.wait(lambda: any(p.endswith(b'"c-3","cmd":"ping"}') for _, p in a.received))
    assert set(a.topics()) == {topic("cam-01", "cmd")}
    for c in (a, node_b, op):
        c.close()


def test_nodes_read_ota_bundles_and_only_the_operator_writes_them(
        secure_broker: SecureBroker) -> None:
    b = secure_broker.broker
    chunk = f"safecity/v1/_ota/{SITE}/0123456789abcdef/0"
    node = Client(b, "cam-01", USERS["cam-01"], subscribe=[f"safecity/v1/_ota/{SITE}/+/+"])
    ha = Client(b, "homeassistant", USERS["homeassistant"])
    op = Client(b, "operator", USERS["operator"])
    assert node.publish(chunk, b"evil").getName() == "Not authorized"
    assert node.publish(f"safecity/v1/_ota/{SITE}/cam-01/0", b"evil").getName() \
        == "Not authorized"
    assert ha.publish(chunk, b"evil").getName() == "Not authorized"
    assert not op.publish(chunk, b"signed bytes").is_failure
    node.wait(lambda: len(node.received) > 0)
    assert node.received == [(chunk, b"signed bytes")]
    for c in (node, ha, op):
        c.close()


def test_home_assistant_user_announces_and_node_hears_it(secure_broker: SecureBroker) -> None:
    b = secure_broker.broker
    node = Client(b, "cam-01", USERS["cam-01"], subscribe=["homeassistant/status"])
    ha = Client(b, "homeassistant", USERS["homeassistant"], subscribe=["safecity/v1/#"])
    assert not ha.publish("homeassistant/status", b"online").is_failure
    assert ha.publish(topic("cam-01", "cmd"), b"{}").getName() == "Not authorized"
    node.wait(lambda: node.received == [("homeassistant/status", b"online")])
    for c in (node, ha):
        c.close()


def test_home_assistant_may_press_exactly_the_button_commands(
        secure_broker: SecureBroker) -> None:
    b = secure_broker.broker
    node = Client(b, "cam-01", USERS["cam-01"], subscribe=[topic("cam-01", "button/+")])
    other = Client(b, "cam-02", USERS["cam-02"], subscribe=[topic("cam-01", "button/+")])
    ha = Client(b, "homeassistant", USERS["homeassistant"])
    for cmd in ("set_config", "get_config", "ping"):
        assert ha.publish(topic("cam-01", f"button/{cmd}"), b"{}").getName() \
            == "Not authorized", cmd
    for cmd in ("snapshot", "self_test", "restart"):
        assert not ha.publish(topic("cam-01", f"button/{cmd}"), b"{}").is_failure
    node.wait(lambda: len(node.received) == 3)
    assert node.topics() == [topic("cam-01", f"button/{c}")
                             for c in ("snapshot", "self_test", "restart")]
    assert other.received == []  # another node cannot read this node's buttons
    for c in (node, other, ha):
        c.close()


def test_tls_listener_verifies_and_applies_the_same_acl(secure_broker: SecureBroker) -> None:
    b = secure_broker.broker
    tls = (secure_broker.tls_port, secure_broker.ca)
    watcher = Client(b, "operator", USERS["operator"], subscribe=["safecity/v1/#"], tls=tls)
    a = Client(b, "cam-01", USERS["cam-01"], tls=tls)
    assert a.publish(topic("cam-02", "event/sos"), b"{}").getName() == "Not authorized"
    assert not a.publish(topic("cam-01", "event/sos"), b"{}").is_failure
    watcher.wait(lambda: watcher.topics() == [topic("cam-01", "event/sos")])
    a.close()
    watcher.close()

    # a client that trusts another CA refuses the broker's certificate
    other = secure_broker.ca.parent / "other"
    other.mkdir()
    make_certs(other)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(other / "ca.crt"), cert_reqs=ssl.CERT_REQUIRED)
    with pytest.raises(ssl.SSLCertVerificationError):
        c.connect(b.host, secure_broker.tls_port)


def test_a_sensor_board_comes_online_on_the_tls_listener_as_itself(
        secure_broker: SecureBroker, tmp_path: Path) -> None:
    """The real firmware with the template: TLS on 8883 verified against the CA, the
    node's own password, the ACL's patterns for its topics; nothing in clear off-host."""
    b = secure_broker.broker
    watcher = Client(b, "operator", USERS["operator"], subscribe=["safecity/v1/#"])
    board = SimBoard("gas", "cam-02", "127.0.0.1", secure_broker.tls_port, tmp_path / "b",
                     site=SITE, ca_der=der(secure_broker.ca),
                     config={"tls": True, "mqtt_user": "cam-02",
                             "mqtt_password": USERS["cam-02"]})
    wrong = SimBoard("gas", "cam-01", "127.0.0.1", secure_broker.tls_port, tmp_path / "w",
                     site=SITE, ca_der=der(secure_broker.ca),
                     config={"tls": True, "mqtt_user": "cam-01", "mqtt_password": "wrong"})
    for x in (board, wrong):
        x.set_gas_ppm(0)
    try:
        board.start()
        wrong.start()
        watcher.wait(lambda: any(t == topic("cam-02", "status") and b'"online"' in p
                                 for t, p in watcher.received), 30)
        assert "connect_failed" not in board.log_text()
        # a wrong password: the broker's refusal is logged with its CONNACK code
        deadline = time.monotonic() + 20
        while "fw mqtt connect_failed refused 5" not in wrong.log_text():
            assert time.monotonic() < deadline, wrong.log_text()
            time.sleep(0.2)
        assert topic("cam-01", "status") not in [t for t, _ in watcher.received]
    finally:
        board.stop()
        wrong.stop()
        watcher.close()
        print(board.log_text()[-3000:])


def test_the_template_has_no_plain_listener_off_the_broker_host() -> None:
    """Every listener either speaks TLS (certfile in its section) or binds to loopback:
    a plain listener on the network would carry every password in clear."""
    sections: list[list[str]] = []
    for line in (HW / "mosquitto.conf").read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words[:1] == ["listener"]:
            sections.append(words)
        elif sections and words:
            sections[-1] += words
    assert len(sections) == 2
    for sec in sections:
        assert "certfile" in sec or (len(sec) > 2 and sec[2] == "127.0.0.1"), sec
