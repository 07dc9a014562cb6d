"""flash.sh esp32: dry run, refusals that write nothing, the bundle booting on the simulator
against a real Mosquitto with the node's generated credentials, and a whole run through
stand-in esptool/mpremote whose "board" is the simulator.

The stand-ins play only the serial tools (no hardware here); what they write is booted by
the real firmware under the MicroPython unix port, unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import paho.mqtt.publish as publish
import pytest

from sim.board import SimBoard, run_upy
from sim.broker import MosquittoBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
FLASH = ROOT / "flash.sh"
HW = ROOT / "hw"
VENV_BIN = Path(sys.executable).parent
SITE, NODE, SSID = "plaza", "gas-01", "city-iot"
BUNDLE_FILES = len(list((ROOT / "firmware").glob("*.py"))) + 2  # modules, board/config.json


# -- running flash.sh -------------------------------------------------------------------------

def run_flash(args: list[str], home: Path, env: dict[str, str] | None = None,
              path_prefix: Path | None = None,
              timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """flash.sh with HOME, TMPDIR and the state folder inside `home` (so a test can see
    everything it writes) and this venv's tools on PATH."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    path = f"{VENV_BIN}:/usr/sbin:/usr/bin:/bin"
    if path_prefix is not None:
        path = f"{path_prefix}:{path}"
    full = {"PATH": path, "HOME": str(home), "TMPDIR": str(home / "tmp"), "LANG": "C.UTF-8",
            "SAFECITY_STATE_DIR": str(home / "state"), **(env or {})}
    return subprocess.run(["bash", str(FLASH), *args], cwd=home, env=full, capture_output=True,
                          text=True, timeout=timeout)


def tree(d: Path) -> dict[str, str]:
    """Relative path -> sha256 (or 'dir'/'link:target') of everything under d."""
    out: dict[str, str] = {}
    if not d.exists():
        return out
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def lines_in_order(text: str, *needles: str) -> None:
    """Each needle appears on a '+ ' line, in this order."""
    steps = [ln for ln in text.splitlines() if ln.startswith("+ ")]
    at = 0
    for n in needles:
        for i in range(at, len(steps)):
            if n in steps[i]:
                at = i + 1
                break
        else:
            raise AssertionError(f"no step with {n!r} after step {at}:\n" + "\n".join(steps))


# -- stand-in serial tools ------------------------------------------------------------------

FAKE_ESPTOOL = r'''
import hashlib, os, shutil, sys
board = os.environ["FAKE_BOARD"]
args = sys.argv[1:]
with open(os.path.join(board, "calls.log"), "a") as f:
    f.write(os.path.basename(sys.argv[0]) + " " + " ".join(args) + "\n")
if args == ["version"]:
    print("esptool v5.6.0"); sys.exit(0)
port = args[args.index("--port") + 1]
if not os.path.exists(port):
    print("could not open port " + port, file=sys.stderr); sys.exit(2)
flash = os.path.join(board, "flash")
open(os.path.join(board, "events"), "a").write("off\n")  # the chip is in its bootloader
if "erase-flash" in args or "erase_flash" in args:
    shutil.rmtree(flash, ignore_errors=True); os.makedirs(flash)
    print("Chip erase completed successfully")
else:
    i = args.index("write-flash") if "write-flash" in args else args.index("write_flash")
    rest = [a for a in args[i + 1:] if a != "-z"]
    offset, image = rest[0], rest[1]
    data = open(image, "rb").read()
    open(os.path.join(board, "firmware.txt"), "w").write(
        "%s %s\n" % (offset, hashlib.sha256(data).hexdigest()))
    print("Wrote %d bytes at %s" % (len(data), offset)); print("Hash of data verified.")
'''

FAKE_MPREMOTE = r'''
import hashlib, os, shutil, sys
board = os.environ["FAKE_BOARD"]
args = sys.argv[1:]
with open(os.path.join(board, "calls.log"), "a") as f:
    f.write("mpremote " + " ".join(args) + "\n")
if args == ["devs"]:  # as mpremote lists serial ports: port, serial, vid:pid, maker, product
    print(os.environ.get("FAKE_DEVS", ""), end="")
    sys.exit(0)
assert args[0] == "connect", args
port, rest = args[1], args[2:]
if not os.path.exists(port):
    print("failed to access " + port, file=sys.stderr); sys.exit(1)
flash = os.path.join(board, "flash")
if rest[:2] == ["fs", "cp"] and rest[2].startswith(":"):  # from the board
    src = os.path.join(flash, rest[2][1:])
    if not os.path.exists(src):
        print("cp %s: No such file or directory" % rest[2], file=sys.stderr); sys.exit(1)
    shutil.copyfile(src, rest[3])
elif rest[:2] == ["fs", "cp"]:
    assert rest[-1] == ":", rest
    for src in rest[2:-1]:
        print("cp %s :" % src)
        shutil.copyfile(src, os.path.join(flash, os.path.basename(src)))
elif rest[:2] == ["fs", "sha256sum"]:
    for name in rest[2:]:
        print("sha256sum " + name)
        print(hashlib.sha256(open(os.path.join(flash, name.lstrip(":")), "rb").read()).hexdigest())
elif rest == ["reset"]:
    open(os.path.join(board, "events"), "a").write("reset\n")
elif rest == ["resume", "repl"]:
    print("fw mqtt up")  # what the running board prints on its console
else:
    print("fake mpremote: unsupported " + " ".join(rest), file=sys.stderr); sys.exit(1)
'''


