"""Vibration: ADXL345 sampled at a steady rate, gravity removed by a DC-tracking high-pass,
recursive STA/LTA trigger/detrigger plus a peak-acceleration gate, events with peak_g,
duration_s and dominant axis; I2C errors become a sensor fault.

sample() is the hot path: integer fixed point only, so it allocates nothing (a float on
MicroPython is a heap object); all values stay under 2**30 so this holds on the ESP32 too."""

import time
from machine import I2C, Pin
from micropython import const

_CF_MAX = const(16383)  # clamp of the characteristic function (0.25 g of vector amplitude)
_Q = const(512)  # high-passed acceleration is in 1/512 g (Q1 of the 256/g counts)
_HP_SHIFT = const(7)  # DC tracker time constant: 128 samples (fc ~0.12 Hz at 100 Hz)
_AXES = "xyz"

# -- ADXL345 over I2C: rate, range, full resolution, raw reads ---------------------------
ADDR = const(0x53)
_DEVID = const(0x00)
_BW_RATE = const(0x2C)
_POWER_CTL = const(0x2D)
_DATA_FORMAT = const(0x31)
_DATAX0 = const(0x32)
_RATES = ((400, 0x0C), (200, 0x0B), (100, 0x0A), (50, 0x09), (25, 0x08), (12, 0x07))


class ADXL345:
    def __init__(self, i2c, addr=ADDR):
        self.i2c = i2c
        self.addr = addr
        self.one = bytearray(1)

    def _w(self, reg, v):
        self.one[0] = v
        self.i2c.writeto_mem(self.addr, reg, self.one)

    def init(self, rate_hz=100, range_g=4):
        """Raises OSError if the chip does not answer or is not an ADXL345."""
        self.i2c.readfrom_mem_into(self.addr, _DEVID, self.one)
        if self.one[0] != 0xE5:
            raise OSError(19)
        code = 0x0A
        for hz, c in _RATES:  # output data rate at least twice our sampling rate
            if hz >= 2 * rate_hz:
                code = c
        self._w(_BW_RATE, code)
        rng = {2: 0, 4: 1, 8: 2, 16: 3}.get(range_g, 1)
        self._w(_DATA_FORMAT, 0x08 | rng)  # FULL_RES
        self._w(_POWER_CTL, 0x08)  # measure

    def read_into(self, buf):
        """Six bytes: X0 X1 Y0 Y1 Z0 Z1, little-endian two's complement."""
        self.i2c.readfrom_mem_into(self.addr, _DATAX0, buf)

    def devid(self):
        self.i2c.readfrom_mem_into(self.addr, _DEVID, self.one)
        return self.one[0]


# -- signal processing ------------------------------------------------------------------


