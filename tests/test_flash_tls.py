"""flash.sh esp32 --ca-file: the broker's CA goes onto the board as ca.der with `tls` on,
the bundle boots on the simulator and comes online over a real Mosquitto TLS listener,
the birth message is watched over TLS too, and a CA file that cannot work is refused
before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import test_flash
from tests.firmware_helpers import online
from tests.mqtt_helpers import Recorder
from tests.test_flash import (
    NODE,
    SITE,
    BoardOnReset,
    FlashedBoard,
    esp32_args,
    fake_tools,
    lines_in_order,
    run_flash,
    tree,
)
from tests.tls_helpers import der, make_ca, tls_broker

field = test_flash.field
serial_port = test_flash.serial_port


def bundle_args(field: dict[str, Any], broker: str, out: Path, ca: Path | None) -> list[str]:
    args = esp32_args(field, "", broker, **{"--port": None, "--firmware-bin": None,
                                            "--firmware-sha256": None,
                                            "--bundle-only": str(out)})
    return args + (["--ca-file", str(ca)] if ca else [])


def test_a_bundle_with_the_broker_ca_comes_online_over_tls(field: dict[str, Any],
                                                            tmp_path: Path) -> None:
    with tls_broker() as tb:
        out = tmp_path / "bundle"
        r = run_flash(bundle_args(field, f"127.0.0.1:{tb.tls_port}", out, tb.ca),
                      field["home"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert (out / "ca.der").read_bytes() == der(tb.ca)
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["tls"] is True and cfg["broker_port"] == tb.tls_port
        rec = Recorder(tb.broker.host, tb.broker.port, f"safecity/v1/{SITE}/#")
        board = FlashedBoard(out, tmp_path / "sim")
        board.set_gas_ppm(0)
        board.set("wifi", "ssid", test_flash.SSID)
        try:
            board.start()
            birth = online(rec, 30)
        finally:
            board.stop()
            rec.close()
            print(board.log_text()[-3000:])
        assert birth["node"] == NODE and "connect_failed" not in board.log_text()


def test_a_bare_broker_host_with_a_ca_takes_the_tls_port_and_der_is_taken_as_is(
        field: dict[str, Any], tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    given = tmp_path / "ca.der"
    given.write_bytes(der(ca))
    out = tmp_path / "bundle"
    r = run_flash(bundle_args(field, "broker.city.example", out, given), field["home"])
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["broker_host"], cfg["broker_port"], cfg["tls"]) == (
        "broker.city.example", 8883, True)
    assert (out / "ca.der").read_bytes() == der(ca)
    plain = tmp_path / "plain"
    assert run_flash(bundle_args(field, "broker.city.example", plain, None),
                     field["home"]).returncode == 0
    assert "tls" not in json.loads((plain / "config.json").read_text())
    assert not (plain / "ca.der").exists()


@pytest.mark.parametrize("waiter", ["python", "mosquitto_sub"])
def test_esp32_run_with_a_ca_watches_the_birth_over_tls(
        field: dict[str, Any], serial_port: str, tmp_path: Path, waiter: str) -> None:
    fake = tmp_path / "fake"
    tools = fake_tools(fake)
    with tls_broker() as tb:
        hw = BoardOnReset(fake / "board", tmp_path)
        try:
            r = run_flash(esp32_args(field, serial_port, f"127.0.0.1:{tb.tls_port}") +
                          ["--ca-file", str(tb.ca), "--wait-s", "30"], field["home"],
                          path_prefix=tools,
                          env={"FAKE_BOARD": str(fake / "board"),
                               "SAFECITY_BIRTH_WAITER": waiter})
        finally:
            hw.close()
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    files = test_flash.BUNDLE_FILES + 1  # ca.der
    assert f"verified: {files} files on the board match the bundle" in r.stdout
    if waiter == "mosquitto_sub":
        lines_in_order(r.stdout, "mosquitto_sub -h 127.0.0.1", "mpremote connect")
        sub = next(ln for ln in r.stdout.splitlines() if ln.startswith("+ mosquitto_sub"))
        assert "--cafile" in sub
    assert next(ln for ln in r.stdout.splitlines() if ln.startswith("birth: "))


def test_a_ca_file_that_cannot_work_is_refused_and_nothing_is_written(
        field: dict[str, Any], tmp_path: Path) -> None:
    one = make_ca(tmp_path / "a")
    two = tmp_path / "two.pem"
    two.write_text(one.read_text() + make_ca(tmp_path / "b").read_text())
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    cases = [
        ("127.0.0.1:8883", tmp_path / "missing.pem", "does not exist"),
        ("127.0.0.1:8883", junk, "not a certificate (PEM or DER"),
        ("127.0.0.1:8883", two, "expected one PEM certificate, found 2"),
        ("127.0.0.1:8883", None, "port 8883 is the broker's TLS listener"),
    ]
    home = field["home"]
    for broker, ca, message in cases:
        before = tree(home)
        r = run_flash(bundle_args(field, broker, tmp_path / "out", ca), home)
        assert r.returncode == 2, (message, r.stdout, r.stderr)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "+ " not in r.stdout and tree(home) == before
        assert not (tmp_path / "out").exists()
