"""Sensor boards over TLS: the real firmware (unix port, 64K heap) verifies a real
Mosquitto TLS listener's certificate against the CA on its flash (ca.der), refuses a
broker whose certificate another CA signed or that names another host while it keeps
sampling and retrying, and survives broker restarts and dead links over TLS."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish

from sim.board import firmware_setting_problems, run_upy
from sim.broker import free_port
from tests.firmware_helpers import board, docs, online, wait_doc
from tests.mqtt_helpers import Recorder
from tests.tls_helpers import TlsBroker, der, make_ca, tls_broker

TLS = {"tls": True}


def _cmd(tb: TlsBroker, node: str, doc: dict[str, Any] | bytes) -> None:
    payload = doc if isinstance(doc, bytes) else json.dumps(doc)
    publish.single(f"safecity/v1/test/{node}/cmd", payload, qos=1, hostname=tb.broker.host,
                   port=tb.broker.port)


def _eventually(pred: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _logged(b: Any, text: str, times: int, timeout: float) -> None:
    _eventually(lambda: b.log_text().count(text) >= times, timeout)


def test_a_board_connects_over_tls_and_delivers_alarms_and_commands(tmp_path: Path) -> None:
    with tls_broker() as tb, board(tb.broker, tmp_path, "gas", config=TLS, port=tb.tls_port,
                                   ca_der=der(tb.ca)) as (b, rec):
        online(rec)
        b.set_gas_ppm(3000)
        assert wait_doc(rec, "/event/gas", lambda d: d["phase"] == "start")["boot"] == 1
        # A command larger than the board's receive buffer arrives in several TLS records
        # and is skipped as too large; the next one is read from the right place.
        _cmd(tb, "b1", b'{"id": "big", "cmd": "ping", "pad": "' + b"x" * 3000 + b'"}')
        assert wait_doc(rec, "/cmd/ack", lambda d: d["id"] is None)["error"]["code"] == \
            "too_large"
        _cmd(tb, "b1", {"id": "p1", "cmd": "ping"})
        assert wait_doc(rec, "/cmd/ack", lambda d: d["id"] == "p1")["ok"] is True
        # No command turns TLS off (which would send the password in clear).
        _cmd(tb, "b1", {"id": "s1", "cmd": "set_config", "args": {"tls": False}})
        err = wait_doc(rec, "/cmd/ack", lambda d: d["id"] == "s1")["error"]
        assert err["code"] == "rejected" and err["message"].startswith("tls:")
        _cmd(tb, "b1", {"id": "g1", "cmd": "get_config"})
        assert wait_doc(rec, "/cmd/ack", lambda d: d["id"] == "g1")["result"]["tls"] is True
        assert "connect_failed" not in b.log_text() and b.exits == []


def _refused(b: Any, rec: Recorder, why: str) -> None:
    """The board logs the broker's refusal with its cause, retries, never comes online,
    and keeps sampling: an alarm raised meanwhile is decided and queued."""
    fails = re.compile(r"^fw mqtt connect_failed tls: .*" + why, re.M)
    _eventually(lambda: len(fails.findall(b.log_text())) >= 2, 20)
    b.set_gas_ppm(3000)
    _eventually(lambda: "fw event gas start" in b.log_text(), 10)
    assert [d for d in docs(rec, "/status") if d["state"] == "online"] == []
    assert b.alive() and b.exits == []


def test_a_broker_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    other = der(make_ca(tmp_path / "other"))
    with tls_broker() as tb, board(tb.broker, tmp_path, "gas", config=TLS, port=tb.tls_port,
                                   ca_der=other) as (b, rec):
        _refused(b, rec, "not correctly signed by the trusted CA")


def test_the_certificate_must_name_the_host_the_board_was_given(tmp_path: Path) -> None:
    name = "broker.city.example"
    with tls_broker(san=f"DNS:{name}") as tb:
        ca = der(tb.ca)

        def named(b: Any) -> None:
            b.dns(hosts={name: "127.0.0.1"})

        with board(tb.broker, tmp_path, "gas", node="named", port=tb.tls_port, ca_der=ca,
                   config={**TLS, "broker_host": name}, setup=named) as (b, rec):
            assert online(rec)["node"] == "named"
        with board(tb.broker, tmp_path, "gas", node="by-ip", config=TLS, port=tb.tls_port,
                   ca_der=ca) as (b, rec):  # the same broker, by its address
            _refused(b, rec, "CN")


def test_tls_without_a_usable_ca_never_falls_back_to_plain_mqtt(tmp_path: Path,
                                                                 broker: Any) -> None:
    for node, ca in (("no-ca", None), ("bad-ca", b"not a certificate")):
        with board(broker, tmp_path, "gas", node=node, config=TLS, ca_der=ca) as (b, rec):
            want = "fw mqtt connect_failed tls: ./ca.der " + (
                "unreadable" if ca is None else "is not a usable CA certificate")
            _logged(b, want, 2, 15)  # at every attempt
            time.sleep(1)
            assert [d for d in docs(rec, "/status") if d["state"] == "online"] == []
            assert b.alive() and b.exits == []


def test_a_broker_restart_and_a_wifi_drop_over_tls_lose_no_alarm(tmp_path: Path) -> None:
    with tls_broker() as tb, board(tb.broker, tmp_path, "gas", config=TLS, port=tb.tls_port,
                                   ca_der=der(tb.ca)) as (b, rec):
        online(rec)
        rec.close()
        tb.broker.stop()
        b.set_gas_ppm(3000)
        _logged(b, "fw event gas start", 1, 10)
        tb.broker.start()
        after = Recorder(tb.broker.host, tb.broker.port, "safecity/v1/test/#")
        try:
            ev = wait_doc(after, "/event/gas", lambda d: d["phase"] == "start", 40)
            assert ev["historical"] is True and ev["seq"] == 1
            assert wait_doc(after, "/status", lambda d: d["state"] == "online")["boot"] == 1
            # WiFi drops under the TLS session (the sockets close): the end of the alarm
            # raised meanwhile arrives over a new handshake
            b.wifi(False)
            _logged(b, "fw wifi down", 1, 10)
            b.set_gas_ppm(0)
            _logged(b, "fw event gas end", 1, 20)
            b.wifi(True)
            end = wait_doc(after, "/event/gas", lambda d: d["phase"] == "end", 40)
            assert end["historical"] is True and end["event_id"] == ev["event_id"]
        finally:
            after.close()
        assert "fw mqtt down" in b.log_text() and b.exits == []


def test_keepalive_over_tls_holds_a_quiet_link_and_detects_a_dead_one(tmp_path: Path) -> None:
    cfg = {**TLS, "keepalive_s": 5, "telemetry_interval_s": 600}
    with tls_broker() as tb, board(tb.broker, tmp_path, "gas", config=cfg, port=tb.tls_port,
                                   ca_der=der(tb.ca)) as (b, rec):
        online(rec)
        time.sleep(12)  # over two keepalive periods with nothing but pings on the link
        assert "fw mqtt down" not in b.log_text()
        pid = tb.broker.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # the broker still holds the TCP link, answers nothing
        try:
            _eventually(lambda: "fw mqtt down keepalive timeout" in b.log_text(), 15)
        finally:
            os.kill(pid, signal.SIGCONT)
        _eventually(lambda: len([d for d in docs(rec, "/status") if d["state"] == "online"])
                    >= 2, 40)


def test_a_battery_board_does_a_whole_tls_wake_in_its_bound(tmp_path: Path) -> None:
    """Deep sleep loses the TLS session with the RAM: every wake connects with a new
    handshake, and still says it is sleeping within awake_max_s."""
    cfg = {**TLS, "flood": {"deep_sleep": True, "sleep_s": 10, "alarm_sleep_s": 10,
                            "awake_max_s": 2}}
    with tls_broker() as tb, board(tb.broker, tmp_path, "flood", node="bat", config=cfg,
                                   port=tb.tls_port, ca_der=der(tb.ca)) as (b, rec):
        wait_doc(rec, "/status", lambda d: d["state"] == "sleeping" and d["boot"] == 1)
        back = wait_doc(rec, "/status", lambda d: d["state"] == "sleeping" and d["boot"] == 2,
                        25)
        assert back["sleep_s"] == 10
        _logged(b, "fw deepsleep ", 2, 10)  # logged right after the status is acknowledged
        awake = [int(ms) for ms in re.findall(r"fw deepsleep \d+ \w+ awake_ms (\d+)",
                                              b.log_text())]
        assert len(awake) >= 2 and max(awake) < 2000, awake
        assert b.log_text().count("fw mqtt up") >= 2 and "connect_failed" not in b.log_text()


_CONNECT = """
import gc, mqtt
c = mqtt.MQTTClient(b"c", "127.0.0.1", PORT, tls=".")  # ca.der in this folder
def attempt():
    try:
        c.connect()
        print("connecting", c.state == mqtt.CONNECTING)
    except OSError as e:
        print("refused", e)
    c.close()
