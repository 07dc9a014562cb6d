"""Signed OTA of the sensor-board firmware, end to end: the real firmware on the 64K heap
fetches a bundle from a real Mosquitto, verifies it, boots it on trial and rolls back by
itself; `flash.sh ota`'s rollout (rollout/publish.py) drives it, canaries first."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest

from rollout import publish as rollout
from rollout.bundle import FIRMWARE, SIG_BYTES, Bundle, build, modulus
from sim.board import SimBoard, run_upy
from sim.broker import MosquittoBroker
from tests import test_broker_acl as acl
from tests.firmware_helpers import board, docs, online, wait_doc
from tests.mqtt_helpers import Recorder
from tests.test_broker_acl import USERS, SecureBroker

secure_broker = acl.secure_broker  # the fixture: hw/mosquitto's config, ACL and TLS listener
OLD = "0.3.0"
NEW = "0.3.1-test"
TRIAL = ["--trial-s", "5"]  # the new version must stay online and healthy this long


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("fleet", "other"):
        out[name] = d / f"{name}.pem"
        subprocess.run(["openssl", "genrsa", "-out", str(out[name]), "2048"], check=True,
                       capture_output=True)
    return out


def firmware_copy(dest: Path, version: str, crash: bool = False,
                  offline: bool = False) -> Path:
    """The firmware with another VERSION; with crash, an app.py that raises on import; with
    offline, one that runs but never connects to the broker."""
    shutil.copytree(FIRMWARE, dest)
    app = dest / "app.py"
    text = app.read_text().replace(f'VERSION = "{OLD}"', f'VERSION = "{version}"')
    assert version in text
    if crash:
        text = text.replace("import store\n", "import store\n\nraise RuntimeError('boom')\n", 1)
    if offline:
        assert text.count("                    cl.connect()\n") == 1
        text = text.replace("                    cl.connect()\n", "                    pass\n")
    app.write_text(text)
    return dest


def with_key(key: Path) -> Callable[[SimBoard], None]:
    n = modulus(key)

    def setup(b: SimBoard) -> None:
        b.flash.mkdir(parents=True, exist_ok=True)
        (b.flash / "ota_key").write_text(n + "\n")
    return setup


def _ack_of(cid: str) -> Callable[[dict[str, Any]], bool]:
    return lambda d: bool(d["id"] == cid)


def statuses(rec: Recorder, node: str) -> list[dict[str, Any]]:
    """The node's status messages so far, each checked against the contract."""
    return docs(rec, f"/{node}/status")


