"""Recorded signals: the CSV files that a scenario's `recording` signals play, read and
checked against the signal up front, then turned into a physics.Recording for one board.

Never lets a bad file through to a run: every problem is a `signals[i].field: reason` line."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from sim.physics import Recording
from sim.scenario import RecordingSignal, Scenario, Signal

UNITS = {"vibration": "g", "gas": "ppm", "flood": "cm"}
"""What a played column holds on each board kind."""
AXES = ("x", "y", "z")


@dataclass(frozen=True)
class Table:
    """A CSV record: the times (first column, seconds) and the columns asked for."""

    names: list[str]
    times: list[float]
    columns: dict[str, list[float]]


class RecordError(ValueError):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {r}" for f, r in problems))


def _number(cell: str) -> float | None:
    try:
        v = float(cell)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def read_table(path: Path, wanted: dict[str, str], shown: str | None = None) -> Table:
    """Read a CSV with a header row whose first column is increasing seconds, and the
    columns `wanted` names (field -> column name), each all numbers. Raises RecordError with
    one (field, reason) per problem: "file" for the file itself, else the wanted field."""
    shown = shown or str(path)
    if not path.is_file():
        raise RecordError([("file", f"no such file {shown}")])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise RecordError([("file", f"cannot read {shown}: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise RecordError([("file", f"{shown} is not a text (UTF-8) CSV file")]) from None
    try:
        rows = [(n, [c.strip() for c in r]) for n, r in
                enumerate(csv.reader(text.splitlines()), start=1) if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise RecordError([("file", f"{shown} is not valid CSV: {exc}")]) from None
    if not rows:
        raise RecordError([("file", f"{shown} is empty (a header row, then rows of numbers)")])
    names = rows[0][1]
    if all(_number(c) is not None for c in names):
        raise RecordError([("file", f"{shown}: the first row must be a header of column "
                                    "names, not numbers")])
    if any(not c for c in names) or len(set(names)) != len(names):
        raise RecordError([("file", f"{shown}: every header column needs its own name")])
    data = rows[1:]
    if len(data) < 2:
        raise RecordError([("file", f"{shown}: at least two rows of samples are needed")])
    problems: list[tuple[str, str]] = []
    times: list[float] = []
    for n, r in data:
        if len(r) != len(names):
            raise RecordError([("file", f"{shown} line {n}: {len(r)} cells, the header has "
                                        f"{len(names)}")])
        t = _number(r[0])
        if t is None:
            raise RecordError([("file", f"{shown} line {n}: time {r[0]!r} is not a number "
                                        f"(first column: seconds)")])
        if times and t <= times[-1]:
            raise RecordError([("file", f"{shown} line {n}: time {t:g} s is not after "
                                        f"{times[-1]:g} s (the first column must increase)")])
        times.append(t)
    columns: dict[str, list[float]] = {}
    for where, name in wanted.items():
        if name not in names:
            problems.append((where, f"no column {name!r} in {shown} (columns: "
                                    f"{', '.join(names[1:])})"))
            continue
        k = names.index(name)
        if k == 0:
            problems.append((where, f"{name!r} is the time column of {shown}"))
            continue
        values: list[float] = []
        for n, r in data:
            v = _number(r[k])
            if v is None:
                problems.append((where, f"{shown} line {n}: {r[k]!r} in column {name!r} is "
                                        "not a number"))
                break
            values.append(v)
        else:
            columns[name] = values
    if problems:
        raise RecordError(problems)
    return Table(names, times, columns)


def _wanted(s: RecordingSignal) -> dict[str, str]:
    if s.axes is not None:
        return {f"axes.{a}": s.axes[a] for a in AXES if a in s.axes}
    return {"column": s.column} if s.column is not None else {}


def read_signal(s: RecordingSignal, base: Path, kind: str) -> Table:
    """The signal's file read and checked for a board of this kind."""
    table = read_table(s.file if s.file.is_absolute() else base / s.file, _wanted(s),
                       str(s.file))
    problems: list[tuple[str, str]] = []
    for where, name in _wanted(s).items():
        low = min(table.columns[name])
        if kind in ("gas", "flood") and low < 0:
            problems.append((where, f"column {name!r} goes below 0 ({low:g}): a {kind} "
                                    f"board plays {UNITS[kind]}, never negative"))
    if s.peak is not None and all(v == 0 for c in table.columns.values() for v in c):
        problems.append(("peak", "the played columns are all 0: nothing to rescale"))
    if problems:
        raise RecordError(problems)
    return table


def problems(scenario: Scenario, base: Path) -> list[str]:
    """Every recording signal's file checked (base: the scenario's folder)."""
    out: list[str] = []
    for i, s in enumerate(scenario.signals):
        if not isinstance(s, RecordingSignal):
            continue
        kinds = {spec.kind for spec, _ in scenario.resolve(s.node)} - {"camera"}
        for kind in sorted(kinds):
            try:
                read_signal(s, base, kind)
            except RecordError as exc:
                out += [f"signals[{i}].{f}: {r}" for f, r in exc.problems]
    return list(dict.fromkeys(out))


def resolve(scenario: Scenario, base: Path) -> Scenario:
    """The scenario with every recording's file made absolute (taken from base)."""
    signals = [s.model_copy(update={"file": (base / s.file).resolve()})
               if isinstance(s, RecordingSignal) else s for s in scenario.signals]
    return scenario.model_copy(update={"signals": signals})


def source(s: RecordingSignal, kind: str, smooth_s: float) -> Recording:
    """The physics source that plays this signal on a board of this kind, averaged over
    smooth_s (the board's sample period) where the record is sampled faster. The file
    is taken as it is named (sim/runner.py `prepare` makes it absolute)."""
    table = read_signal(s, Path.cwd(), kind)
    n = len(table.times)
    if s.axes is not None:
        chans = [table.columns[s.axes[a]] if a in s.axes else [0.0] * n for a in AXES]
    else:
        assert s.column is not None  # the scenario's validation requires one or the other
        chans = [table.columns[s.column]]
    return Recording(s.at_s, table.times, chans, smooth_s=smooth_s, peak=s.peak)


def sources(signals: list[Signal], kind: str, smooth_s: float
            ) -> list[tuple[Recording, RecordingSignal]]:
    """The recordings among a board's signals, each with its signal."""
    return [(source(s, kind, smooth_s), s) for s in signals if isinstance(s, RecordingSignal)]
