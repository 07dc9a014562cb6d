"""Recorded signals in scenarios: a bad CSV or a recording aimed at the wrong board is a bad
scenario (exit 2, one line naming the field and the reason, never a traceback); a good one
is played resampled to the board's rate, rescaled to `peak`, added to the other signals;
the shipped strong-motion record matches what its scenario says about it."""

from __future__ import annotations

import csv
import math
import struct
import tomllib
from pathlib import Path

import pytest

from sim import cli, records
from sim.board import ADXL_COUNTS_PER_G, SimBoard, firmware_defaults
from sim.inputs import ACCEL_HZ, FloodFeed, GasFeed, VibrationFeed, feed_for
from sim.physics import Recording
from sim.runner import prepare
from sim.scenario import RecordingSignal

SCENARIOS = Path(__file__).resolve().parent.parent / "sim" / "scenarios"

NODES = """
name = "rec"
duration_s = 30
[[nodes]]
id = "vib-1"
kind = "vibration"
[[nodes]]
id = "gas-1"
kind = "gas"
[[nodes]]
id = "flood-1"
kind = "flood"
[[nodes]]
id = "cam"
kind = "camera"
config = "cam.toml"
"""


def _scenario(tmp_path: Path, signals: str, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "cam.toml").write_text("")
    path = tmp_path / "s.toml"
    path.write_text(NODES + signals)
    return path


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    rc = cli.main(["check", str(path)])
    err = capsys.readouterr().err
    return rc, [line.removeprefix(f"{path}: ") for line in err.splitlines()]


def _vib(file: str = "records/q.csv", extra: str = 'axes = { x = "ew", y = "ns" }') -> str:
    return f"""
[[signals]]
type = "recording"
node = "vib-1"
at_s = 5
file = "{file}"
{extra}
"""


GOOD = "seconds,ew,ns\n0,0.01,0.02\n0.01,-0.03,0.01\n0.02,0.0,0.0\n"


@pytest.mark.parametrize("csv_text, expected", [
    ("seconds,ew\n0,0.01\n0.01,0.02\n",
     "signals[0].axes.y: no column 'ns' in records/q.csv (columns: ew)"),
    ("seconds,ew,ns\n0,0.01,0\n0.01,0.02,0\n0.01,0.03,0\n",
     "signals[0].file: records/q.csv line 4: time 0.01 s is not after 0.01 s (the first "
     "column must increase)"),
    ("seconds,ew,ns\n0,0.01,0\n0.02,0.02,0\n0.01,0.03,0\n",
     "signals[0].file: records/q.csv line 4: time 0.01 s is not after 0.02 s (the first "
     "column must increase)"),
    ("seconds,ew,ns\n0,0.01,0\n0.01,n/a,0\n",
     "signals[0].axes.x: records/q.csv line 3: 'n/a' in column 'ew' is not a number"),
    ("seconds,ew,ns\n0,0.01,0\n0.01,nan,0\n",
     "signals[0].axes.x: records/q.csv line 3: 'nan' in column 'ew' is not a number"),
    ("seconds,ew,ns\n0,0.01,0\nlater,0.02,0\n",
     "signals[0].file: records/q.csv line 3: time 'later' is not a number (first column: "
     "seconds)"),
    ("0,0.01,0\n0.01,0.02,0\n0.02,0.02,0\n",
     "signals[0].file: records/q.csv: the first row must be a header of column names, not "
     "numbers"),
    ("seconds,ew,ns\n0,0.01,0\n0.01,0.02\n",
     "signals[0].file: records/q.csv line 3: 2 cells, the header has 3"),
    ("seconds,ew,ns\n0,0.01,0\n", "signals[0].file: records/q.csv: at least two rows of "
                                   "samples are needed"),
    ("", "signals[0].file: records/q.csv is empty (a header row, then rows of numbers)"),
])
def test_a_bad_record_file_is_a_bad_scenario_naming_the_field(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], csv_text: str,
        expected: str) -> None:
    path = _scenario(tmp_path, _vib(), {"records/q.csv": csv_text})
    rc, lines = _check(path, capsys)
    assert rc == 2
    assert lines == [expected]


