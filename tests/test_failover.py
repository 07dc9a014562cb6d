"""The node's broker list: the order it fails over in, its jitter, its backoff, how it
treats a broker that hangs, and the config checks that keep it and the contract safe on a
NATS cluster."""

from __future__ import annotations

import logging
import random
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import BrokerAddress, ConfigError, MqttConfig, parse_config
from edge_agent.uplink.client import Uplink
from edge_agent.uplink.failover import Failover
from edge_agent.uplink.messages import Identity
from edge_agent.uplink.spool import Spool
from edge_agent.uplink.topics import Topics
from sim.broker import MosquittoBroker, free_port

THREE = [BrokerAddress(host="10.0.0.1", port=1883), BrokerAddress(host="10.0.0.2", port=1883),
         BrokerAddress(host="10.0.0.3", port=1884)]


def failover(seed: int = 1, **kw: Any) -> Failover:
    args: dict[str, Any] = {"min_s": 1.0, "max_s": 60.0, "jitter_s": 5.0, "failback_s": 100.0}
    args.update(kw)
    return Failover(THREE, rng=random.Random(seed), **args)


def test_a_lost_connection_moves_along_the_list_and_wraps() -> None:
    f = failover()
    seen = [str(f.current)]
    for _ in range(3):
        f.lost()
        seen.append(str(f.current))
    assert seen == ["10.0.0.1:1883", "10.0.0.2:1883", "10.0.0.3:1884", "10.0.0.1:1883"]
    assert f.moves == 3


def test_a_thousand_nodes_spread_their_first_reconnect_over_the_jitter() -> None:
    delays = [failover(seed=i).lost() for i in range(1000)]
    assert all(0.0 <= d <= 5.0 for d in delays)
    per_second = Counter(int(d) for d in delays)
    assert len(per_second) == 5
    assert max(per_second.values()) < 300  # about 200 a second, never all in one


def test_refused_attempts_back_off_per_round_up_to_the_maximum() -> None:
    f = failover(min_s=1.0, max_s=8.0)
    delays = [f.refused_attempt() for _ in range(15)]
    caps = [1, 1, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8, 8, 8, 8]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    f.connected(0.0)
    assert f.refused == 0 and f.refused_attempt() <= 1.0


def test_failback_is_planned_only_away_from_the_first_choice() -> None:
    f = failover(failback_s=100.0)
    f.connected(0.0)
    assert not f.failback_due(1e9)
    f.lost()
    f.connected(10.0)
    assert not f.failback_due(10.0 + 49.0)
    assert f.failback_due(10.0 + 151.0)
    f.back_to_first(200.0)
    assert f.on_first_choice and not f.failback_due(1e9)


def _config(mqtt: dict[str, Any], snapshot: dict[str, Any] | None = None) -> Any:
    data: dict[str, Any] = {"node": {"id": "cam-1", "site": "s1"}, "mqtt": mqtt,
                            "camera": {}, "detector": {"model": "m.onnx"}}
    if snapshot is not None:
        data["snapshot"] = snapshot
    return parse_config(data)


def test_broker_list_parses_in_order() -> None:
    cfg = _config({"brokers": [{"host": "a", "port": 1883}, {"host": "b"}]})
    assert [str(b) for b in cfg.mqtt.addresses] == ["a:1883", "b:1883"]
    assert [str(b) for b in _config({"host": "x", "port": 2}).mqtt.addresses] == ["x:2"]