if FILL:  # a heap with no 3 KB block left (the context is one block of about 3 KB)
    junk = []
    try:
        while True:
            junk.append(bytearray(256))
    except MemoryError:
        pass
    del junk[-4:]
    attempt()
    junk = None
    gc.collect()
attempt()
"""


def _attempts(tmp: Path, epoch: float, fill: bool) -> list[str]:
    code = _CONNECT.replace("PORT", str(free_port())).replace("FILL", str(fill))
    return run_upy(code, tmp, env={"SIM_EPOCH_S": str(int(epoch))}).splitlines()


def test_no_handshake_before_the_clock_is_set(tmp_path: Path) -> None:
    """An ESP32's clock reads 2000-01-01 until NTP sets it, and mbedtls checks the
    certificate's dates against it: the client says so instead of a doomed handshake."""
    make_ca(tmp_path)
    (tmp_path / "ca.der").write_bytes(der(tmp_path / "ca.crt"))
    assert _attempts(tmp_path, 946684800, False) == [  # 2000-01-01
        "refused tls: the clock is not set (NTP): certificate dates unknown"]
    assert _attempts(tmp_path, time.time(), False) == ["connecting True"]


def test_no_memory_for_the_tls_context_fails_the_attempt_not_the_board(
        tmp_path: Path) -> None:
    make_ca(tmp_path)
    (tmp_path / "ca.der").write_bytes(der(tmp_path / "ca.crt"))
    out = _attempts(tmp_path, time.time(), True)
    assert out[0].startswith("refused tls: no memory for the TLS context"), out
    assert out[1:] == ["connecting True"]  # the next attempt, with room again


def test_ntp_stays_on_while_tls_is(tmp_path: Path) -> None:
    def ntp(b: Any) -> None:
        b.dns(hosts={"pool.ntp.org": "10.0.0.1"})
        b.ntp(rtt_ms=20)

    with tls_broker() as tb, board(tb.broker, tmp_path, "gas", port=tb.tls_port,
                                   config={**TLS, "ntp": 3600}, setup=ntp,
                                   ca_der=der(tb.ca)) as (b, rec):
        online(rec)
        _cmd(tb, "b1", {"id": "n1", "cmd": "set_config", "args": {"ntp": 0}})
        err = wait_doc(rec, "/cmd/ack", lambda d: d["id"] == "n1")["error"]
        assert err["code"] == "rejected" and err["message"].startswith("ntp: stays on")
        _cmd(tb, "b1", {"id": "n2", "cmd": "set_config", "args": {"ntp": 7200}})
        assert wait_doc(rec, "/cmd/ack", lambda d: d["id"] == "n2")["ok"] is True


def test_the_tls_setting_is_checked_like_every_other() -> None:
    assert firmware_setting_problems([("boards[0].settings", "gas", {"tls": "yes"})]) == [
        "boards[0].settings.tls: must be true or false"]
