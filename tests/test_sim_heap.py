"""The firmware's heap on a simulated board: 64K of its own, whatever the simulation
modules (C in flash on a chip) take, and `gc` reporting only the firmware's part."""

from __future__ import annotations

from pathlib import Path

import pytest

import sim.board
from sim.board import CTL_SLACK, heap_bytes, run_upy

_FREE = """
import gc
gc.collect()
print(gc.mem_free(), gc.mem_alloc())
import machine, network, socket, time, _flash, _adxl, _adc
gc.collect()
print(gc.mem_free(), gc.mem_alloc())
"""


def test_the_firmware_gets_its_whole_heap_beside_the_simulation_modules(
        tmp_path: Path) -> None:
    (free, used), (free2, used2) = (map(int, line.split())
                                    for line in run_upy(_FREE, tmp_path).splitlines())
    budget = heap_bytes("64K") + CTL_SLACK
    # All of it, less what the interpreter and this snippet hold (a few hundred bytes).
    assert budget - 2048 <= free <= budget + 256, free
    assert used < 2048, used  # the simulation modules are not counted as the firmware's
    # Importing the simulated hardware costs the firmware only the names it binds (the
    # modules are loaded already; one of them alone is over 1 KB).
    assert free - free2 == used2 - used <= 256, (free, free2)


def test_a_firmware_heap_over_its_budget_runs_out_of_memory(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="MemoryError"):
        run_upy(f"b = bytearray({heap_bytes('64K') + CTL_SLACK + 1024})\nprint(len(b))",
                tmp_path)
    fits = heap_bytes("64K") - 4096
    assert run_upy(f"b = bytearray({fits})\nprint(len(b))", tmp_path / "fits").strip() == str(fits)


def test_too_small_an_allowance_stops_the_board_and_says_which_setting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim.board, "SIM_HEAP_ALLOWANCE", 8 * 1024)
    with pytest.raises(RuntimeError) as e:
        run_upy("print('never')", tmp_path)
    assert "raise SIM_HEAP_ALLOWANCE in sim/board.py" in str(e.value)
    assert "never" not in str(e.value)


@pytest.mark.parametrize("bad", ["", "K", "-4K", "64Q", "0"])
def test_a_bad_heap_size_is_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match="heap size"):
        heap_bytes(bad)
