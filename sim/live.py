"""The live view of a run: a table of what arrives from each node, redrawn in place on a
terminal, or as one line per event and a periodic summary line when the output is a log.

Only formats what the recorder saw; never judges and never slows the run (it skips frames)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TextIO

from sim.expect import Arrival

READINGS = {"gas": (("gas_ppm", "ppm"), ("gas_state", "")),
            "flood": (("level_cm", "cm"), ("float_wet", "wet")),
            "vibration": (("vib_peak_g", "g"), ("sta_lta", "sta/lta")),
            "camera": (("fps", "fps"), ("inference_ms", "ms"))}


@dataclass
class Row:
    node: str
    kind: str
    state: str = "-"
    telemetry: int = 0
    events: int = 0
    last_event: str = ""
    reading: str = ""


def _reading(kind: str, metrics: dict[str, Any]) -> str:
    parts = []
    for key, unit in READINGS.get(kind, ()):
        v = metrics.get(key)
        if v is not None:
            parts.append(f"{v}{' ' + unit if unit else ''}")
    return ", ".join(parts)


def _event_text(doc: dict[str, Any]) -> str:
    d = doc.get("details") or {}
    what = " ".join(f"{k}={v}" for k, v in d.items() if k not in ("box", "ratio"))
    hist = " (historical)" if doc.get("historical") else ""
    return f"{doc.get('type')}/{doc.get('phase')} seq={doc.get('seq')} {what}{hist}"


class LiveTable:
    """`tty`: redraw a table in place (at most once a second); otherwise print each event,
    status change and fault as it happens and a summary line every `every_s` seconds."""

    def __init__(self, out: TextIO, kinds: dict[str, str], duration_s: float,
                 tty: bool | None = None, max_rows: int = 20, every_s: float = 10.0) -> None:
        self.out = out
        self.rows = {n: Row(n, k) for n, k in kinds.items()}
        self.duration_s = duration_s
        self.tty = out.isatty() if tty is None else tty
        self.max_rows = max_rows
        self.every_s = every_s
        self.messages = 0
        self.events = 0
        self.recent: list[str] = []
        self._last_draw = 0.0
        self._t = 0.0

    def add(self, arrivals: list[Arrival]) -> None:
        for a in arrivals:
            self.messages += 1
            row = self.rows.get(a.node)
            if row is None:
                continue
            if a.doc is None:
                if a.raw is not None:
                    self._log(a.t, a.node, f"MALFORMED {a.kind} payload ({a.size} bytes)")
                continue
            if a.kind == "telemetry":
                row.telemetry += 1
                row.reading = _reading(row.kind, a.doc.get("metrics") or {})
            elif a.kind == "status":
                state = str(a.doc.get("state", "?"))
                if state != row.state:
                    row.state = state
                    self._log(a.t, a.node, f"status {state}"
                              + (f" ({a.doc['reason']})" if a.doc.get("reason") else ""))
            elif a.kind == "event":
                self.events += 1
                row.events += 1
                row.last_event = f"{a.doc.get('type')}/{a.doc.get('phase')} @{a.t:.1f}s"
                self._log(a.t, a.node, _event_text(a.doc))

    def note(self, t: float, text: str) -> None:
        """Something the simulator did (a fault beginning or ending)."""
        self._log(t, "sim", text)

    def _log(self, t: float, who: str, text: str) -> None:
        self.recent = (self.recent + [f"{t:7.1f}s  {who:<14} {text}"])[-8:]
        if not self.tty:
            self.out.write(f"{t:8.1f}s  {who:<14} {text}\n")
            self.out.flush()

    def tick(self, t: float, force: bool = False) -> None:
        self._t = t
        now = time.monotonic()
        every = 1.0 if self.tty else self.every_s
        if not force and now - self._last_draw < every:
            return
        self._last_draw = now
        if self.tty:
            self.out.write("\x1b[H\x1b[J" + self.render() + "\n")
        else:
            self.out.write(self.summary_line() + "\n")
        self.out.flush()

    def summary_line(self) -> str:
        online = sum(r.state == "online" for r in self.rows.values())
        return (f"{self._t:8.1f}s  -- {self.messages} messages, {self.events} events, "
                f"{online}/{len(self.rows)} nodes online")

    def render(self) -> str:
        lines = [f"scenario time {self._t:7.1f} / {self.duration_s:g} s   "
                 f"messages {self.messages}   events {self.events}",
                 f"{'node':<16} {'kind':<10} {'status':<8} {'telem':>6} {'events':>6}  "
                 f"{'last event':<26} reading"]
        rows = sorted(self.rows.values(), key=lambda r: (-r.events, r.node))
        for r in rows[:self.max_rows]:
            lines.append(f"{r.node:<16} {r.kind:<10} {r.state:<8} {r.telemetry:>6} "
                         f"{r.events:>6}  {r.last_event:<26} {r.reading}")
        if len(rows) > self.max_rows:
            lines.append(f"... and {len(rows) - self.max_rows} more nodes")
        lines += ["", "latest:"] + self.recent
        return "\n".join(lines)