def fake_tools(d: Path, names: tuple[str, ...] = ("esptool", "mpremote")) -> Path:
    """Stand-ins for esptool/esptool.py and mpremote in d/bin; their board is d/board."""
    bin_ = d / "bin"
    bin_.mkdir(parents=True, exist_ok=True)
    (d / "board" / "flash").mkdir(parents=True, exist_ok=True)
    for name in names:
        body = FAKE_MPREMOTE if name == "mpremote" else FAKE_ESPTOOL
        p = bin_ / name
        p.write_text(f"#!{sys.executable}\n{body}")
        p.chmod(0o755)
    return bin_


@pytest.fixture
def serial_port() -> Iterator[str]:
    """A real character device standing in for the board's USB serial port."""
    master, slave = pty.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


@pytest.fixture
def field(tmp_path: Path) -> dict[str, Any]:
    """A technician's laptop: WiFi password file (0600), a stand-in firmware image."""
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    wifi = home / "wifi.txt"
    wifi.write_text("correct horse battery\n")
    wifi.chmod(0o600)
    fw = home / "micropython-test.bin"
    fw.write_bytes(b"\xe9" + os.urandom(4096))
    return {"home": home, "wifi": wifi, "fw": fw,
            "fw_sha": hashlib.sha256(fw.read_bytes()).hexdigest()}


def esp32_args(field: dict[str, Any], port: str, broker: str = "127.0.0.1:1883",
               **over: str | None) -> list[str]:
    opts: dict[str, str | None] = {
        "--port": port, "--device-id": NODE, "--site": SITE, "--board": "gas",
        "--wifi-ssid": SSID, "--wifi-pass-file": str(field["wifi"]), "--broker": broker,
        "--firmware-bin": str(field["fw"]), "--firmware-sha256": field["fw_sha"]}
    opts.update(over)
    out = ["esp32"]
    for k, v in opts.items():
        if v is not None:
            out += [k, v]
    return out


# -- the simulated board and an authenticated broker ----------------------------------------

class FlashedBoard(SimBoard):
    """A simulated board whose flash is a folder written by flash.sh (or the mpremote
    stand-in), booted as it is: prepare() builds only the simulator's own modules."""

    def __init__(self, flash: Path, workdir: Path, kind: str = "gas") -> None:
        cfg = json.loads((flash / "config.json").read_text())
        super().__init__(kind, cfg["node"], cfg["broker_host"], cfg["broker_port"], workdir,
                         site=cfg["site"], precompile=False)
        self.bundle = flash

    def prepare(self) -> None:
        self.flash = self.dir / "unused-flash"
        super().prepare()
        shutil.rmtree(self.flash)
        self.flash = self.bundle