def test_a_missing_or_binary_file_is_named_relative_to_the_scenario(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _scenario(tmp_path, _vib("records/none.csv") + _vib("q.bin"), {})
    (tmp_path / "q.bin").write_bytes(b"\xff\xfe\x00\x81" * 10)
    rc, lines = _check(path, capsys)
    assert rc == 2
    assert lines == ["signals[0].file: no such file records/none.csv",
                     "signals[1].file: q.bin is not a text (UTF-8) CSV file"]


def test_the_file_is_found_from_the_scenario_not_from_the_working_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _scenario(tmp_path, _vib(), {"records/q.csv": GOOD})
    monkeypatch.chdir(tmp_path / "records")  # "records/q.csv" does not exist from here
    scenario = prepare(path)
    s = scenario.signals[0]
    assert isinstance(s, RecordingSignal)
    assert s.file == (tmp_path / "records" / "q.csv").resolve()
    rec, _ = records.sources(scenario.signals, "vibration", 1 / ACCEL_HZ)[0]
    assert rec.accel_g(5.01) == pytest.approx((-0.03, 0.01, 0.0))


@pytest.mark.parametrize("signal, expected", [
    ('node = "gas-1"\naxes = { x = "ew" }',
     ["signals[0].column: required on a gas board (the one column to play)",
      "signals[0].axes: only for vibration boards (gas and flood: column)"]),
    ('node = "vib-1"\ncolumn = "ew"',
     ["signals[0].axes: required on a vibration board (x, y or z -> column, in g)",
      "signals[0].column: only for gas and flood boards (vibration: axes)"]),
    ('node = "cam"\ncolumn = "ew"',
     ["signals[0].node: recording needs a gas, flood or vibration board, 'cam' is a camera"]),
    ('node = "vib-1"\naxes = { x = "ew", up = "ns" }',
     ["signals[0].axes: board axes are x, y and z, not 'up'"]),
    ('node = "vib-1"\naxes = {}', ["signals[0].axes: name at least one axis (x, y or z -> "
                                   "column)"]),
    ('node = "gas-1"\ncolumn = "ew"\nfloat_at_cm = 3',
     ["signals[0].float_at_cm: only for flood boards"]),
    ('node = "vib-1"\naxes = { x = "ew" }\npeak = 0', ["signals[0].peak: Input should be "
                                                       "greater than 0"]),
])
def test_a_recording_takes_the_fields_of_its_board_kind(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], signal: str,
        expected: list[str]) -> None:
    path = _scenario(tmp_path, f"""
[[signals]]
type = "recording"
at_s = 5
file = "q.csv"
{signal}
""", {"q.csv": GOOD})
    rc, lines = _check(path, capsys)
    assert rc == 2
    assert lines == expected


