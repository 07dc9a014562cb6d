"""ADXL345 register model for the simulated I2C bus (loaded only on vibration boards).

Acceleration comes from the harness's control file and stream; never allocates on reads."""

import _sim
from machine import _ctl, _noise


class ADXL345:
    """DEVID, BW_RATE, POWER_CTL, DATA_FORMAT and DATAX0..DATAZ1. ctl "accel" gives counts
    at 256/g (full resolution): a base [x, y, z], +-noise counts, and an optional int16
    xyz stream file sampled at the board's own time."""

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

    def read(self, reg, buf):
        if self._v != _ctl.version:
            self._reload()
        r = self.regs
        if reg <= 0x32 < reg + len(buf):
            x, y, z = self._base
            nz = self._noise
            if nz:
                x += _noise() * nz
                y += _noise() * nz
                z += _noise() * nz
            f = self._f
            if f is not None:
                i = (_sim.now_ms() - self._t0) * self._rate // 1000
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
        i = 0
        n = len(buf)
        while i < n:
            buf[i] = r[(reg + i) & 63]
            i += 1

    def write(self, reg, data):
        for i in range(len(data)):
            self.regs[(reg + i) & 63] = data[i]


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
