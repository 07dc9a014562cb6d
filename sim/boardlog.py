"""A board's log: each line of its output stamped with the board time at which it was read,
so a log line can be set beside the timeline and the messages of a run.

Only records and reads back what the board printed (and the harness's own notes); never
drops, reorders or rewrites a line."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

STAMPED = re.compile(r"^(-?\d+\.\d{3}) (.*)$")
"""One line of the file: board seconds (3 decimals), one space, the line as printed."""


def stamp(t: float, line: str) -> str:
    return f"{t:.3f} {line}"


def parse(text: str) -> list[tuple[float | None, str]]:
    """(board seconds, line) for each line of a stamped log; None for a line with no stamp
    (a log written by an older harness)."""
    out: list[tuple[float | None, str]] = []
    for line in text.splitlines():
        m = STAMPED.match(line)
        out.append((float(m.group(1)), m.group(2)) if m else (None, line))
    return out


class StampedLog:
    """The file `path`, appended to by one reader thread per process (`attach`) and by the
    harness (`note`), each line stamped with `clock()` when it is read or noted."""

    def __init__(self, path: Path, clock: Callable[[], float]) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def note(self, line: str) -> None:
        """A line of the harness's own (a start, a reset), stamped now."""
        self._write(line)

    def attach(self, stream: IO[bytes], name: str) -> None:
        """Read `stream` (a process's stdout) to its end in a thread of its own; the previous
        process's output is drained first, so lines stay in the order they were printed."""
        self.drain()
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True,
                                        name=f"log-{name}")
        self._reader.start()

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until everything the last attached process printed is in the file (its
        output ends when it exits)."""
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout)

    def _read(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                self._write(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def _write(self, line: str) -> None:
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(stamp(self.clock(), line) + "\n")

    def text(self, stamped: bool = False) -> str:
        """The log as written (stamped) or as the board printed it (each stamp cut off, so
        what parses a board's output reads it unchanged)."""
        try:
            raw = self.path.read_text(errors="replace")
        except OSError:
            return ""
        if stamped:
            return raw
        return "".join(line + "\n" for _, line in parse(raw))