class Vibration:
    sensor = "accel"

    def __init__(self, cfg, board, emit):
        p = board["pins"]
        self.i2c = I2C(board.get("i2c_bus", 0), scl=Pin(p["scl"]), sda=Pin(p["sda"]),
                       freq=400000)
        self.dev = ADXL345(self.i2c, board.get("accel_addr", ADDR))
        self.emit = emit
        self.buf = bytearray(6)
        self.errors = 0  # consecutive I2C errors
        self.i2c_errors = 0
        self.fault_id = None
        self.fault_t = 0
        self.retry_at = 0
        self.samples = 0
        self.overruns = 0
        self.max_q = 0  # largest |a| since last telemetry, 1/512 g
        self.last_ratio16 = 0
        self.configure(cfg)
        try:
            self.dev.init(self.rate, self.c["range_g"])
        except OSError:
            self.errors = 3
            self._fault(time.ticks_ms())

    def configure(self, cfg):
        c = self.c = cfg["vibration"]
        self.rate = c["rate_hz"]
        self.period = 1000000 // self.rate
        self.next = time.ticks_us()
        self.n_sta = max(1, int(c["sta_s"] * self.rate))
        self.n_lta = max(self.n_sta + 1, int(c["lta_s"] * self.rate))
        self.trig16 = int(c["trigger"] * 16)
        self.detrig16 = int(c["detrigger"] * 16)
        self.gate = int(c["peak_gate_g"] * _Q)
        self.max_samples = c["max_event_s"] * self.rate
        self.reset_filter()

    def reset_filter(self):
        self.mx = self.my = self.mz = 0  # DC (gravity) estimates, Q8 counts
        self.sta = 0  # leaky sums: sta * n_sta, lta * n_lta
        self.lta = 0
        self.warm = 0  # samples since (re)start; no trigger before the LTA is seeded
        self.on = False  # STA/LTA triggered
        self.started = False  # the trigger passed the peak gate: an event was emitted
        self.px = self.py = self.pz = 0  # per-axis peaks in this trigger
        self.ev_n = 0
        self.ev_ratio16 = 0
        self.event_id = None

    def due_us(self, now):
        return time.ticks_diff(self.next, now)

    def tick(self, now):
        """Take every sample that is due (at most 10 behind; then skip and count)."""
        if time.ticks_diff(now, self.next) < 0:
            return
        late = time.ticks_diff(now, self.next) // self.period
        if late > 10:
            self.overruns += late
            self.next = time.ticks_add(self.next, late * self.period)
        self.next = time.ticks_add(self.next, self.period)
        if self.fault_id is not None:
            self._retry(time.ticks_ms())
            return
        try:
            self.dev.read_into(self.buf)
        except OSError:
            self.i2c_errors += 1
            self.errors += 1
            if self.errors >= 3:
                self._fault(time.ticks_ms())
            return
        self.errors = 0
        self.sample(self.buf)

    def sample(self, b):
        """Process one raw reading (6 bytes); integer arithmetic only."""
        x = b[0] | (b[1] << 8)
        if x & 0x8000:
            x -= 0x10000
        y = b[2] | (b[3] << 8)
        if y & 0x8000:
            y -= 0x10000
        z = b[4] | (b[5] << 8)
        if z & 0x8000:
            z -= 0x10000
        self.samples += 1
        w = self.warm
        if w == 0:
            self.mx = x << 8
            self.my = y << 8
            self.mz = z << 8
        # high-pass: subtract the slowly tracked DC level; result in 1/512 g
        self.mx += ((x << 8) - self.mx) >> _HP_SHIFT
        self.my += ((y << 8) - self.my) >> _HP_SHIFT
        self.mz += ((z << 8) - self.mz) >> _HP_SHIFT
        hx = ((x << 8) - self.mx) >> 7
        hy = ((y << 8) - self.my) >> 7
        hz = ((z << 8) - self.mz) >> 7
        ax = -hx if hx < 0 else hx
        ay = -hy if hy < 0 else hy
        az = -hz if hz < 0 else hz
        m = ax if ax > ay else ay
        if az > m:
            m = az
        if m > self.max_q:
            self.max_q = m
        cf = hx * hx + hy * hy + hz * hz
        if cf > _CF_MAX:
            cf = _CF_MAX
        ns = self.n_sta
        nl = self.n_lta
        self.sta += cf - self.sta // ns
        if w < ns:  # seed: LTA starts equal to the first STA window
            self.warm = w + 1
            if w + 1 == ns:
                self.lta = (self.sta // ns) * nl
            return
        if not self.on:  # the LTA is frozen during a trigger
            self.lta += cf - self.lta // nl
        # ratio in 1/16 units: sta16 * 16 / lta16, all terms < 2**30
        sta16 = (self.sta << 4) // ns
        lta = self.lta
        lta16 = (lta // nl << 4) + ((lta % nl) << 4) // nl
        if lta16 < 16:
            lta16 = 16
        if not self.on:
            if sta16 << 4 > self.trig16 * lta16:
                self.on = True
                self.px = self.py = self.pz = 0
                self.ev_n = 0
                self.ev_ratio16 = 0
            else:
                return
        r16 = (sta16 << 4) // lta16
        self.last_ratio16 = r16
        if r16 > self.ev_ratio16:
            self.ev_ratio16 = r16
        self.ev_n += 1
        if ax > self.px:
            self.px = ax
        if ay > self.py:
            self.py = ay
        if az > self.pz:
            self.pz = az
        if not self.started and m >= self.gate:
            self.started = True
            self.event_id = self.emit("vibration", "start", "critical", self._details())
        if r16 < self.detrig16 or self.ev_n >= self.max_samples:
            if self.started:
                self.emit("vibration", "end", "info", self._details(), self.event_id,
                          self.ev_n / self.rate)
            self.on = False
            self.started = False
            self.event_id = None

    def _details(self):
        p = self.px
        axis = 0
        if self.py > p:
            p = self.py
            axis = 1
        if self.pz > p:
            p = self.pz
            axis = 2
        return {"peak_g": round(p / _Q, 4), "duration_s": round(self.ev_n / self.rate, 2),
                "axis": _AXES[axis], "sta_lta": round(self.ev_ratio16 / 16, 2)}

    def _fault(self, now):
        if self.fault_id is None:
            self.fault_t = now
            self.retry_at = time.ticks_add(now, 1000)
            self.fault_id = self.emit("sensor_fault", "start", "warning",
                                      {"sensor": "accel", "fault": "i2c",
                                       "value": None, "message": "ADXL345 not answering"})

    def _retry(self, now):
        if time.ticks_diff(now, self.retry_at) < 0:
            return
        self.retry_at = time.ticks_add(now, 1000)
        try:
            self.dev.init(self.rate, self.c["range_g"])
        except OSError:
            return
        self.emit("sensor_fault", "end", "info", {"sensor": "accel", "fault": "i2c"},
                  self.fault_id, time.ticks_diff(now, self.fault_t) / 1000)
        self.fault_id = None
        self.errors = 0
        self.reset_filter()

    def self_test(self):
        try:
            ok = self.dev.devid() == 0xE5
        except OSError:
            ok = False
        return {"accel_devid_ok": ok, "i2c_errors": self.i2c_errors}, ok

    def metrics(self, m):
        m["samples"] = self.samples
        m["overruns"] = self.overruns
        m["vib_peak_g"] = round(self.max_q / _Q, 4)
        m["sta_lta"] = round(self.last_ratio16 / 16, 2)
        m["i2c_errors"] = self.i2c_errors
        self.max_q = 0
