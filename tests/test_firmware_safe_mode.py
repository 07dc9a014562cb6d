"""A board's code can fail and the board stays reachable: the watchdog is armed before
anything can raise, a failing loop is caught, counted and reported, and repeated failed
boots start the board in safe mode, from which an operator brings it back remotely.
Real firmware (unix port, 64K heap), real Mosquitto; the broken builds are patched modules."""

from __future__ import annotations

import time
from pathlib import Path

from sim.board import HARD_RESET, PWRON_RESET, SimBoard
from sim.broker import MosquittoBroker
from tests.firmware_helpers import ack, board, command, docs, wait_doc

SENSOR_GONE = "raise OSError(19)  # ENODEV: the sensor's bus does not answer\n"


def _until(pred: object, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_a_crash_before_any_watchdog_leaves_a_board_at_the_repl(tmp_path: Path) -> None:
    """The simulator is as unkind as the chip: nothing restarts a board whose main.py
    ended in an exception before it armed a watchdog."""
    b = SimBoard("gas", "b1", "127.0.0.1", 9, tmp_path / "b1",
                 patches={"main": "raise ValueError('broken before the watchdog')\n"})
    with b:
        assert _until(b.at_repl, 10)
        time.sleep(3)
        assert b.at_repl() and b.starts == [PWRON_RESET]


def test_a_board_whose_app_cannot_load_resets_instead_of_stopping(tmp_path: Path) -> None:
    b = SimBoard("gas", "b1", "127.0.0.1", 9, tmp_path / "b1",
                 patches={"app": "raise ImportError('app.mpy: torn by a power cut')\n"})
    with b:
        assert _until(lambda: len(b.starts) >= 3, 20), b.log_text()[-2000:]
        assert not b.at_repl() and set(b.starts[1:]) == {HARD_RESET}
        assert (b.flash / "lasterror").read_text().startswith("ImportError")
        assert int((b.flash / "bootfails").read_text()) >= 2


def test_repeated_failed_boots_start_safe_mode_and_an_operator_reboot_tries_again(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "gas", patches={"gas": SENSOR_GONE}) as (b, rec):
        st = wait_doc(rec, "/status", lambda d: d["state"] == "safe_mode", 40)
        assert st["safe_mode"]["reason"] == "boot_loop"
        assert st["safe_mode"]["failed_boots"] == 3
        assert "OSError" in st["safe_mode"]["error"]
        assert b.starts[:4] == [PWRON_RESET, HARD_RESET, HARD_RESET, HARD_RESET]
        # Reachable: commands answer, telemetry flows, the watchdog is fed (no reset).
        starts = len(b.starts)
        command(broker, "b1", "p1", "ping")
        assert ack(rec, "p1")["ok"]
        command(broker, "b1", "s1", "self_test")
        test = ack(rec, "s1")
        assert test["ok"] and test["result"]["passed"] is False
        tel = wait_doc(rec, "/telemetry", lambda d: d["metrics"].get("safe_mode") is True, 15)
        assert tel["metrics"]["loop_errors"] == 0
        time.sleep(12)  # beyond the 10 s watchdog of a board that stopped feeding it
        assert len(b.starts) == starts
        # The operator's reboot is a fresh try: the sensor still fails, so the board goes
        # through its failed boots again and comes back in safe mode.
        command(broker, "b1", "r1", "reboot", {})
        assert ack(rec, "r1")["result"] == {"rebooting": True, "safe_mode": True}
        assert _until(lambda: len(b.starts) >= starts + 4, 40)
        later = [d for d in docs(rec, "/status") if d["state"] == "safe_mode"]
        assert _until(lambda: len([d for d in docs(rec, "/status")
                                   if d["state"] == "safe_mode"]) > len(later), 30)


def test_a_failing_loop_is_reported_and_ends_in_a_reset(broker: MosquittoBroker,
                                                          tmp_path: Path) -> None:
    broken = ("def build(self):\n"
              "    raise RuntimeError('telemetry broke')\n")
    with board(broker, tmp_path, "gas", config={"telemetry_interval_s": 1},
               patches={"telemetry": broken}) as (b, rec):
        fault = wait_doc(rec, "/event/fault", lambda d: True, 30)
        assert fault["phase"] == "instant" and fault["details"]["where"] == "loop"
        assert "telemetry broke" in fault["details"]["error"]
        # ERRORS_BEFORE_RESET within a minute: a reset, counted as a failed boot.
        assert _until(lambda: HARD_RESET in b.starts, 30), b.log_text()[-2000:]
        faults = docs(rec, "/event/fault")
        assert [d["details"]["count"] for d in faults if d["boot"] == 1] == [1, 2, 3, 4]
        assert "telemetry broke" in (b.flash / "lasterror").read_text()