@pytest.mark.parametrize(("mqtt", "snapshot", "expected"), [
    ({"host": "a", "brokers": [{"host": "b"}]}, None,
     "mqtt: brokers: give either host and port or a brokers list"),
    ({"brokers": [{"host": "b"}, {"host": "b", "port": 1883}]}, None,
     "mqtt: brokers: b:1883 listed more than once"),
    ({"brokers": [{"host": ""}]}, None, "mqtt.brokers[0].host: String should have at least"),
    ({"topic_prefix": "safecity/v1.2"}, None, "mqtt.topic_prefix: must not contain '.'"),
    ({"topic_prefix": "safe city/v1"}, None, "mqtt.topic_prefix: must not contain ' '"),
    ({}, {"max_bytes": 1_048_000}, "snapshot.max_bytes: 1048000 does not fit under "
     "mqtt.max_payload_bytes (1048576)"),
    ({"max_payload_bytes": 65536}, {"max_bytes": 100_000}, "snapshot.max_bytes: 100000 does "
     "not fit under mqtt.max_payload_bytes (65536)"),
])
def test_bad_broker_config_names_the_field(mqtt: dict[str, Any],
                                           snapshot: dict[str, Any] | None,
                                           expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(mqtt, snapshot)
    assert any(e.startswith(expected) for e in err.value.errors), err.value.errors


def test_snapshot_limit_applies_only_to_published_snapshots() -> None:
    cfg = _config({"max_payload_bytes": 65536}, {"max_bytes": 100_000, "mode": "reference"})
    assert cfg.snapshot.max_bytes == 100_000
    assert _config({}, {"max_bytes": 1_048_576 - 1024}).snapshot.max_bytes == 1_047_552


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A broker that hangs: its kernel completes TCP handshakes, nothing ever answers."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port = free_port()
    s.bind(("127.0.0.1", port))
    s.listen(64)
    yield port
    s.close()


def test_a_hung_first_choice_costs_one_connect_timeout_and_never_takes_the_node_off(
        broker: MosquittoBroker, hung_port: int, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = MqttConfig(brokers=[BrokerAddress(host="127.0.0.1", port=hung_port),
                              BrokerAddress(host="127.0.0.1", port=broker.port)],
                     keepalive_s=30, connect_timeout_s=2, failover_jitter_s=0.2,
                     reconnect_min_s=0.2, reconnect_max_s=1, failback_s=1)
    up = Uplink(cfg, Topics("safecity/v1", "s", "cam-h"), Identity("s", "cam-h", "camera", 1),
                Spool(tmp_path / "s.db"))
    caplog.set_level(logging.INFO, logger="edge_agent.uplink.client")
    started = time.monotonic()
    up.start()
    try:
        # paho alone waits a whole keepalive (30 s) for the hung broker's CONNACK
        assert up.wait_connected(15), "still waiting on the hung first choice"
        assert up.broker == f"127.0.0.1:{broker.port}"
        assert "no CONNACK within 2 s" in caplog.text
        # Failback looks every 0.5-1.5 s: each one asks the hung broker for a CONNACK and
        # gives up, and the node never leaves the broker that works.
        watched_from = time.monotonic()
        while time.monotonic() - watched_from < 10:
            assert up.connected, f"went offline {time.monotonic() - started:.1f} s in"
            time.sleep(0.05)
        assert caplog.text.count("event=mqtt_failback_skipped") >= 2
        assert "event=mqtt_failback " not in caplog.text
    finally:
        up.stop()


def test_the_first_choice_is_taken_back_once_it_answers_mqtt(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    port = free_port()
    cfg = MqttConfig(brokers=[BrokerAddress(host="127.0.0.1", port=port),
                              BrokerAddress(host="127.0.0.1", port=broker.port)],
                     keepalive_s=30, failover_jitter_s=0.2, reconnect_min_s=0.2,
                     reconnect_max_s=1, failback_s=1)
    up = Uplink(cfg, Topics("safecity/v1", "s", "cam-b"), Identity("s", "cam-b", "camera", 1),
                Spool(tmp_path / "s.db"))
    up.start()
    try:
        assert up.wait_connected(15) and up.broker == f"127.0.0.1:{broker.port}"
        with MosquittoBroker(port=port):
            deadline = time.monotonic() + 15
            while up.broker != f"127.0.0.1:{port}" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert up.broker == f"127.0.0.1:{port}"
    finally:
        up.stop()
