"""CPU time and memory of the simulator's processes (broker, boards), read from /proc.

Reads only; a process that has gone away reads as None, never as an error."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float | None:
    """User plus system CPU seconds the process has used so far."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _kb(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kb(pid: int) -> int | None:
    return _kb(f"/proc/{pid}/status", "VmRSS:")


def pss_kb(pid: int) -> int | None:
    """Proportional set size: shared pages split between the processes sharing them."""
    return _kb(f"/proc/{pid}/smaps_rollup", "Pss:")


@dataclass(frozen=True)
class Memory:
    processes: int
    rss_kb_mean: float | None
    pss_kb_mean: float | None


def memory(pids: list[int]) -> Memory:
    rss = [v for v in (rss_kb(p) for p in pids) if v is not None]
    pss = [v for v in (pss_kb(p) for p in pids) if v is not None]
    return Memory(len(rss), statistics.fmean(rss) if rss else None,
                  statistics.fmean(pss) if pss else None)


class CpuMeter:
    """CPU share of one process from the meter's creation to percent(), as a percentage of
    one core (None once the process is gone or was replaced, as by a broker restart)."""

    def __init__(self, wall: float, pid: int | None) -> None:
        self.pid = pid
        self.t0 = wall
        self.c0 = cpu_seconds(pid)

    def percent(self, wall: float) -> float | None:
        c1 = cpu_seconds(self.pid)
        if self.c0 is None or c1 is None or wall <= self.t0:
            return None
        return 100.0 * (c1 - self.c0) / (wall - self.t0)