def test_gas_and_flood_columns_cannot_go_negative_and_peak_needs_a_signal(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signals = """
[[signals]]
type = "recording"
node = "gas-1"
at_s = 1
file = "q.csv"
column = "ew"
[[signals]]
type = "recording"
node = "flood-1"
at_s = 1
file = "zero.csv"
column = "cm"
peak = 10
"""
    path = _scenario(tmp_path, signals, {"q.csv": GOOD, "zero.csv": "t,cm\n0,0\n1,0\n"})
    rc, lines = _check(path, capsys)
    assert rc == 2
    assert lines == ["signals[0].column: column 'ew' goes below 0 (-0.03): a gas board plays "
                     "ppm, never negative",
                     "signals[1].peak: the played columns are all 0: nothing to rescale"]


def test_a_record_is_interpolated_to_the_boards_rate_and_zero_outside_it() -> None:
    rec = Recording(10.0, [2.0, 2.1, 2.2], [[0.0, 1.0, -1.0]])  # 10 Hz, first row at 10 s
    got = [rec.values(10.0 + k / ACCEL_HZ)[0] for k in range(-2, 23)]
    want = [0.0, 0.0] + [k / 10 for k in range(11)] + [1 - 2 * k / 10 for k in range(1, 11)] \
        + [0.0, 0.0]
    assert got == pytest.approx(want)


def test_a_record_at_the_boards_rate_is_played_sample_for_sample() -> None:
    vals = [math.sin(k) for k in range(200)]
    rec = Recording(0.0, [k / ACCEL_HZ for k in range(200)], [vals], smooth_s=1 / ACCEL_HZ)
    assert [rec.values(k / ACCEL_HZ)[0] for k in range(200)] == pytest.approx(vals)


def test_a_faster_record_is_averaged_so_what_the_board_cannot_see_does_not_alias() -> None:
    # 1 kHz record: 0.1 g at 2 Hz (kept) plus 0.1 g at 190 Hz, which sampled at 100 Hz
    # without averaging would alias to a 10 Hz signal of nearly full amplitude.
    hz = 1000
    ts = [k / hz for k in range(3 * hz)]
    slow = [0.1 * math.sin(2 * math.pi * 2 * t) for t in ts]
    fast = [0.1 * math.sin(2 * math.pi * 190 * t + 0.3) for t in ts]
    mixed = Recording(0.0, ts, [[a + b for a, b in zip(slow, fast, strict=True)]],
                      smooth_s=1 / ACCEL_HZ)
    board = [k / ACCEL_HZ for k in range(10, 3 * ACCEL_HZ - 10)]
    err = max(abs(mixed.values(t)[0] - 0.1 * math.sin(2 * math.pi * 2 * t)) for t in board)
    naive = Recording(0.0, ts, [[a + b for a, b in zip(slow, fast, strict=True)]])
    err_naive = max(abs(naive.values(t)[0] - 0.1 * math.sin(2 * math.pi * 2 * t))
                    for t in board)
    assert err_naive > 0.05  # the alias the averaging must remove
    assert err < 0.012  # what is left of it: under 3 ADXL345 counts (3.9 mg each)


def test_peak_rescales_every_channel_by_one_factor() -> None:
    rec = Recording(0.0, [0.0, 1.0, 2.0], [[0.1, -0.4, 0.2], [0.0, 0.2, 0.0], [0.0] * 3],
                    peak=0.12)
    assert rec.accel_g(1.0) == pytest.approx((-0.12, 0.06, 0.0))
    assert rec.accel_g(2.0) == pytest.approx((0.06, 0.0, 0.0))


@pytest.fixture(scope="module")
def defaults() -> dict[str, object]:
    return firmware_defaults()


def _board(kind: str, node: str, tmp_path: Path, defaults: dict[str, object]) -> SimBoard:
    b = SimBoard(kind, node, "127.0.0.1", 1, tmp_path / node, defaults=defaults)
    b.dir.mkdir(parents=True)
    return b


def test_each_board_kind_plays_its_recording_with_the_other_signals(
        tmp_path: Path, defaults: dict[str, object]) -> None:
    rows = "t,ew,ns,ud,ppm,cm\n" + "".join(
        f"{k / 10},{0.01 * k},{-0.02 * k},0.5,{100 * k},{k}\n" for k in range(11))
    signals = """
[[signals]]
type = "recording"
node = "vib-1"
at_s = 5
file = "r.csv"
axes = { x = "ns", y = "ew" }
[[signals]]
type = "earthquake"
node = "vib-1"
at_s = 1
duration_s = 1
s_delay_s = 1
[[signals]]
type = "recording"
node = "gas-1"
at_s = 5
file = "r.csv"
column = "ppm"
[[signals]]
type = "gas_leak"
node = "gas-1"
at_s = 5
peak_ppm = 300
ramp_s = 1
[[signals]]
type = "recording"
node = "flood-1"
at_s = 5
file = "r.csv"
column = "cm"
float_at_cm = 6
"""
    scenario = prepare(_scenario(tmp_path, signals, {"r.csv": rows}))

    vib = feed_for(scenario, "vib-1", "vibration", _board("vibration", "vib-1", tmp_path,
                                                          defaults))
    assert isinstance(vib, VibrationFeed)
    assert vib.accel_g(5.55) == pytest.approx((-0.11, 0.055, 0.0))  # z is left to gravity
    vib.start()  # the stream from the first signal (the quake at 1 s) to the end, at 100 Hz
    spec = vib.board.ctl["accel"][str(vib.board.board.get("accel_addr", 0x53))]
    assert (spec["rate_hz"], spec["t0_ms"], spec["n"]) == (ACCEL_HZ, 1000, 29 * ACCEL_HZ + 1)
    raw = (vib.board.dir / spec["file"]).read_bytes()
    k = (555 - 100) * 6  # the sample at 5.55 s
    assert struct.unpack_from("<hhh", raw, k) == (round(-0.11 * ADXL_COUNTS_PER_G),
                                                  round(0.055 * ADXL_COUNTS_PER_G), 0)

    gas = feed_for(scenario, "gas-1", "gas", _board("gas", "gas-1", tmp_path, defaults))
    assert isinstance(gas, GasFeed)
    assert gas.ppm(5.5) == pytest.approx(500 + 150)  # the record plus the leak
    assert gas.ppm(4.9) == 0.0

    flood = feed_for(scenario, "flood-1", "flood", _board("flood", "flood-1", tmp_path,
                                                          defaults))
    assert isinstance(flood, FloodFeed)
    assert flood.level_cm(5.55) == pytest.approx(5.5)
    low = flood.board.defaults["flood"]["float_active_low"]
    dry, wet = float(bool(low)), float(not low)
    assert [flood._float_level(t) for t in (5.45, 5.65, 5.95, 6.05)] == [dry, wet, wet, dry]


def test_the_shipped_record_is_what_its_scenario_says() -> None:
    """quake-record.toml's window is worked out from the record: if the record changes, the
    scenario's times must follow (records/ridgecrest_ccc.py prints them)."""
    path = SCENARIOS / "records" / "ridgecrest-ccc.csv"
    assert path.stat().st_size < 300_000
    with path.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["seconds", "ew", "ns", "ud"]
    t = [float(r[0]) for r in rows[1:]]
    assert all(abs(b - a - 1 / ACCEL_HZ) < 1e-6 for a, b in zip(t, t[1:], strict=False))
    ew, ns, ud = ([float(r[k]) for r in rows[1:]] for k in (1, 2, 3))
    noise = max(abs(v) for c in (ew, ns, ud) for v in c[:ACCEL_HZ * 5])
    first = next(i for i in range(len(t)) if max(abs(ew[i]), abs(ns[i]), abs(ud[i]))
                 > 10 * noise) / ACCEL_HZ
    arias = [0.0]
    for a, b in zip(ew, ns, strict=True):
        arias.append(arias[-1] + a * a + b * b)
    onset = next(i for i, a in enumerate(arias) if a >= 0.05 * arias[-1]) / ACCEL_HZ

    scenario = tomllib.loads((SCENARIOS / "quake-record.toml").read_text())
    sig = next(s for s in scenario["signals"] if s["type"] == "recording")
    start = next(e for e in scenario["expect"] if e["phase"] == "start")
    assert 0.05 <= sig["peak"] <= 0.3
    # the first arrival is a threshold over noise: a tenth of a second either way
    assert start["after_s"] == pytest.approx(sig["at_s"] + first, abs=0.1)
    assert start["after_s"] + start["within_s"] == pytest.approx(sig["at_s"] + onset + 1,
                                                                 abs=0.02)
    assert sig["at_s"] + t[-1] < scenario["duration_s"]
