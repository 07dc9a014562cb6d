"""A board's log stamps each line with the board time at which it was read, in the order the
board printed it across restarts; what parses the board's output reads it unchanged."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from sim.boardlog import StampedLog, parse
from sim.broker import MosquittoBroker
from tests.firmware_helpers import board, online, wait_doc


def test_lines_are_stamped_when_read_and_kept_in_order_across_processes(
        tmp_path: Path) -> None:
    now = [10.0]
    log = StampedLog(tmp_path / "board.log", lambda: now[0])
    log.note("--- start one")
    first = subprocess.Popen(["sh", "-c", "echo a; echo 'b c'; printf 'no newline'"],
                             stdout=subprocess.PIPE)
    assert first.stdout is not None
    log.attach(first.stdout, "one")
    first.wait()
    log.drain()
    now[0] = 12.5
    log.note("--- start two")
    second = subprocess.Popen(["sh", "-c", "echo d"], stdout=subprocess.PIPE)
    assert second.stdout is not None
    log.attach(second.stdout, "two")
    second.wait()
    log.drain()
    assert parse(log.text(stamped=True)) == [
        (10.0, "--- start one"), (10.0, "a"), (10.0, "b c"), (10.0, "no newline"),
        (12.5, "--- start two"), (12.5, "d")]
    assert log.text() == "--- start one\na\nb c\nno newline\n--- start two\nd\n"


def test_a_board_line_carries_the_board_time_it_was_printed_at(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    with board(broker, tmp_path, "gas", time_scale=2.0) as (b, rec):
        online(rec)
        time.sleep(1.0)
        leak_t = b.board_time()
        b.set_gas_ppm(3000)
        start = wait_doc(rec, "/event/gas", lambda d: d["phase"] == "start")
        seen_t = b.board_time()
        stamped = parse(b.log_text(stamped=True))
        raw = b.log_text()
    line = f"fw event gas start {start['event_id']}"
    (t,) = [t for t, text in stamped if text == line]
    assert t is not None and leak_t <= t <= seen_t, (leak_t, t, seen_t)
    boot = [(t, text) for t, text in stamped if text.startswith("--- start cause=1 ")]
    assert boot and boot[0][0] is not None and boot[0][0] < leak_t
    assert abs(boot[0][0] - float(boot[0][1].rsplit("t=", 1)[1])) < 0.05
    stamps = [t for t, _ in stamped]
    assert None not in stamps and stamps == sorted(stamps)  # type: ignore[type-var]
    assert re.search(rf"^{line}$", raw, re.M), "the unstamped text is what the board printed"
