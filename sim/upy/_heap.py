"""`gc` as the firmware sees it on a chip: mem_alloc() leaves out what sim/upy/_chip.py holds
for the simulation (on a chip that part is C in flash, not heap), so the firmware's
heap_used_bytes telemetry reads as it would on a board. sim/upy/_chip.py installs it."""

import gc as _gc

held = 0
collect = _gc.collect
enable = _gc.enable
disable = _gc.disable
isenabled = _gc.isenabled
mem_free = _gc.mem_free
threshold = _gc.threshold


def mem_alloc():
    return _gc.mem_alloc() - held
