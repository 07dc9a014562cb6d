"""Vibration: an ADXL345 read through its 32-entry FIFO, gravity removed by a DC-tracking
high-pass, a recursive STA/LTA trigger, and events graded by sustained strong motion
(warning, critical), with peak_g, duration_s and dominant axis; I2C errors are a fault.

Never allocates while sampling: sample() works in integer fixed point (a float on
MicroPython is a heap object), and every value and counter stays inside the ESP32's
31-bit small ints (counters wrap at 2**30)."""

import time
from array import array
from machine import I2C, Pin
from micropython import const

_CF_MAX = const(16383)  # clamp of the characteristic function (0.25 g of vector amplitude)
_Q = const(512)  # high-passed acceleration is in 1/512 g (Q1 of the 256/g counts)
_HP_SHIFT = const(7)  # DC tracker time constant: 128 samples (fc ~0.06 Hz at 50 Hz)
_WRAP = const(0x3FFFFFFF)  # counters go 0 .. 2**30 - 1, then back to 0
_AXES = "xyz"

# -- ADXL345 over I2C (Analog Devices ADXL345 data sheet, "Register Map" and "FIFO") -------
ADDR = const(0x53)
_DEVID = const(0x00)
_BW_RATE = const(0x2C)  # D3:D0 rate code: output data rate = 3200 Hz >> (15 - code)
_POWER_CTL = const(0x2D)
_DATA_FORMAT = const(0x31)
_DATAX0 = const(0x32)
_FIFO_CTL = const(0x38)
_FIFO_STATUS = const(0x39)
_STREAM = const(0x80)  # FIFO_CTL D7:D6 = 10: stream mode, the FIFO keeps the newest 32
_FIFO_N = const(32)
_RATES = ((400, 0x0C), (200, 0x0B), (100, 0x0A), (50, 0x09), (25, 0x08))


class ADXL345:
    def __init__(self, i2c, addr=ADDR):
        self.i2c = i2c
        self.addr = addr
        self.one = bytearray(1)

    def _w(self, reg, v):
        self.one[0] = v
        self.i2c.writeto_mem(self.addr, reg, self.one)

    def init(self, rate_hz=50, range_g=4):
        """Stream mode at an output data rate of rate_hz. Raises OSError if the chip does
        not answer or is not an ADXL345."""
        self.i2c.readfrom_mem_into(self.addr, _DEVID, self.one)
        if self.one[0] != 0xE5:
            raise OSError(19)
        code = 0x09
        for hz, c in _RATES:
            if hz == rate_hz:
                code = c
        self._w(_POWER_CTL, 0)  # standby while configuring
        self._w(_BW_RATE, code)
        rng = {2: 0, 4: 1, 8: 2, 16: 3}.get(range_g, 1)
        self._w(_DATA_FORMAT, 0x08 | rng)  # FULL_RES
        self._w(_FIFO_CTL, 0)  # bypass empties the FIFO
        self._w(_FIFO_CTL, _STREAM)
        self._w(_POWER_CTL, 0x08)  # measure

    def entries(self):
        """Samples waiting in the FIFO (FIFO_STATUS D5:D0)."""
        self.i2c.readfrom_mem_into(self.addr, _FIFO_STATUS, self.one)
        return self.one[0] & 0x3F

    def read_into(self, buf):
        """Pop the oldest sample: six bytes X0 X1 Y0 Y1 Z0 Z1, little-endian two's
        complement (the data sheet asks for one multi-byte read per entry)."""
        self.i2c.readfrom_mem_into(self.addr, _DATAX0, buf)

    def devid(self):
        self.i2c.readfrom_mem_into(self.addr, _DEVID, self.one)
        return self.one[0]


# -- signal processing ------------------------------------------------------------------