class AuthBroker:
    """Mosquitto with the repository's ACL and a password file (operator + what flash.sh
    adds), anonymous access off. Mosquitto drops to its own user before reading them, so
    they live in a world-readable folder of their own."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mosq-flash-"))
        self.dir.chmod(0o755)
        self.passwd = self.dir / "passwd"
        self.operator_pw = self.dir / "operator.pw"
        self.operator_pw.write_text("op-secret\n")
        self.operator_pw.chmod(0o600)
        subprocess.run(["mosquitto_passwd", "-c", "-b", str(self.passwd), "operator",
                        "op-secret"], check=True, capture_output=True)
        self.passwd.chmod(0o644)
        shutil.copy(HW / "mosquitto" / "acl", self.dir / "acl")
        (self.dir / "acl").chmod(0o644)
        self.broker: MosquittoBroker | None = None

    def start(self) -> MosquittoBroker:
        self.broker = MosquittoBroker(
            anonymous=False,
            extra_config=f"password_file {self.passwd}\nacl_file {self.dir / 'acl'}\n")
        return self.broker.start()

    def reload(self) -> None:
        """SIGHUP, as `systemctl reload mosquitto`: re-reads the password file."""
        assert self.broker and self.broker.proc
        self.broker.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)

    def close(self) -> None:
        if self.broker:
            self.broker.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def auth_broker() -> Iterator[AuthBroker]:
    ab = AuthBroker()
    try:
        yield ab
    finally:
        ab.close()


class Watcher:
    """The operator's view: every status message of the site, with its retain flag."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.msgs: list[tuple[str, dict[str, Any], bool]] = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.username_pw_set("operator", "op-secret")
        sub = threading.Event()
        self.c.on_connect = lambda c, *a: c.subscribe(f"safecity/v1/{SITE}/+/status", 1)
        self.c.on_subscribe = lambda *a: sub.set()
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        assert sub.wait(10), "operator could not subscribe"

    def _on_message(self, c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.msgs.append((m.topic, json.loads(m.payload), bool(m.retain)))
            self.cond.notify_all()

    def online(self, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for _t, d, _r in self.msgs:
                    if d.get("state") == "online":
                        return d
                left = deadline - time.monotonic()
                assert left > 0, f"no online status; got {self.msgs}"
                self.cond.wait(min(left, 0.5))

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def bundle_only(field: dict[str, Any], port: int, out: Path, passwd: Path | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    args = esp32_args(field, "", f"127.0.0.1:{port}", **{
        "--port": None, "--firmware-bin": None, "--firmware-sha256": None,
        "--bundle-only": str(out)})
    if passwd:
        args += ["--passwd-file", str(passwd)]
    return run_flash(args, field["home"], env=env)


# -- tests: script hygiene -----------------------------------------------------------------

def test_shellcheck_passes() -> None:
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.fail("shellcheck missing: Debian package shellcheck (make deps installs it)")
    r = subprocess.run([exe, str(FLASH)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("mode, words", [
    (None, ["esp32", "pi", "ota", "--dry-run", "--device-id"]),
    ("esp32", ["--port", "--board", "--wifi-pass-file", "--firmware-bin", "--bundle-only",
               "PyPI"]),
    ("pi", ["--root", "--host", "--models-from", "--deps-from", "systemd"]),
    ("ota", ["--bundle", "--key", "--site", "--device-id", "--all", "--canary", "--dry-run"]),
])
def test_help_for_every_mode(tmp_path: Path, mode: str | None, words: list[str]) -> None:
    r = run_flash(([mode] if mode else []) + ["--help"], tmp_path)
    assert r.returncode == 0, r.stderr
    for w in words:
        assert w in r.stdout


# -- tests: dry run and refusals -------------------------------------------------------------

def test_esp32_dry_run_prints_the_ordered_steps_and_writes_nothing(
        field: dict[str, Any], serial_port: str, tmp_path: Path) -> None:
    tools = fake_tools(tmp_path / "fake")
    home = field["home"]
    before = tree(home)
    r = run_flash(esp32_args(field, serial_port) + ["--dry-run"], home, path_prefix=tools,
                  env={"FAKE_BOARD": str(tmp_path / "fake" / "board")})
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    fw = ROOT / "firmware"
    lines_in_order(out, "helper ensure-password", "helper passwd-line",
                   f"app.mpy {fw}/app.py", f"vibration.mpy {fw}/vibration.py",
                   "gas-v1.json", "helper esp32-config",
                   f"mpremote connect {serial_port} fs cp :outbox.log",
                   f"esptool --chip esp32 --port {serial_port} erase-flash",
                   f"esptool --chip esp32 --port {serial_port} write-flash -z 0x1000 "
                   f"{field['fw']}",
                   f"mpremote connect {serial_port} fs cp", "fs sha256sum :boot.py",
                   "helper wait-birth", f"mpremote connect {serial_port} reset")
    assert "correct horse" not in out + r.stderr  # the WiFi password is never printed
    assert tree(home) == before  # no state folder, nothing in TMPDIR
    assert not (tmp_path / "fake" / "board" / "calls.log").exists()  # no tool ran


def test_options_as_people_type_them_opt_equals_value_and_a_bare_broker_host(
        field: dict[str, Any], serial_port: str, tmp_path: Path) -> None:
    tools = fake_tools(tmp_path / "fake")
    spaced = esp32_args(field, serial_port) + ["--dry-run"]
    joined = [spaced[0]] + [f"{k}={v}" for k, v in zip(spaced[1:-1:2], spaced[2:-1:2],
                                                         strict=True)] + ["--dry-run"]
    joined = [a.replace("--broker=127.0.0.1:1883", "--broker=127.0.0.1") for a in joined]
    env = {"FAKE_BOARD": str(tmp_path / "fake" / "board")}
    a = run_flash(spaced, field["home"], path_prefix=tools, env=env)
    b = run_flash(joined, field["home"], path_prefix=tools, env=env)
    assert a.returncode == 0 and b.returncode == 0, b.stdout + b.stderr
    assert "--broker=127.0.0.1" in " ".join(joined)
    assert a.stdout == b.stdout, "the same run, however the options were typed"


def test_esp32_dry_run_uses_esptool_py_command_names_with_v4(
        field: dict[str, Any], serial_port: str, tmp_path: Path) -> None:
    tools = fake_tools(tmp_path / "fake", ("esptool.py", "mpremote"))
    r = run_flash(esp32_args(field, serial_port) + ["--dry-run"], field["home"],
                  path_prefix=tools)
    assert r.returncode == 0, r.stderr
    lines_in_order(r.stdout, f"esptool.py --chip esp32 --port {serial_port} erase_flash",
                   f"esptool.py --chip esp32 --port {serial_port} write_flash -z 0x1000")


REFUSALS: list[tuple[str, dict[str, str | None], str]] = [
    ("unknown board kind", {"--board": "smoke"},
     "unknown board kind 'smoke': no hw/boards/smoke-v*.json (kinds: flood, gas, vibration)"),
    ("unknown board revision", {"--board": "gas-v7"}, "no hw/boards/gas-v7.json"),
    ("missing port", {"--port": "/dev/ttyUSB97"}, "port /dev/ttyUSB97 does not exist"),
    ("port not a device", {"--port": "/etc/hostname"}, "is not a serial device"),
    ("device id with a space", {"--device-id": "gas 01"},
     "--device-id 'gas 01' is not a safe MQTT topic segment"),
    ("device id with a wildcard", {"--device-id": "gas/#"}, "is not a safe MQTT topic segment"),
    ("device id too long", {"--device-id": "g" * 65}, "is not a safe MQTT topic segment"),
    ("reserved device id", {"--device-id": "operator"}, "is reserved for a broker consumer"),
    ("site with a plus", {"--site": "pl+za"}, "--site 'pl+za' is not a safe MQTT topic segment"),
    ("site missing", {"--site": None}, "missing --site"),
    ("broker with a bad host", {"--broker": "10.0.0.5!"},
     "--broker '10.0.0.5!' is not HOST:PORT"),
    ("broker port out of range", {"--broker": "10.0.0.5:70000"}, "port must be 1-65535"),
    ("broker url", {"--broker": "mqtt://10.0.0.5:1883"}, "is not HOST:PORT"),
    ("wifi file missing", {"--wifi-pass-file": "/nonexistent/wifi.txt"},
     "--wifi-pass-file /nonexistent/wifi.txt does not exist"),
    ("firmware checksum mismatch", {"--firmware-sha256": "0" * 64},
     "checksum mismatch for"),
    ("firmware not the pinned release", {"--firmware-sha256": None},
     "is not the pinned release ESP32_GENERIC-20260829-v1.29.0.bin"),
    ("pinned release has no verified checksum", {"--firmware-bin": None, "--firmware-sha256": None},
     "has no verified sha256 for ESP32_GENERIC-20260829-v1.29.0.bin yet"),
    ("unknown option", {"--colour": "red"}, "unknown option '--colour' for mode esp32"),
    ("bad wait", {"--wait-s": "soon"}, "--wait-s 'soon' is not a number of seconds"),
]


@pytest.mark.parametrize("case, over, message", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_esp32_refusals_say_why_and_write_nothing(
        field: dict[str, Any], serial_port: str, tmp_path: Path, case: str,
        over: dict[str, str | None], message: str) -> None:
    tools = fake_tools(tmp_path / "fake")
    home = field["home"]
    before = tree(home)
    r = run_flash(esp32_args(field, serial_port, **over), home, path_prefix=tools,
                  env={"FAKE_BOARD": str(tmp_path / "fake" / "board")})
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # one clear message
    assert "+ " not in r.stdout  # no step was even printed
    assert tree(home) == before
    assert not (tmp_path / "fake" / "board" / "calls.log").exists()


def test_refuses_a_world_readable_wifi_password_file(
        field: dict[str, Any], serial_port: str, tmp_path: Path) -> None:
    field["wifi"].chmod(0o644)
    before = tree(field["home"])
    r = run_flash(esp32_args(field, serial_port), field["home"],
                  path_prefix=fake_tools(tmp_path / "fake"))
    assert r.returncode == 2
    assert "is world-readable (mode 644): chmod 600" in r.stderr
    assert "correct horse" not in r.stdout + r.stderr
    assert tree(field["home"]) == before


def test_refuses_a_short_wifi_password_without_printing_it(
        field: dict[str, Any], serial_port: str, tmp_path: Path) -> None:
    field["wifi"].write_text("hunter2\n")
    r = run_flash(esp32_args(field, serial_port), field["home"],
                  path_prefix=fake_tools(tmp_path / "fake"))
    assert r.returncode == 2 and "must be 8-63 characters" in r.stderr
    assert "hunter2" not in r.stdout + r.stderr


def test_refuses_when_tools_are_missing_and_names_the_pip_command(
        field: dict[str, Any], serial_port: str, tmp_path: Path) -> None:
    tools = fake_tools(tmp_path / "fake", ("mpremote",))  # no esptool anywhere
    before = tree(field["home"])
    r = run_flash(esp32_args(field, serial_port), field["home"], path_prefix=tools)
    assert r.returncode == 2
    assert "missing tools: esptool; install the flash tools (the .[flash] extra)" in r.stderr
    assert f"-m pip install -e '{ROOT}[flash]'" in r.stderr
    assert tree(field["home"]) == before


def test_refuses_a_mpy_cross_that_writes_another_mpy_version(
        field: dict[str, Any], serial_port: str, tmp_path: Path) -> None:
    tools = fake_tools(tmp_path / "fake")
    old = tools / "mpy-cross"
    old.write_text("#!/bin/sh\necho 'MicroPython v1.20.0; mpy-cross emitting mpy v6.1'\n")
    old.chmod(0o755)
    r = run_flash(esp32_args(field, serial_port), field["home"], path_prefix=tools)
    assert r.returncode == 2 and "writes mpy v6.1 but the firmware" in r.stderr


def test_refuses_a_node_id_already_set_up_for_another_site(
        field: dict[str, Any], serial_port: str, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    assert bundle_only(field, 1883, out).returncode == 0
    state = tree(field["home"] / "state")
    args = esp32_args(field, "", **{"--port": None, "--firmware-bin": None,
                                    "--firmware-sha256": None, "--bundle-only": str(out),
                                    "--site": "harbour"})
    r = run_flash(args, field["home"])
    assert r.returncode == 2
    assert f"node '{NODE}' was set up for site '{SITE}'" in r.stderr
    assert tree(field["home"] / "state") == state


# -- tests: the bundle on the simulator, the broker side ------------------------------------

def test_bundle_boots_on_the_simulator_and_its_own_credentials_get_it_online(
        field: dict[str, Any], auth_broker: AuthBroker, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    broker = auth_broker.start()
    # flash.sh puts the node's line into the broker's password file; then a reload
    r = bundle_only(field, broker.port, out, passwd=auth_broker.passwd)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"updated {auth_broker.passwd}" in r.stdout
    auth_broker.reload()

    files = sorted(p.name for p in out.iterdir())
    modules = sorted(p.stem for p in (ROOT / "firmware").glob("*.py"))
    assert files == sorted(["board.json", "config.json", "boot.py", "main.py"] +
                           [m + ".mpy" for m in modules if m not in ("boot", "main")])
    assert all((out / f).read_bytes()[:2] == b"M\x06" for f in files if f.endswith(".mpy"))
    assert json.loads((out / "board.json").read_text()) == json.loads(
        (HW / "boards" / "gas-v1.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    password = (field["home"] / "state" / "nodes" / NODE / "mqtt_password").read_text().strip()
    assert re.fullmatch("[0-9a-f]{8}", cfg.pop("instance"))  # new at every flash
    assert cfg == {"site": SITE, "node": NODE, "broker_host": "127.0.0.1",
                   "broker_port": broker.port, "mqtt_user": NODE, "mqtt_password": password,
                   "wifi_ssid": SSID, "wifi_key": "correct horse battery"}
    assert stat.S_IMODE((out / "config.json").stat().st_mode) == 0o600
    assert password not in r.stdout and "correct horse" not in r.stdout

    watcher = Watcher(broker)
    board = FlashedBoard(out, tmp_path / "sim")
    board.set_gas_ppm(0)
    board.set("wifi", "ssid", SSID)  # the simulated access point answers only this SSID
    try:
        board.start()
        birth = watcher.online()
    finally:
        board.stop()
        watcher.close()
        print(board.log_text()[-3000:])
    assert birth["node"] == NODE and birth["site"] == SITE and birth["kind"] == "gas"
    assert birth["boot"] == 1


def test_a_broker_list_is_the_boards_failover_list_and_bad_entries_are_named(
        field: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    args = esp32_args(field, "", "10.0.0.1:1883,nats-2.city.example,10.0.0.3:1884", **{
        "--port": None, "--firmware-bin": None, "--firmware-sha256": None,
        "--bundle-only": str(out)})
    r = run_flash(args, field["home"])
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["broker_host"], cfg["broker_port"]) == ("10.0.0.1", 1883)
    assert cfg["failover_brokers"] == "nats-2.city.example:1883,10.0.0.3:1884"

    bad = esp32_args(field, "", "10.0.0.1:1883,10.0.0.1:1883,b:0,,c:1,d:1,e:1", **{
        "--port": None, "--firmware-bin": None, "--firmware-sha256": None,
        "--bundle-only": str(tmp_path / "bad")})
    r = run_flash(bad, field["home"])
    assert r.returncode == 2
    for needle in ("--broker: 10.0.0.1:1883 is listed twice", "--broker 'b:0': port must be",
                   "--broker '' is not HOST:PORT", "--broker: at most 5 brokers"):
        assert needle in r.stderr, (needle, r.stderr)
    assert not (tmp_path / "bad").exists()


def test_ota_key_puts_only_the_public_modulus_on_the_board(
        field: dict[str, Any], tmp_path: Path) -> None:
    key = tmp_path / "fleet.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True)
    out = tmp_path / "bundle"
    args = esp32_args(field, "", "127.0.0.1:1883", **{
        "--port": None, "--firmware-bin": None, "--firmware-sha256": None,
        "--bundle-only": str(out), "--ota-key": str(key)})
    r = run_flash(args, field["home"])
    assert r.returncode == 0, r.stdout + r.stderr
    n = subprocess.run(["openssl", "rsa", "-in", str(key), "-noout", "-modulus"], check=True,
                       capture_output=True, text=True).stdout.strip().split("=")[1]
    assert (out / "ota_key").read_text() == n.lower() + "\n"
    assert "PRIVATE" not in "".join(p.read_text(errors="replace") for p in out.iterdir())
    again = run_flash(args, field["home"])  # into the same folder, which now has ota_key
    assert again.returncode == 0, again.stdout + again.stderr
    assert (out / "ota_key").read_text() == n.lower() + "\n"


def test_passwd_line_without_mosquitto_passwd_is_accepted_by_mosquitto(
        field: dict[str, Any], auth_broker: AuthBroker, tmp_path: Path) -> None:
    broker = auth_broker.start()
    r = bundle_only(field, broker.port, tmp_path / "bundle", passwd=auth_broker.passwd,
                    env={"MOSQUITTO_PASSWD": "none"})
    assert r.returncode == 0, r.stderr
    assert "built-in PBKDF2-SHA512" in r.stdout
    auth_broker.reload()
    password = (field["home"] / "state" / "nodes" / NODE / "mqtt_password").read_text().strip()
    results: dict[str, Any] = {}
    for pw in (password, "wrong"):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.username_pw_set(NODE, pw)
        done = threading.Event()

        def on_connect(cl: Any, u: Any, f: Any, rc: Any, p: Any = None, pw: str = pw,
                       done: threading.Event = done) -> None:
            results[pw] = rc.is_failure
            done.set()

        c.on_connect = on_connect
        c.connect(broker.host, broker.port)
        c.loop_start()
        assert done.wait(10)
        c.loop_stop()
        c.disconnect()
    assert results == {password: False, "wrong": True}


# -- tests: a whole run through the stand-in serial tools ------------------------------------

class BoardOnReset:
    """Plays the hardware: esptool stops the running firmware (bootloader); a reset by the
    mpremote stand-in powers up a simulated board on what was written to its flash."""

    def __init__(self, board_dir: Path, workdir: Path) -> None:
        self.board_dir = board_dir
        self.workdir = workdir
        self.boards: list[FlashedBoard] = []
        self.resets_seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        events = self.board_dir / "events"
        done = 0
        while not self._stop.wait(0.02):
            lines = events.read_text().splitlines() if events.exists() else []
            for ev in lines[done:]:
                for b in self.boards:
                    b.stop()
                if ev != "reset":
                    continue
                self.resets_seen += 1
                b = FlashedBoard(self.board_dir / "flash", self.workdir / f"sim{self.resets_seen}")
                b.set_gas_ppm(0)
                b.set("wifi", "ssid", SSID)
                b.start()
                self.boards.append(b)
            done = len(lines)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for b in self.boards:
            b.stop()
            print(b.log_text()[-2000:])


def verb(call: str) -> str:
    """'esptool --chip esp32 --port P erase-flash' -> 'esptool erase-flash';
    'mpremote connect P fs cp a b :' -> 'mpremote fs cp'."""
    w = call.split()
    if w[0] == "esptool":
        return "esptool " + w[w.index("--port") + 2]
    return "mpremote " + " ".join(w[3:5] if w[3] == "fs" else w[3:4])


def test_esp32_run_flashes_copies_verifies_resets_and_sees_the_birth_twice_alike(
        field: dict[str, Any], auth_broker: AuthBroker, serial_port: str,
        tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    tools = fake_tools(fake)
    board_dir = fake / "board"
    broker = auth_broker.start()
    # the bundle alone first: it generates the credentials and adds them to the broker
    b0 = tmp_path / "b0"
    assert bundle_only(field, broker.port, b0, passwd=auth_broker.passwd).returncode == 0
    auth_broker.reload()
    args = esp32_args(field, serial_port, f"127.0.0.1:{broker.port}") + [
        "--watch-user", "operator", "--watch-pass-file", str(auth_broker.operator_pw),
        "--wait-s", "40", "--passwd-file", str(auth_broker.passwd)]
    env = {"FAKE_BOARD": str(board_dir)}
    # The board held two undelivered alarms (written by the firmware's own outbox code).
    run_upy('import store\n'
            'ob = store.Outbox("ob.log", 8)\n'
            'ob.push(store.ALARM, b"safecity/v1/s/n/event/gas", b\'{"seq": 1}\')\n'
            'ob.push(store.TELEMETRY, b"safecity/v1/s/n/telemetry", b"{}")\n'
            'ob.push(store.ALARM, b"safecity/v1/s/n/event/gas", b\'{"seq": 2}\')\n'
            'ob.push(store.ALARM, b"safecity/v1/s/n/event/gas", b\'{"seq": 3}\')\n'
            'ob.done(ob.offs[0])\n', tmp_path / "upy")
    shutil.copy(tmp_path / "upy" / "ob.log", board_dir / "flash" / "outbox.log")
    hw = BoardOnReset(board_dir, tmp_path)
    runs = []
    instances: list[str] = []
    try:
        for _ in range(2):
            (board_dir / "calls.log").unlink(missing_ok=True)
            t0 = time.monotonic()
            r = run_flash(args, field["home"], env=env, path_prefix=tools)
            print(f"run took {time.monotonic() - t0:.1f} s")
            print(r.stdout, r.stderr)  # shown when the test fails
            assert r.returncode == 0, r.stdout + r.stderr
            instances.append(json.loads((board_dir / "flash" / "config.json").read_text())[
                "instance"])
            runs.append((r.stdout, tree(board_dir / "flash"),
                         (board_dir / "calls.log").read_text().splitlines(),
                         tree(field["home"] / "state")))
            # the board is still running: take its flash state out of the comparison
    finally:
        hw.close()
    assert len(set(instances)) == 2 and all(len(i) == 8 for i in instances)
    saved = sorted((field["home"] / "state" / "nodes" / NODE).glob("undelivered-*.jsonl"))
    assert "warning: the board held 2 undelivered alarm(s); saved in" in runs[0][0]
    assert [json.loads(ln)["payload"] for ln in saved[0].read_text().splitlines()] == [
        '{"seq": 2}', '{"seq": 3}']
    for out, _flash, calls, _state in runs:
        assert f"birth: {SITE}/{NODE} online, kind gas, firmware" in out
        assert "boot 1" in out  # the erase wiped the boot counter: a fresh board
        assert f"verified: {BUNDLE_FILES} files on the board match the bundle" in out
        assert [verb(c) for c in calls] == [
            "mpremote fs cp", "esptool erase-flash", "esptool write-flash", "mpremote fs cp",
            "mpremote fs sha256sum", "mpremote reset"]
        assert calls[0].split()[-2] == ":outbox.log"  # read out before the erase
        assert calls[2].endswith(f"write-flash -z 0x1000 {field['fw']}")
        assert "correct horse" not in out
    assert (board_dir / "firmware.txt").read_text().split() == ["0x1000", field["fw_sha"]]
    # what was copied is exactly the bundle flash.sh builds with --bundle-only, but for
    # config.json's instance, new at every flash so event ids never repeat
    bundle = {k: v for k, v in tree(b0).items() if k != "config.json"}
    assert {k: v for k, v in runs[0][1].items() if k in bundle} == bundle
    # running twice: same files on the board, same credentials, same broker line
    assert {k: v for k, v in runs[1][1].items() if k in bundle} == bundle
    assert runs[0][3] == runs[1][3]
    assert "updated" not in runs[1][0] and "unchanged" in runs[1][0]
    assert hw.resets_seen == 2


def test_esp32_run_can_wait_with_mosquitto_sub(
        field: dict[str, Any], broker: MosquittoBroker, serial_port: str,
        tmp_path: Path) -> None:
    """The second waiter (for laptops without paho): mosquitto_sub -R skips the retained
    birth of an earlier boot and takes the live one."""
    if shutil.which("mosquitto_sub") is None:
        pytest.fail("mosquitto_sub missing: Debian package mosquitto-clients (make deps)")
    fake = tmp_path / "fake"
    tools = fake_tools(fake)
    # a stale retained birth, as an earlier flash of this node would have left
    stale = {"v": 1, "site": SITE, "node": NODE, "state": "online", "boot": 7, "ts": None,
             "kind": "gas"}
    publish.single(f"safecity/v1/{SITE}/{NODE}/status", json.dumps(stale), qos=1, retain=True,
                   hostname=broker.host, port=broker.port)
    hw = BoardOnReset(fake / "board", tmp_path)
    try:
        r = run_flash(esp32_args(field, serial_port, f"127.0.0.1:{broker.port}") +
                      ["--wait-s", "30"], field["home"], path_prefix=tools,
                      env={"FAKE_BOARD": str(fake / "board"),
                           "SAFECITY_BIRTH_WAITER": "mosquitto_sub"})
    finally:
        hw.close()
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    lines_in_order(r.stdout, "mosquitto_sub -h 127.0.0.1", "mpremote connect")
    birth = next(ln for ln in r.stdout.splitlines() if ln.startswith("birth: "))
    assert '"boot": 1' in birth and '"boot": 7' not in birth


def test_esp32_run_does_not_wait_when_the_broker_is_unreachable(
        field: dict[str, Any], serial_port: str, tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    tools = fake_tools(fake)
    r = run_flash(esp32_args(field, serial_port, f"127.0.0.1:{free_port()}"), field["home"],
                  path_prefix=tools, env={"FAKE_BOARD": str(fake / "board")})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is not reachable from here: not waiting for the birth message" in r.stdout
    assert (fake / "board" / "events").read_text().splitlines()[-1] == "reset"


def test_pinned_release_is_taken_from_the_cache_only_when_its_checksum_matches(
        field: dict[str, Any], serial_port: str, tmp_path: Path) -> None:
    """With a filled-in manifest (a test copy: the real one awaits a verified sha256), the
    release comes from the cache or as --firmware-bin under its own name, and is refused
    when its bytes differ."""
    manifest = json.loads((HW / "esp32" / "firmware.json").read_text())
    manifest["sha256"] = field["fw_sha"]
    mpath = tmp_path / "firmware.json"
    mpath.write_text(json.dumps(manifest))
    cache = tmp_path / "cache"
    (cache / "firmware").mkdir(parents=True)
    cached = cache / "firmware" / manifest["file"]
    shutil.copy(field["fw"], cached)
    env = {"SAFECITY_FIRMWARE_MANIFEST": str(mpath), "SAFECITY_CACHE_DIR": str(cache)}
    tools = fake_tools(tmp_path / "fake")
    pinned = esp32_args(field, serial_port, **{"--firmware-bin": None, "--firmware-sha256": None})
    r = run_flash(pinned + ["--dry-run"], field["home"], env=env, path_prefix=tools)
    assert r.returncode == 0, r.stderr
    lines_in_order(r.stdout, f"write-flash -z 0x1000 {cached}")
    as_bin = esp32_args(field, serial_port, **{"--firmware-bin": str(cached),
                                               "--firmware-sha256": None})
    assert run_flash(as_bin + ["--dry-run"], field["home"], env=env,
                     path_prefix=tools).returncode == 0
    cached.write_bytes(b"\xe9tampered")
    for args in (pinned, as_bin):
        r = run_flash(args, field["home"], env=env, path_prefix=tools)
        assert r.returncode == 2 and f"checksum mismatch for {cached}" in r.stderr
    assert not (field["home"] / "state").exists()


def test_esp32_run_fails_clearly_when_no_birth_comes(
        field: dict[str, Any], broker: MosquittoBroker, serial_port: str,
        tmp_path: Path) -> None:
    """A board that never comes online (here: nothing boots after the reset)."""
    fake = tmp_path / "fake"
    r = run_flash(esp32_args(field, serial_port, f"127.0.0.1:{broker.port}") +
                  ["--wait-s", "2"], field["home"], path_prefix=fake_tools(fake),
                  env={"FAKE_BOARD": str(fake / "board")})
    assert r.returncode == 1
    assert f"FAILED: no birth message from {SITE}/{NODE} within 2 s" in r.stderr
    assert "is its password line (above) on the broker" in r.stderr


def test_every_bad_argument_is_reported_in_one_run(field: dict[str, Any], tmp_path: Path) -> None:
    r = run_flash(["esp32", "--port", "/dev/nonexistent-port", "--device-id", "bad id",
                   "--site", "x/y", "--board", "toaster", "--broker", "no port:here",
                   "--wifi-pass-file", str(tmp_path / "missing"), "--wait-s", "soon"],
                  field["home"])
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if ": error: " in ln]
    for needle in ("--device-id 'bad id'", "--site 'x/y'", "--broker 'no port:here'",
                   "unknown board kind 'toaster'", "missing --wifi-ssid", "--wait-s 'soon'",
                   "port /dev/nonexistent-port does not exist"):
        assert any(needle in e for e in errors), (needle, r.stderr)
    assert f"{len(errors)} problems, nothing was written" in r.stderr
    assert tree(field["home"]) == {"tmp": "dir", "wifi.txt": tree(field["home"])["wifi.txt"],
                                   "micropython-test.bin": tree(field["home"])[
                                       "micropython-test.bin"]}


def test_a_dry_run_needs_no_board_and_no_tools_and_says_would(
        field: dict[str, Any], tmp_path: Path) -> None:
    empty = tmp_path / "nobin"
    empty.mkdir()
    args = [a for a in esp32_args(field, "unused") if a not in ("--port", "unused")]
    r = run_flash(args + ["--dry-run"], field["home"], path_prefix=empty,
                  env={"PATH": f"{empty}:/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert "would use the serial port of the one ESP32 board attached" in r.stdout
    assert "the real run needs" in r.stdout and "[flash]" in r.stdout
    said = [ln for ln in r.stdout.splitlines() if not ln.startswith(("+ ", "==> "))]
    # (the firmware image's checksum is really checked in a dry run: it may say verified)
    assert not any(w in ln.lower() for ln in said for w in ("done", "installed", "ready",
                                                             "written", "flashed")), said
    assert any(ln.startswith("dry run: would flash") for ln in said)


@pytest.mark.parametrize(("devs", "found"), [
    ("{d}/ttyS0 None 0000:0000 None None\n"
     "{d}/ttyUSB3 0001 10c4:ea60 Silicon_Labs CP2102\n", "{d}/ttyUSB3"),
    ("{d}/ttyACM1 A1 303a:1001 Espressif USB_JTAG\n", "{d}/ttyACM1"),
    ("{d}/ttyS0 None 0000:0000 None None\n", None),
    ("{d}/ttyUSB0 1 1a86:7523 QinHeng CH340\n{d}/ttyUSB1 2 0403:6001 FTDI FT232R\n", None),
])
def test_logs_follows_the_one_board_attached_or_says_why_not(
        tmp_path: Path, devs: str, found: str | None) -> None:
    dev = tmp_path / "dev"  # the ports mpremote lists (the stand-in opens them by name)
    dev.mkdir()
    devs = devs.replace("{d}", str(dev))
    found = found.replace("{d}", str(dev)) if found else None
    for ln in devs.splitlines():
        (dev / Path(ln.split()[0]).name).touch()
    tools = fake_tools(tmp_path / "fake", ("mpremote",))
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    r = run_flash(["logs"], home, path_prefix=tools,
                  env={"FAKE_BOARD": str(tmp_path / "fake" / "board"), "FAKE_DEVS": devs})
    if found is None:
        assert r.returncode == 2
        assert ("no ESP32 board is attached" in r.stderr if devs.count("\n") == 1
                else f"2 ESP32 boards are attached ({dev}/ttyUSB0 {dev}/ttyUSB1)" in r.stderr)
        return
    assert r.returncode == 0, r.stderr
    assert f"port: {found} (the one ESP32 board attached)" in r.stdout
    assert f"connect {found} resume repl" in r.stdout and "fw mqtt up" in r.stdout


def test_logs_of_a_camera_node_follow_its_journal_over_ssh(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    r = run_flash(["logs", "--host=pi@cam-01.local", "--priority", "warning", "--dry-run"],
                  home)
    assert r.returncode == 0, r.stderr
    assert ("+ ssh -o ConnectTimeout=15 pi@cam-01.local journalctl -u edge-agent -f -n 50 "
            "-p warning") in r.stdout
    bad = run_flash(["logs", "--host", "pi@", "--lines", "many", "--colour", "x"], home)
    assert bad.returncode == 2
    for needle in ("--host 'pi@'", "--lines 'many'", "unknown option '--colour'"):
        assert needle in bad.stderr, bad.stderr


def test_ha_discovery_for_a_board_is_published_as_its_own_user_or_says_why_not(
        field: dict[str, Any], auth_broker: AuthBroker, tmp_path: Path) -> None:
    from edge_agent.uplink.discovery import discovery_messages
    from edge_agent.uplink.topics import Topics
    from tests.mqtt_helpers import Recorder

    broker = auth_broker.start()
    args = esp32_args(field, "", f"127.0.0.1:{broker.port}", **{
        "--port": None, "--firmware-bin": None, "--firmware-sha256": None,
        "--bundle-only": str(tmp_path / "b")}) + ["--passwd-file", str(auth_broker.passwd),
                                                    "--ha-discovery"]
    first = run_flash(args, field["home"])  # the broker does not know the password yet
    assert first.returncode == 0, first.stderr
    assert "login refused" in first.stderr and "warning: Home Assistant discovery was not " \
        "published" in first.stdout
    auth_broker.reload()
    again = run_flash(args, field["home"])
    assert again.returncode == 0, again.stderr
    want = dict(discovery_messages(Topics("safecity/v1", SITE, NODE), "gas"))
    assert f"published {len(want)} of {len(want)} discovery configs" in again.stdout
    ha = Recorder(broker.host, broker.port, "homeassistant/#", username="operator",
                  password="op-secret")
    try:
        got = ha.wait_for(lambda ms: len(ms) >= len(want), 10)
        assert {m.topic for m in got} == set(want) and all(m.retain for m in got)
    finally:
        ha.close()
