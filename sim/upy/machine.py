"""Simulated `machine` for the MicroPython unix port: ADC, Pin, I2C with an ADXL345
register model, WDT, Timer, RTC, reset and reset_cause, fed by the harness (sim/board.py).

Keeps the real port's API and error types; never allocates on the ADXL345 data read."""

import os
import struct
import sys
import utime
import _sim
import _flash  # noqa: F401 (installs the flash write costs on the board's files)

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
BROWNOUT_RESET = 6
EXT0_WAKE = 2
TIMER_WAKE = 4

# Exit codes the harness (sim/board.py) reads to restart the board with the reset cause the
# esp32 port would report: machine.reset() is esp_restart(), which the port reports as
# HARD_RESET (ports/esp32/modmachine.c mp_machine_reset_cause: ESP_RST_SW and ESP_RST_PANIC
# -> MP_HARD_RESET); machine.soft_reset() restarts only the interpreter (SOFT_RESET).
EXIT_RESET = 42
EXIT_DEEPSLEEP = 43
EXIT_SOFT_RESET = 44

_ctl = _sim.ctl
_outputs = {}  # pin id -> level driven by the firmware
_rng = [12345]


def _noise():
    # Cheap integer LCG, -1..1 counts; keeps the ADXL345 read allocation-free.
    r = (_rng[0] * 1103515245 + 12345) & 0x7FFFFFFF
    _rng[0] = r
    return (r >> 16) % 3 - 1


def reset_cause():
    return int(os.getenv("SIM_RESET_CAUSE") or PWRON_RESET)


def wake_reason():
    return int(os.getenv("SIM_WAKE_REASON") or 0)


def reset():
    sys.stdout.write("machine.reset()\n")
    sys.exit(EXIT_RESET)


def soft_reset():
    sys.stdout.write("machine.soft_reset()\n")
    sys.exit(EXIT_SOFT_RESET)


def deepsleep(ms=0):
    _sim.write_file("sleep", str(ms))
    sys.exit(EXIT_DEEPSLEEP)


def lightsleep(ms=0):
    utime.sleep_ms(_sim.real_ms(ms))


def unique_id():
    n = (os.getenv("SIM_NODE") or "sim").encode()
    return bytes((n[i % len(n)] for i in range(6)))


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 2
    PULL_DOWN = 1

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self._key = str(id)
        self._mode = self.IN
        self._pull = None
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None):
        if mode != -1:
            self._mode = mode
        if pull != -1:
            self._pull = pull
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is not None:
            _outputs[self.id] = 1 if v else 0
            return None
        if self._mode == self.OUT:
            return _outputs.get(self.id, 0)
        _ctl.poll()
        s = _sim.signal_value(_ctl.get("pins", self._key), None)
        if s is None:  # nothing connected: the pull decides
            return 1 if self._pull == self.PULL_UP else 0
        if s == "floating":
            return _noise() & 1
        return 1 if s else 0

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

from _adc import ADC  # the ESP32 ADC at 11 dB: calibration floor, ceiling, noise


_devices = {}


def _device(addr):
    d = _devices.get(addr)
    if d is None:
        kinds = _ctl.state.get("i2c_devices", {"83": "adxl345"})
        if kinds.get(str(addr)) == "adxl345":
            import _adxl

            d = _devices[addr] = _adxl.ADXL345(addr)
    if d is None or d.failing():
        raise OSError(19)  # ENODEV, what the esp32 port raises on NACK
    return d


class I2C:
    def __init__(self, id=0, scl=None, sda=None, freq=400000, timeout=50000):
        self.id = id

    def scan(self):
        _ctl.poll()
        out = []
        for k in _ctl.state.get("i2c_devices", {"83": "adxl345"}):
            try:
                _device(int(k))
                out.append(int(k))
            except OSError:
                pass
        return out

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        _device(addr).read(memaddr, buf)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        _device(addr).write(memaddr, buf)


SoftI2C = I2C


class WDT:
    """The harness is the watchdog: feed() stamps the board time into a file the harness
    watches; when the stamp is older than the timeout it kills and restarts the board
    with reset cause WDT_RESET, even if the firmware is stuck in a blocking call."""

    def __init__(self, id=0, timeout=5000):
        self._f = None
        self._buf = bytearray(12)
        if _sim.DIR:
            self._f = open(_sim.DIR + "/wdt", "wb")
        struct.pack_into("<I", self._buf, 8, timeout)
        self.feed()

    def feed(self):
        f = self._f
        if f is not None:
            struct.pack_into("<q", self._buf, 0, _sim.now_ms())
            f.seek(0)
            f.write(self._buf)
            f.flush()
        if _smallint is not None:
            _smallint.check()


_smallint = None
if os.getenv("SIM_SMALLINT"):
    import _smallint


def RTC():
    from _rtc import RTC

    return RTC()


def Timer(*a, **kw):
    import _timer

    return _timer.Timer(*a, **kw)


def idle():
    pass
