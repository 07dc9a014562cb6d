"""Starts a simulated board: the part of an ESP32 that is C, then the firmware on its heap.

On a chip `machine`, `network`, `socket`, `time` and littlefs are C in flash and take none
of the MicroPython heap; here they are Python modules on it (about 36 KB on the 64-bit
port, all of them imported). So this imports every simulation module first, then holds everything past the
firmware's budget (SIM_FW_HEAP bytes, plus SIM_CTL_SLACK for the harness's control data,
which no chip holds) in one block, and only then runs the script (SIM_MAIN, main.py by
default) as the chip runs main.py. The firmware sees the heap a chip would give it, and
the simulation modules can grow without eating into it; `gc` as the firmware imports it
(sim/upy/_heap.py) leaves the held part out of mem_alloc()."""

import gc
import os
import sys

gc.collect()
_base = gc.mem_alloc()
_env = os.getenv
_budget = int(_env("SIM_FW_HEAP") or "0") + int(_env("SIM_CTL_SLACK") or "0")
# The firmware's heap first, in one piece at the bottom, as a chip's is at boot ...
try:
    _room = bytearray(_budget)
except MemoryError:
    sys.stderr.write("sim: the process heap is smaller than the firmware's %d\n" % _budget)
    sys.exit(3)
# ... then the simulation modules above it ...
_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."


def _short(used):
    sys.stderr.write("sim: the simulation modules need more than the %d bytes beside the"
                     " firmware's %d (raise SIM_HEAP_ALLOWANCE in sim/board.py)\n"
                     % (used, _budget))
    sys.exit(3)


try:
    for _name in sorted(os.listdir(_here)):
        if _name.endswith((".mpy", ".py")) and _name[0] != "." and not _name.startswith("_chip"):
            __import__(_name.rsplit(".", 1)[0])
except MemoryError:
    _short(gc.mem_alloc() - _budget - _base)

import _heap  # noqa: E402 (imported above)
import _sim  # noqa: E402

gc.collect()
_held = gc.mem_alloc() - _budget - _base
if _budget:
    if gc.mem_free() < 4096:  # what the simulation allocates as it runs
        _short(_held)
    # ... and every gap left around them held, so the firmware's heap is the bottom piece.
    _sim.ballast = _fill = [None] * 96
    _fill[-1] = _dots = [None] * 128  # for the one-block gaps, below
    _size = gc.mem_free()
    _i = 0
    while _i < len(_fill) - 1 and _size >= 48:
        try:
            _fill[_i] = bytearray(_size - 32)
            _i += 1
        except MemoryError:
            _size = _size * 3 // 4
    # The one-block gaps left between objects: a float is one block.
    for _i in range(len(_dots)):
        try:
            _dots[_i] = _i + 0.5
        except MemoryError:
            break
    del _dots, _fill, _i, _size
    _room = None
    gc.collect()
    _heap.held = gc.mem_alloc()
    sys.modules["gc"] = _heap
    sys.stderr.write("sim: heap held %d (simulation modules %d), firmware free %d\n"
                     % (_heap.held, _held, gc.mem_free()))

_main = _env("SIM_MAIN") or "main.py"
_dir = _main.rsplit("/", 1)[0] if "/" in _main else ""
if sys.path[0] != _dir:
    sys.path.insert(0, _dir)
del _name, _here, _budget, _held, _base, _room, _short
with open(_main) as _f:
    _code = compile(_f.read(), _main, "exec")
del _f
exec(_code, {"__name__": "__main__"})