def test_a_fleet_updates_canary_first_and_each_board_passes_its_trial(
        broker: MosquittoBroker, tmp_path: Path, keys: dict[str, Path]) -> None:
    src = firmware_copy(tmp_path / "fw", NEW)
    with ExitStack() as st:
        boards = [st.enter_context(board(broker, tmp_path, kind, node=n,
                                         setup=with_key(keys["fleet"])))
                  for n, kind in (("b1", "gas"), ("b2", "flood"), ("b3", "vibration"))]
        rec = boards[0][1]
        for n in ("b1", "b2", "b3"):
            wait_doc(rec, f"/{n}/status", lambda d: d["state"] == "online")
        rcs: list[int] = []
        t = threading.Thread(target=lambda: rcs.append(rollout.main(
            ["--bundle", str(src), "--key", str(keys["fleet"]), "--site", "test",
             "--device-id", "b1,b2", "--device-id", "b3", "--canary", "1",
             "--broker", f"{broker.host}:{broker.port}", "--timeout-s", "90", *TRIAL])))
        t.start()
        # while the canary is on trial, it takes no other update
        wait_doc(rec, "/b1/status", lambda d: d.get("ota", {}).get("state") == "trial", 60)
        publish.single("safecity/v1/test/b1/cmd", json.dumps(
            {"id": "during-trial", "cmd": "ota", "args": {
                "id": "f" * 16, "version": "9.9.9", "size": 1000, "chunks": 3, "chunk": 384,
                "trial_s": 5}}),
            qos=1, hostname=broker.host, port=broker.port)
        busy = wait_doc(rec, "/b1/cmd/ack", lambda d: d["id"] == "during-trial")
        assert busy["error"] == {"code": "rejected",
                                 "message": f"version {NEW} is on trial: wait for it to pass"}
        t.join()
        assert rcs == [0]
        for n in ("b1", "b2", "b3"):
            last = statuses(rec, n)[-1]
            assert last["version"] == NEW
            assert last["ota"] == {"state": "confirmed", "version": NEW,
                                   "previous_version": OLD}
        # The canary passed its trial before anyone else was offered the bundle.
        got = [(m.topic, m.json()) for m in rec.messages]
        ok_at = next(i for i, (t, d) in enumerate(got) if t.endswith("/b1/status")
                     and d.get("ota", {}).get("state") == "confirmed")
        offers = [i for i, (t, d) in enumerate(got) if t.endswith("/cmd") and d["cmd"] == "ota"
                  and d["id"].startswith("ota-")]
        assert [got[i][0].split("/")[3] for i in offers] == ["b1", "b2", "b3"]
        assert offers[0] < ok_at < offers[1]
        # it restarted gracefully: its offline status came before the new version's birth
        b1_status = [(d["state"], d.get("reason"), d.get("version")) for d in statuses(rec, "b1")]
        assert b1_status.index(("offline", "reboot", None)) < b1_status.index(
            ("online", None, NEW))
        b1 = boards[0][0]
        assert (b1.flash / "ota_good").read_text().split()[:2] == ["s1", NEW]
        # offered again, a board that already runs the version counts as done
        assert rollout.main(["--bundle", str(src), "--key", str(keys["fleet"]), "--site", "test",
                             "--device-id", "b1", "--broker", f"{broker.host}:{broker.port}",
                             "--timeout-s", "30", *TRIAL]) == 0
        again = wait_doc(rec, "/b1/cmd/ack", lambda d: d["id"].startswith("ota-") and not d["ok"])
        assert again["error"] == {"code": "rejected",
                                  "message": f"version {NEW} is already running"}
        assert not (b1.flash / "ota.bin").exists() and not (b1.flash / "ota_trial").exists()


