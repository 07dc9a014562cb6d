"""ADXL345 register model for the simulated I2C bus (loaded only on vibration boards).

Samples accrue at the output data rate from board time, also while the CPU is stalled,
and queue in the 32-entry FIFO as on the chip; never allocates on reads."""

import _sim
from machine import _ctl, _noise

# Analog Devices ADXL345 data sheet, "Register Map" and "FIFO", and application note AN-1025
# ("Utilization of the FIFO buffer...", FIFO modes: stream keeps the latest 32 samples):
_INT_SOURCE = 0x30  # D7 DATA_READY, D1 watermark, D0 overrun
_DATAX0 = 0x32  # DATAX0..DATAZ1: in FIFO and stream modes a 6-byte read pops one entry
_FIFO_CTL = 0x38  # D7:D6 FIFO_MODE: 00 bypass, 01 FIFO, 10 stream, 11 trigger
_FIFO_STATUS = 0x39  # D5:D0 entries
_FIFO_N = 32
"""Entries the FIFO holds. The data sheet counts a 33rd in the output registers; this model
keeps 32, one sample less headroom than the chip."""


class ADXL345:
    """DEVID, BW_RATE, POWER_CTL, DATA_FORMAT, FIFO_CTL, FIFO_STATUS, INT_SOURCE and
    DATAX0..DATAZ1. ctl "accel" gives counts at 256/g (full resolution): a base [x, y, z],
    +-noise counts, and an optional int16 xyz stream file played at the board's own time.

    The chip makes sample k at board time k / ODR (data sheet, "Register 0x2C - BW_RATE":
    ODR = 3200 Hz >> (15 - rate code)). In bypass mode the data registers hold the newest sample; in stream
    mode the FIFO keeps the newest 32 and drops the oldest when full (setting the overrun
    bit), and each read of the data registers pops the oldest."""

    def __init__(self, addr):
        self.addr = addr
        self.key = str(addr)
        self.regs = bytearray(64)
        self.regs[0] = 0xE5
        self.regs[0x2C] = 0x0A
        self._v = -1
        self._base = [0, 0, 256]
        self._f = None
        self._t0 = 0
        self._rate = 100
        self._n = 0
        self._noise = 1
        self._buf = bytearray(6)
        self._head = 0  # index of the oldest sample still in the FIFO
        self._overrun = 0
        self.lost = 0  # samples the FIFO dropped (for tests)

    def _reload(self):
        self._v = _ctl.version
        spec = _ctl.get("accel", self.key) or {}
        self._base = list(spec.get("base", [0, 0, 256]))
        self._noise = spec.get("noise", 1)
        if self._f:
            self._f.close()
            self._f = None
        f = spec.get("file")
        if f:
            self._f = open(_sim.DIR + "/" + f, "rb")
            self._t0 = int(spec.get("t0_ms", 0))
            self._rate = int(spec.get("rate_hz", 100))
            self._n = int(spec.get("n", 0))

    def failing(self):
        _ctl.poll()
        return bool(_ctl.get("i2c_error", self.key)) or bool(_ctl.get("i2c_error", "all"))

    def _odr_mhz(self):
        return 3200000 >> (15 - (self.regs[0x2C] & 0x0F))

    def _made(self):
        """Samples made since world start (index of the next one)."""
        return _sim.now_us() * self._odr_mhz() // 1000000000 + 1

    def _stream(self):
        return self.regs[_FIFO_CTL] & 0xC0 == 0x80 and self.regs[0x2D] & 0x08

    def _fill(self):
        """Entries in the FIFO now; drops the oldest past 32 (stream mode)."""
        made = self._made()
        n = made - self._head
        if n > _FIFO_N:
            self.lost += n - _FIFO_N
            self._head = made - _FIFO_N
            self._overrun = 1
            n = _FIFO_N
        return n

    def _sample(self, k, r):
        """Sample k into the data registers."""
        x, y, z = self._base
        nz = self._noise
        if nz:
            x += _noise() * nz
            y += _noise() * nz
            z += _noise() * nz
        f = self._f
        if f is not None:
            t_ms = k * 1000000 // self._odr_mhz()
            i = (t_ms - self._t0) * self._rate // 1000
            if 0 <= i < self._n:
                f.seek(i * 6)
                f.readinto(self._buf)
                b = self._buf
                x += _s16(b[0] | (b[1] << 8))
                y += _s16(b[2] | (b[3] << 8))
                z += _s16(b[4] | (b[5] << 8))
        lim = 256 << (r[0x31] & 3)  # full-resolution range limit
        if not r[0x2D] & 0x08:  # not in measurement mode: data registers hold 0
            x = y = z = 0
        _put(r, 0x32, x, lim)
        _put(r, 0x34, y, lim)
        _put(r, 0x36, z, lim)

    def read(self, reg, buf):
        if self._v != _ctl.version:
            self._reload()
        r = self.regs
        n = len(buf)
        if reg <= _FIFO_STATUS < reg + n or reg <= _INT_SOURCE < reg + n:
            if self._stream():
                e = self._fill()
            else:
                e = 0
                self._head = self._made()
            r[_FIFO_STATUS] = e
            r[_INT_SOURCE] = (0x80 if e else 0) | self._overrun
        if reg <= _DATAX0 < reg + n:
            if self._stream():
                if self._fill():
                    self._sample(self._head, r)
                    self._head += 1
                else:  # empty: the output registers still hold the newest sample
                    self._sample(self._head - 1, r)
                self._overrun = 0  # cleared when the FIFO is read
            else:
                self._head = self._made()
                self._sample(self._head - 1, r)
        i = 0
        while i < n:
            buf[i] = r[(reg + i) & 63]
            i += 1

    def write(self, reg, data):
        was = self._stream()
        for i in range(len(data)):
            self.regs[(reg + i) & 63] = data[i]
        if self._stream() and not was:  # stream mode or measurement starts: FIFO empty
            self._head = self._made()
            self._overrun = 0


def _s16(v):
    return v - 0x10000 if v & 0x8000 else v


def _put(r, at, v, lim):
    if v >= lim:
        v = lim - 1
    elif v < -lim:
        v = -lim
    v &= 0xFFFF
    r[at] = v & 0xFF
    r[at + 1] = v >> 8