class Vibration:
    sensor = "accel"

    def __init__(self, cfg, board, emit):
        # At most 37 attributes: one more and MicroPython grows the instance's table to
        # 47 slots (752 bytes), which a fragmented 64K heap may not have at boot.
        p = board["pins"]
        i2c = I2C(board.get("i2c_bus", 0), scl=Pin(p["scl"]), sda=Pin(p["sda"]), freq=400000)
        self.dev = ADXL345(i2c, board.get("accel_addr", ADDR))
        self.emit = emit
        self.buf = bytearray(6)
        self.errors = 0  # consecutive I2C errors
        self.i2c_errors = 0
        self.fault_id = None
        self.fault_t = 0
        self.retry_at = 0
        self.samples = 0
        self.overruns = 0  # samples lost to a full FIFO
        self.fifo_peak = 0  # deepest FIFO fill since last telemetry
        self.max_q = 0  # largest |a| since last telemetry, 1/512 g
        self.last_ratio16 = 0
        self.configure(cfg)

    def configure(self, cfg):
        """Settings at boot and after set_config; the chip is set up again (its output data
        rate is the sampling rate)."""
        c = self.c = cfg["vibration"]
        self.rate = c["rate_hz"]
        self.ring = bytearray(self.rate)  # last second of motion levels: 0, 1 gate, 2 crit
        self.cnt = array("H", (0, 0, 0))  # ring index, samples >= gate, >= critical_g
        self.dc = array("i", (0, 0, 0))  # DC (gravity) estimates per axis, Q8 counts
        self.pk = array("H", (0, 0, 0))  # per-axis peaks in this trigger, 1/512 g
        self.period = 1000000 // self.rate
        self.next = time.ticks_us()
        self.n_sta = max(1, int(c["sta_s"] * self.rate))
        self.n_lta = max(self.n_sta + 1, int(c["lta_s"] * self.rate))
        self.trig16 = int(c["trigger"] * 16)
        self.detrig16 = int(c["detrigger"] * 16)
        self.gate = int(c["peak_gate_g"] * _Q)
        self.crit = int(c["critical_g"] * _Q)
        self.sustain = max(1, int(c["sustain_s"] * self.rate))
        self.reset_filter()
        try:
            self.dev.init(self.rate, c["range_g"])
        except OSError:
            self.errors = 3
            self._fault(time.ticks_ms())
        self.exp = time.ticks_add(time.ticks_us(), self.period >> 1)  # next sample, about

    def reset_filter(self):
        self.sta = 0  # leaky sums: sta * n_sta, lta * n_lta
        self.lta = 0
        self.warm = 0  # samples since (re)start; no trigger before the LTA is seeded
        self.on = False  # STA/LTA triggered
        self.sev = 0  # event raised in this trigger: 0 none, 1 warning, 2 critical
        self.ev_n = 0
        self.ev_ratio16 = 0
        self.event_id = None
        r = self.ring
        i = 0
        while i < len(r):
            r[i] = 0
            i += 1
        i = 0
        while i < 3:
            self.cnt[i] = self.dc[i] = self.pk[i] = 0
            i += 1

    def due_us(self, now):
        return time.ticks_diff(self.next, now)

    def tick(self, now):
        """Every 4 sample periods (at most 100 ms): take every sample waiting in the FIFO
        (an eighth of its 32 entries between drains). A FIFO found full may
        have dropped samples: those the clock says were made and are not there are counted
        in `overruns` (to within one sample)."""
        if time.ticks_diff(now, self.next) < 0:
            return
        self.next = time.ticks_add(now, min(100000, 4 * self.period))
        if self.fault_id is not None:
            self._retry(time.ticks_ms())
            return
        try:
            n = self.dev.entries()
        except OSError:
            self._error()
            return
        t = time.ticks_us()
        d = time.ticks_diff(t, self.exp)
        k = d // self.period + 1 if d >= 0 else 0  # samples made since the last drain
        self.exp = time.ticks_add(self.exp, k * self.period)
        if n >= _FIFO_N and k > n:
            lost = k - n
            o = self.overruns
            self.overruns = o + lost if o <= _WRAP - lost else lost - (_WRAP - o) - 1
        if n > self.fifo_peak:
            self.fifo_peak = n
        i = 0
        while i < n:
            try:
                self.dev.read_into(self.buf)
            except OSError:
                self._error()
                return
            self.errors = 0
            self.sample(self.buf)
            i += 1

    def _error(self):
        e = self.i2c_errors
        self.i2c_errors = e + 1 if e < _WRAP else 0
        self.errors += 1
        if self.errors >= 3:
            self._fault(time.ticks_ms())

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
        s = self.samples
        self.samples = s + 1 if s < _WRAP else 0
        w = self.warm
        dc = self.dc
        if w == 0:
            dc[0] = x << 8
            dc[1] = y << 8
            dc[2] = z << 8
        # high-pass: subtract the slowly tracked DC level; result in 1/512 g
        dc[0] += ((x << 8) - dc[0]) >> _HP_SHIFT
        dc[1] += ((y << 8) - dc[1]) >> _HP_SHIFT
        dc[2] += ((z << 8) - dc[2]) >> _HP_SHIFT
        hx = ((x << 8) - dc[0]) >> 7
        hy = ((y << 8) - dc[1]) >> 7
        hz = ((z << 8) - dc[2]) >> 7
        ax = -hx if hx < 0 else hx
        ay = -hy if hy < 0 else hy
        az = -hz if hz < 0 else hz
        m = ax if ax > ay else ay
        if az > m:
            m = az
        if m > self.max_q:
            self.max_q = m
        # how much of the last second was strong motion (a ring of levels, running counts)
        lvl = 2 if m >= self.crit else 1 if m >= self.gate else 0
        r = self.ring
        cnt = self.cnt
        i = cnt[0]
        old = r[i]
        if old:
            cnt[1] -= 1
            if old == 2:
                cnt[2] -= 1
        if lvl:
            cnt[1] += 1
            if lvl == 2:
                cnt[2] += 1
        r[i] = lvl
        i += 1
        cnt[0] = 0 if i >= self.rate else i
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
        # The LTA keeps adapting, also while triggered, so steady machinery becomes the
        # background; it rises with lta_s and falls faster (n_fall), so it is back at the
        # quiet level soon after an event ends.
        lta = self.lta
        if self.sta // ns < lta // nl:  # falls 8 times faster than it rises
            lta -= (lta // nl - self.sta // ns) * 8
        lta += cf - lta // nl
        self.lta = lta
        # ratio in 1/16 units: sta16 * 16 / lta16, all terms < 2**30
        sta16 = (self.sta << 4) // ns
        lta16 = (lta // nl << 4) + ((lta % nl) << 4) // nl
        if lta16 < 16:
            lta16 = 16
        if not self.on:
            if sta16 << 4 > self.trig16 * lta16:
                self.on = True
                pk = self.pk
                pk[0] = pk[1] = pk[2] = 0
                self.ev_n = 0
                self.ev_ratio16 = 0
            else:
                return
        r16 = (sta16 << 4) // lta16
        self.last_ratio16 = r16
        if r16 > self.ev_ratio16:
            self.ev_ratio16 = r16
        self.ev_n += 1
        pk = self.pk
        if ax > pk[0]:
            pk[0] = ax
        if ay > pk[1]:
            pk[1] = ay
        if az > pk[2]:
            pk[2] = az
        # A transient (a door slam, a footstep) is too short to count; strong motion that
        # lasts sustain_s within a second does: critical above critical_g, else a warning.
        sev = self.sev
        if sev < 2 and self.cnt[2] >= self.sustain:
            if sev == 0:
                self.event_id = self.emit("vibration", "start", "critical", self._details())
            else:
                self.emit("vibration", "update", "critical", self._details(), self.event_id)
            self.sev = 2
        elif sev == 0 and self.cnt[1] >= self.sustain:
            self.event_id = self.emit("vibration", "start", "warning", self._details())
            self.sev = 1
        long = self.ev_n >= self.c["max_event_s"] * self.rate
        if r16 < self.detrig16 or long:
            if self.sev:
                self.emit("vibration", "end", "info", self._details(), self.event_id,
                          self.ev_n / self.rate)
            if long:  # re-baseline: what lasts this long is the new normal
                self.lta = (self.sta // ns) * nl
            self.on = False
            self.sev = 0
            self.event_id = None

    def _details(self):
        pk = self.pk
        p = pk[0]
        axis = 0
        if pk[1] > p:
            p = pk[1]
            axis = 1
        if pk[2] > p:
            p = pk[2]
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
        self.exp = time.ticks_add(time.ticks_us(), self.period >> 1)
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
        m["fifo_peak"] = self.fifo_peak
        m["vib_peak_g"] = round(self.max_q / _Q, 4)
        m["sta_lta"] = round(self.last_ratio16 / 16, 2)
        m["i2c_errors"] = self.i2c_errors
        self.max_q = 0
        self.fifo_peak = 0