def test_a_tampered_bundle_is_refused_and_nothing_changes(
        broker: MosquittoBroker, tmp_path: Path, keys: dict[str, Path]) -> None:
    good = build(firmware_copy(tmp_path / "fw", NEW), keys["fleet"])
    evil = bytearray(good.data)
    evil[len(evil) // 2] ^= 0x01  # one bit in the middle of a module
    foreign = build(tmp_path / "fw", keys["other"])  # intact, signed by another key
    with board(broker, tmp_path, "gas", setup=with_key(keys["fleet"])) as (b, rec):
        birth = online(rec)
        r = rollout.Rollout(broker.host, broker.port, "test")
        try:
            for data, why in ((bytes(evil), "signature does not match the bundle"),
                              (foreign.data, "signature does not match the bundle")):
                bundle = Bundle(data, NEW, good.files)
                r.publish_chunks(bundle, rollout.CHUNK)
                v = r.wave(["b1"], bundle, rollout.CHUNK, 60, 5)[0]
                assert not v.ok and v.why.startswith("refused: " + why), v.why
            # a chunk cut short on the broker: the transfer stops there
            r.publish_chunks(good, rollout.CHUNK)
            publish.single(f"safecity/v1/_ota/test/{good.id}/3", b"x" * 10, qos=1, retain=True,
                           hostname=broker.host, port=broker.port)
            v = r.wave(["b1"], good, rollout.CHUNK, 60, 5)[0]
            assert not v.ok and v.why == "failed: chunk 3 has 10 bytes, expected 384"
            # bad offers are answered with the argument named, and change nothing either
            for args, msg in (({"id": "XYZ"}, "args.id"),
                              ({"id": "0" * 16, "version": NEW, "size": 1000, "chunks": 2,
                                "chunk": 384, "trial_s": 5}, "args.chunks"),
                              ({"id": "0" * 16, "version": NEW, "size": 1000, "chunks": 1,
                                "chunk": 4000, "trial_s": 5}, "args.chunk")):
                publish.single("safecity/v1/test/b1/cmd", json.dumps(
                    {"id": "bad-" + msg, "cmd": "ota", "args": args}), qos=1,
                    hostname=broker.host, port=broker.port)
                ack = wait_doc(rec, "/cmd/ack", _ack_of("bad-" + msg))
                assert ack["error"]["code"] == "bad_args" and msg in ack["error"]["message"]
        finally:
            r.close()
        last = statuses(rec, "b1")[-1]
        # each whole bundle took a restart to be checked (at boot, on a whole heap); the cut
        # one was given up while it arrived, without one
        assert last["version"] == OLD and last["boot"] == birth["boot"] + 2
        assert last["ota"]["state"] == "failed"  # the last offer: the cut chunk
        assert b.alive() and "fw slot factory" in b.log_text().split("--- start")[-1]
        left = {p.name for p in b.flash.iterdir()}
        assert not left & {"s1", "s2", "ota.bin", "ota_offer", "ota_trial", "ota_good",
                           "ota_installing"}


def test_a_canary_that_crashes_at_boot_rolls_back_and_stops_the_rollout(
        broker: MosquittoBroker, tmp_path: Path, keys: dict[str, Path]) -> None:
    src = firmware_copy(tmp_path / "fw", NEW, crash=True)
    with board(broker, tmp_path, "gas", node="b1",
               setup=with_key(keys["fleet"])) as (b1, rec), \
            board(broker, tmp_path, "gas", node="b2",
                  setup=with_key(keys["fleet"])) as (b2, _):
        for n in ("b1", "b2"):
            wait_doc(rec, f"/{n}/status", lambda d: d["state"] == "online")
        rc = rollout.main(["--bundle", str(src), "--key", str(keys["fleet"]), "--site", "test",
                           "--device-id", "b1,b2", "--canary", "1",
                           "--broker", f"{broker.host}:{broker.port}", "--timeout-s", "60",
                           *TRIAL])
        assert rc == 1
        back = statuses(rec, "b1")[-1]
        assert back["state"] == "online" and back["version"] == OLD
        assert back["ota"]["state"] == "rolled_back" and back["ota"]["version"] == NEW
        assert back["ota"]["reason"].startswith("boot_failed")
        assert "safe_mode" not in back  # the failed boots were the update's, not its own
        assert "RuntimeError: boom" in b1.log_text()  # it did boot the new code
        assert not (b1.flash / "ota_trial").exists()
        assert not [m for m in rec.matching("/b2/cmd") if b'"ota"' in m.payload]
        assert statuses(rec, "b2")[-1]["version"] == OLD


def test_a_version_that_never_comes_online_is_rolled_back_when_its_trial_time_is_up(
        broker: MosquittoBroker, tmp_path: Path, keys: dict[str, Path]) -> None:
    src = firmware_copy(tmp_path / "fw", NEW, offline=True)
    with board(broker, tmp_path, "gas", setup=with_key(keys["fleet"])) as (b, rec):
        online(rec)
        rc = rollout.main(["--bundle", str(src), "--key", str(keys["fleet"]), "--site", "test",
                           "--device-id", "b1", "--broker", f"{broker.host}:{broker.port}",
                           "--timeout-s", "60", *TRIAL])
        assert rc == 1
        back = statuses(rec, "b1")[-1]
        assert back["version"] == OLD and back["ota"]["state"] == "rolled_back"
        assert back["ota"]["reason"] == ("trial_timeout: not online and healthy for 5 s "
                                         "within 10 s of its start")
        log = b.log_text()
        assert log.index("fw slot s1 trial 1") < log.index("fw ota rolled_back trial_timeout") \
            < log.rindex("fw slot factory trial 0")


def test_a_power_cut_in_the_middle_of_a_transfer_resumes_at_the_last_whole_chunk(
        broker: MosquittoBroker, tmp_path: Path, keys: dict[str, Path]) -> None:
    bundle = build(firmware_copy(tmp_path / "fw", NEW), keys["fleet"])
    chunks = -(-len(bundle.data) // rollout.CHUNK)
    with board(broker, tmp_path, "gas", setup=with_key(keys["fleet"])) as (b, rec):
        online(rec)
        r = rollout.Rollout(broker.host, broker.port, "test")
        r.publish_chunks(bundle, rollout.CHUNK)
        r.offer("b1", bundle, rollout.CHUNK, 5)
        r.close()  # the publisher need not stay: the chunks wait on the broker
        stage = b.flash / "ota.bin"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
                not stage.exists() or stage.stat().st_size < len(bundle.data) // 3):
            time.sleep(0.002)
        b.kill()  # the power goes, a third of the way in
        cut = stage.stat().st_size
        assert 0 < cut < len(bundle.data) - SIG_BYTES
        time.sleep(1)
        b.restart()
        wait_doc(rec, "/b1/status", lambda d: d.get("ota", {}).get("state") == "confirmed", 60)
        log = b.log_text()
        resumed = int(log.split("fw ota resume " + NEW + " chunk ")[1].split()[0])
        assert resumed == cut // rollout.CHUNK and 0 < resumed < chunks
        seen = [d.get("ota", {}) for d in statuses(rec, "b1")]
        assert {"state": "downloading", "version": NEW, "chunk": 0, "chunks": chunks} in seen
        assert {"state": "verifying", "version": NEW} in seen
        assert statuses(rec, "b1")[-1]["version"] == NEW


def test_a_board_in_safe_mode_takes_an_update_and_the_new_version_starts_afresh(
        broker: MosquittoBroker, tmp_path: Path, keys: dict[str, Path]) -> None:
    src = firmware_copy(tmp_path / "fw", NEW)
    key = with_key(keys["fleet"])

    def failing(b: SimBoard) -> None:
        key(b)
        (b.flash / "bootfails").write_text("9")  # boot after boot failed before this one

    with board(broker, tmp_path, "gas", setup=failing) as (b, rec):
        safe = wait_doc(rec, "/status", lambda d: d["state"] == "safe_mode", 30)
        assert safe["safe_mode"]["reason"] == "boot_loop"
        assert rollout.main(["--bundle", str(src), "--key", str(keys["fleet"]), "--site",
                             "test", "--device-id", "b1", "--broker",
                             f"{broker.host}:{broker.port}", "--timeout-s", "60",
                             *TRIAL]) == 0
        now = statuses(rec, "b1")[-1]
        assert now["state"] == "online" and now["version"] == NEW and "safe_mode" not in now


def test_a_board_flashed_without_a_key_refuses_every_update(
        broker: MosquittoBroker, tmp_path: Path, keys: dict[str, Path]) -> None:
    with board(broker, tmp_path, "gas") as (b, rec):
        online(rec)
        publish.single("safecity/v1/test/b1/cmd", json.dumps(
            {"id": "no-key", "cmd": "ota", "args": {
                "id": "f" * 16, "version": NEW, "size": 1000, "chunks": 3, "chunk": 384,
                "trial_s": 5}}),
            qos=1, hostname=broker.host, port=broker.port)
        ack = wait_doc(rec, "/cmd/ack", lambda d: d["id"] == "no-key")
        assert ack["error"]["code"] == "rejected" and "no OTA key" in ack["error"]["message"]
        assert not (b.flash / "ota_offer").exists()


def test_a_battery_board_refuses_an_update_it_could_not_hold_on_trial(
        broker: MosquittoBroker, tmp_path: Path, keys: dict[str, Path]) -> None:
    battery = {"flood": {"deep_sleep": True, "sleep_s": 10, "alarm_sleep_s": 10, "awake_max_s": 3}}
    with board(broker, tmp_path, "flood", config=battery,
               setup=with_key(keys["fleet"])) as (b, rec):
        online(rec)
        publish.single("safecity/v1/test/b1/cmd", json.dumps(
            {"id": "bat", "cmd": "ota", "args": {
                "id": "f" * 16, "version": NEW, "size": 1000, "chunks": 3, "chunk": 384,
                "trial_s": 5}}),
            qos=1, hostname=broker.host, port=broker.port)  # now, or when it wakes next
        ack = wait_doc(rec, "/cmd/ack", lambda d: d["id"] == "bat", 30)
        assert ack["error"] == {"code": "rejected", "message": "a battery board sleeps "
                                "between wakes of seconds: it cannot hold a trial"}
        assert not (b.flash / "ota_offer").exists()


def test_a_chunk_missing_from_the_broker_is_asked_for_again_then_the_transfer_fails(
        broker: MosquittoBroker, tmp_path: Path, keys: dict[str, Path]) -> None:
    bundle = build(firmware_copy(tmp_path / "fw", NEW), keys["fleet"])
    with board(broker, tmp_path, "gas", setup=with_key(keys["fleet"]),
               time_scale=10) as (b, rec):  # 10 s asks in 1 s
        online(rec)
        r = rollout.Rollout(broker.host, broker.port, "test")
        try:
            r.publish_chunks(bundle, rollout.CHUNK)
            publish.single(f"safecity/v1/_ota/test/{bundle.id}/5", b"", qos=1, retain=True,
                           hostname=broker.host, port=broker.port)  # an empty one clears it
            v = r.wave(["b1"], bundle, rollout.CHUNK, 60, 5)[0]
        finally:
            r.close()
        assert not v.ok and v.why.startswith("failed: chunk 5 of ")
        assert statuses(rec, "b1")[-1]["version"] == OLD
        assert not (b.flash / "ota.bin").exists() and not (b.flash / "ota_offer").exists()


def test_flash_sh_ota_dry_run_needs_no_broker(tmp_path: Path, keys: dict[str, Path]) -> None:
    root = Path(__file__).resolve().parent.parent
    p = subprocess.run([str(root / "flash.sh"), "ota", "--key", str(keys["fleet"]),
                        "--site", "test", "--device-id", "b1,b2,b3", "--canary", "1",
                        "--dry-run"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "would publish" in p.stdout and "would offer it to (canary): b1" in p.stdout
    assert "would offer it to (wave): b2 b3" in p.stdout and "nothing published" in p.stdout


_SLOTS = """
import os, sys, slots, otastate
def put(path, text):
    with open(path, "w") as f:
        f.write(text)
def clear():
    for p in ("ota_good", "ota_trial", "ota_last"):
        try:
            os.remove(p)
        except OSError:
            pass
    otastate.trial = otastate.last = None
    while sys.path[0] in ("s1", "s2"):
        sys.path.pop(0)
def case(name, good=None, trial=None):
    clear()
    if good is not None:
        put("ota_good", good)
    if trial is not None:
        put("ota_trial", trial)
    fails = slots.boot(5)
    first = sys.path[0] if sys.path[0] in ("s1", "s2", "s3") else "root"
    last = otastate.last
    print(name, fails, first if first != "root" else "factory", first, last and last["state"],
          last and (last.get("reason") or "-").split(":")[0].replace(" ", "_"),
          "trial" if otastate.trial else "-", open("ota_trial").read() if otastate.trial else "")
os.mkdir("s1")
put("s1/app.mpy", "x")
os.mkdir("s2")
put("s2/app.mpy", "x")
os.mkdir("s3")
case("none")
case("good", good="s1 0.4 0.3")
case("good_without_app", good="s3 0.4 0.3")
case("good_garbage", good="\xff\x00 zz")
case("trial", good="s1 0.4 0.3", trial="s2 0 5 0.5 0.4")
case("trial_again", good="s1 0.4 0.3", trial="s2 1 5 0.5 0.4")
case("trial_spent", good="s1 0.4 0.3", trial="s2 2 5 0.5 0.4")
case("trial_torn", good="s1 0.4 0.3", trial="s2 1")
case("trial_garbage", trial="\x00\x01")
case("trial_without_app", good="s1 0.4 0.3", trial="s3 0 5 0.5 0.4")
"""


def test_the_slot_comes_from_the_last_good_state_whatever_the_files_say(tmp_path: Path) -> None:
    """Missing, torn or garbage state files and slots without modules boot the last good
    copy; a spent trial is rolled back, and says why."""
    out = run_upy(_SLOTS, tmp_path).split("\n")
    got = {ln.split()[0]: ln.split()[2:] for ln in out if ln and not ln.startswith("fw ")}
    # the failed-boot count (main.py's, 5 before each case) starts again with a version
    fails = {ln.split()[0]: int(ln.split()[1]) for ln in out if ln and not ln.startswith("fw ")}
    assert fails == {"none": 5, "good": 5, "good_without_app": 5, "good_garbage": 5,
                     "trial": 1, "trial_again": 5, "trial_spent": 1, "trial_torn": 1,
                     "trial_garbage": 1, "trial_without_app": 1}
    assert got["none"] == ["factory", "root", "None", "None", "-"]
    assert got["good"] == ["s1", "s1", "None", "None", "-"]
    assert got["good_without_app"] == ["factory", "root", "None", "None", "-"]
    assert got["good_garbage"] == ["factory", "root", "None", "None", "-"]
    assert got["trial"] == ["s2", "s2", "trial", "-", "trial", "s2", "1", "5", "0.5", "0.4"]
    assert got["trial_again"][:2] == ["s2", "s2"] and got["trial_again"][6] == "2"
    assert got["trial_spent"] == ["s1", "s1", "rolled_back", "boot_failed", "-"]
    assert got["trial_torn"] == ["s1", "s1", "rolled_back", "trial_state_unreadable", "-"]
    assert got["trial_garbage"] == ["factory", "root", "rolled_back", "trial_state_unreadable",
                                    "-"]
    assert got["trial_without_app"][:4] == ["s1", "s1", "rolled_back", "boot_failed"]


def test_flash_sh_ota_names_every_bad_argument_at_once(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    p = subprocess.run([str(root / "flash.sh"), "ota", "--site", "bad site", "--canary", "x",
                        "--key", str(tmp_path / "missing.pem")], capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == ""
    for why in ("--canary 'x' is not a whole number", "missing.pem: no such file",
                "--site 'bad site' is not a safe MQTT topic segment",
                "missing --device-id ID or --all", "missing --broker HOST[:PORT]"):
        assert why in p.stderr


def test_the_rollout_logs_in_over_tls_and_names_what_stops_it(
        secure_broker: SecureBroker, tmp_path: Path, keys: dict[str, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    """The operator account over TLS (hw/mosquitto's config and ACL): a site without boards,
    then a wrong password, each a failure that says why."""
    pw = tmp_path / "operator.pw"
    pw.write_text(USERS["operator"] + "\n")
    args = ["--key", str(keys["fleet"]), "--site", "gangnam", "--all",
            "--broker", f"127.0.0.1:{secure_broker.tls_port}",
            "--ca-file", str(secure_broker.ca), "--user", "operator", "--pass-file", str(pw)]
    assert rollout.main(args) == 1
    assert "no sensor board has a retained status under safecity/v1/gangnam/+/status" \
        in capsys.readouterr().err
    pw.write_text("wrong\n")
    assert rollout.main(args) == 1
    assert "refused: Not authorized" in capsys.readouterr().err


_CUT = """
import os, otastate, slots
with open("ota_offer", "w") as f:
    f.write("0123456789abcdef 1000 3 384 0.3.1 0.3.0 5")
with open("ota.bin", "wb") as f:
    f.write(b"x" * 1000)
with open("ota_installing", "w") as f:
    f.write("0.3.1")
print("fails", slots.boot(2))
print("last", otastate.last["state"], otastate.last["reason"])
print("left", sorted(n for n in os.listdir() if n.startswith("ota")))
"""


def test_an_install_cut_short_by_a_reset_is_given_up_not_retried(tmp_path: Path) -> None:
    """Its marker file is still there at the next boot: the bundle goes, the old version
    boots, and the status will say why (no bundle can hold a board in a reset loop)."""
    out = run_upy(_CUT, tmp_path)
    assert "fails 2\n" in out
    assert "last failed install: cut short by a reset\n" in out
    assert "left ['ota_last']\n" in out
