"""The simulated flash (sim/upy/_flash.py) under the real MicroPython: littlefs's
copy-on-write erases on the board's files, inline small files, the flash_stall setting, and
files of the simulator left alone."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from sim.board import run_upy

SNIPPET = """
import json, machine, _flash


def erases(f, *a):
    e = _flash.state[0]
    f(*a)
    return _flash.state[0] - e


def stalled_ms(f, *a):  # in board time
    t = _sim.now_ms()
    f(*a)
    return _sim.now_ms() - t


def write(f, at, data):
    f.seek(at)
    f.write(data)
    f.flush()


out = {}
f = open("log.bin", "wb")
out["create"] = erases(f.close)
f = open("log.bin", "r+b")
out["first_block"] = erases(write, f, 0, b"a" * 1000)  # a new block
out["append_after_sync"] = erases(write, f, 1000, b"b" * 1000)  # copy-on-write
f.seek(2000)
f.write(b"c" * 1000)  # a new session: block 0 is copied again
out["same_session"] = erases(f.write, b"d" * 1000)  # still block 0, already fresh
out["next_block"] = erases(f.write, b"e" * 1000)  # crosses into the second block
f.flush()
write(f, 5000, b"f" * 7000)  # three blocks now (12000 bytes)
out["rewrite_start"] = erases(write, f, 1, b"x")  # copies every block after it
f.close()
small = open("boot", "w")
out["inline"] = erases(small.write, "12345") + erases(small.close)
out["sim_file_wrapped"] = type(open(_sim_dir + "/other.bin", "wb")).__name__
out["board_file_wrapped"] = type(open("x.bin", "wb")).__name__
f = open("log.bin", "r+b")
out["typical_ms"] = stalled_ms(write, f, 3, b"y")
_sim.ctl.poll(True)
out["worst_ms"] = stalled_ms(write, f, 3, b"z")
f.close()
with open("log.bin", "rb") as f:
    data = f.read()
out["content_ok"] = data[:4] == b"axaz" and len(data) == 12000
print(json.dumps(out))
"""


def run(tmp: Path, erase_ms: float | None = None, scale: float = 10.0) -> dict[str, object]:
    board = tmp / "board"
    (board / "flash").mkdir(parents=True)
    # the harness's control file: the worst-case erase of a flash_stall fault
    (board / "ctl.json").write_text(json.dumps({"flash": {"erase_ms": erase_ms}}))
    (board / "ctl.gen").write_bytes(struct.pack("<I", 1))
    code = ("import _sim\n_sim_dir = _sim.DIR\nimport os\nos.chdir(_sim_dir + '/flash')\n"
            + SNIPPET)
    out = run_upy(code, tmp, env={"SIM_DIR": str(board), "SIM_SCALE": str(scale)})
    return dict(json.loads(out.splitlines()[-1]))


def test_writes_cost_erases_as_littlefs_copy_on_write_does(tmp_path: Path) -> None:
    r = run(tmp_path)
    assert r["create"] == 0  # an empty file lives in the metadata
    assert r["first_block"] == 1
    assert r["append_after_sync"] == 1  # the synced block is copied to a fresh one
    assert r["same_session"] == 0
    assert r["next_block"] == 1
    assert r["rewrite_start"] == 3  # one byte near the start rewrites all three blocks
    assert r["inline"] == 0
    assert r["content_ok"] is True  # the model never changes what is written


def test_only_the_board_s_files_are_modelled(tmp_path: Path) -> None:
    r = run(tmp_path)
    assert r["board_file_wrapped"] == "FlashFile"
    assert r["sim_file_wrapped"] != "FlashFile"


def test_an_erase_stalls_the_board_for_its_time_and_a_flash_stall_sets_the_worst_case(
        tmp_path: Path) -> None:
    typical = run(tmp_path / "typical", scale=1.0)
    worst = run(tmp_path / "worst", erase_ms=400, scale=1.0)
    # a one-byte rewrite inside the first block of a 3-block file: 3 erases, plus the
    # page programs of the 12 KB copied (47 pages of 0.4 ms) and one metadata commit
    assert 3 * 45 + 19 <= int(str(typical["typical_ms"])) < 3 * 45 + 19 + 40
    assert 3 * 400 + 19 <= int(str(worst["worst_ms"])) < 3 * 400 + 19 + 40


def test_a_flash_stall_fault_sets_the_worst_erase_for_its_span(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from sim.board import SimBoard
    from sim.faults import plan
    from sim.fleet import BoardNode
    from sim.scenario import Scenario

    scenario = Scenario.model_validate({
        "name": "t", "duration_s": 60, "nodes": [{"id": "vib-1", "kind": "vibration"}],
        "faults": [{"type": "flash_stall", "node": "vib-1", "at_s": 10, "duration_s": 5,
                    "stall_ms": 350}]})
    board = SimBoard("vibration", "vib-1", "127.0.0.1", 1, tmp_path, defaults={})
    node = BoardNode("vib-1", "vibration", board, None, None)  # type: ignore[arg-type]
    fleet = SimpleNamespace(nodes={"vib-1": node}, links=[])
    timeline = plan(scenario, fleet, SimpleNamespace())  # type: ignore[arg-type]
    seen: list[object] = []
    for t in (9.0, 10.0, 14.9, 15.0):
        for action in timeline.due(t):
            action.run()
        seen.append(board.ctl.get("flash", {}).get("erase_ms"))
    assert seen == [None, 350, 350, None]
