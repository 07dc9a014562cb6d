"""MQ-series gas sensor on an ADC1 pin: warm-up by reset cause, R0 calibration, Rs/R0 -> ppm
curve, alarm/high thresholds with hysteresis, bounded clean-air drift tracking, open/short faults.

Never reports gas while warming up or from a reading the open/short limits reject; a fault
never ends a gas alarm."""

import time
from machine import ADC, Pin, reset_cause

# machine.reset_cause() on the esp32 port (ports/esp32/modmachine.c): a watchdog, panic or
# machine.reset() (HARD_RESET 2, WDT_RESET 3) or a soft reset (5) leaves the 5 V heater
# powered; power-on (1, brownout included) and deep-sleep wake (4) start it cold.
HOT_RESETS = (2, 3, 5)
# What the ESP32 ADC can read at 11 dB through ESP-IDF's calibration: nothing below 0.142 V
# (an open sensor reads that) and nothing above 3.06-3.21 V depending on the chip's Vref (a
# short reads that). Fault limits outside are moved inside, or they could never trigger.
OPEN_MIN_V = 0.16
SHORT_MAX_V = 3.0

WARMING = "warming_up"
OK = "ok"
ALARM = "alarm"
HIGH = "high"
FAULT = "fault"


class Gas:
    sensor = "gas"

    def __init__(self, cfg, board, emit):
        self.adc = ADC(Pin(board["pins"]["gas_adc"]), atten=ADC.ATTN_11DB)
        self.divider = board.get("gas_divider", 1.0)  # sensor volts per pin volt
        self.emit = emit
        self.hot = reset_cause() in HOT_RESETS
        self.last = self.next = time.ticks_ms()
        self.warm = False  # latched once warm-up is over: never measured against boot again
        # Seconds and milliseconds of this sensor's uptime, then of the gas event's start and
        # of the fault's start: small ints for decades, advanced by the ticks between
        # samples, so durations never wrap.
        self.clk = [0, 0, 0, 0, 0, 0]
        self.level = OK
        self.event_id = None
        self.fault = None
        self.fault_id = None
        self.streak = 0  # readings in a row that disagree with the fault state
        self.ppm = 0.0
        self.ratio = 0.0
        self.pin_v = 0.0
        self.configure(cfg)

    def configure(self, cfg):
        self.c = cfg["gas"]
        self.r0 = self.r0_track = self.c["r0_ohm"]

    @property
    def state(self):
        if self.fault is not None:
            return FAULT
        return self.level if self.warm else WARMING

    def due_ms(self, now):
        return time.ticks_diff(self.next, now)

    def tick(self, now):
        if time.ticks_diff(now, self.next) < 0:
            return
        self.next = time.ticks_add(now, self.c["sample_ms"])
        self.sample(now)

    def _fault_kind(self, v):
        c = self.c
        if v < (c["open_v"] if c["open_v"] > OPEN_MIN_V else OPEN_MIN_V):
            return "open"
        if v >= (c["short_v"] if c["short_v"] < SHORT_MAX_V else SHORT_MAX_V):
            return "short"
        return None

    def _mark(self, i):
        k = self.clk
        k[i] = k[0]
        k[i + 1] = k[1]

    def _since(self, i):
        k = self.clk
        return (k[0] - k[i]) + (k[1] - k[i + 1]) / 1000

    def sample(self, now):
        c = self.c
        k = self.clk
        ms = k[1] + time.ticks_diff(now, self.last)
        self.last = now
        k[0] += ms // 1000
        k[1] = ms % 1000
        if not self.warm and k[0] >= (c["warmup_hot_s"] if self.hot else c["warmup_s"]):
            self.warm = True
        v = self.adc.read_uv() / 1000000
        self.pin_v = v
        kind = self._fault_kind(v)
        n = c["fault_samples"]
        if (kind is None) == (self.fault is None):
            self.streak = 0
        elif self.streak < n:
            self.streak += 1
        if kind:
            # Never used as gas: a short reads the ADC's ceiling, far above any alarm.
            if self.fault is None and self.streak >= n:
                self.fault = kind
                self.streak = 0
                self._mark(4)
                self.fault_id = self.emit("sensor_fault", "start", "warning",
                                          {"sensor": "gas", "fault": kind, "value": v})
            return
        if self.fault is not None:
            if self.streak < n:
                return
            self.emit("sensor_fault", "end", "info",
                      {"sensor": "gas", "fault": self.fault, "value": v},
                      self.fault_id, self._since(4))
            self.fault = None
            self.streak = 0
        vs = v * self.divider
        rs = c["rl_ohm"] * (c["vcc_v"] - vs) / vs
        if rs < 1.0:
            rs = 1.0
        self.ratio = rs / self.r0_track
        self.ppm = c["curve_a"] * self.ratio ** c["curve_b"]
        if not self.warm:
            return
        self._levels()
        if self.level == OK and self.ppm < c["alarm_ppm"] * c["drift_freeze"]:
            self._drift(rs)

    def _drift(self, rs):
        # Clean air: follow the slow baseline drift of the sensing element, at most
        # drift_max_pct_h of R0 per hour and drift_max_pct in all, so a leak that rises
        # slowly under the freeze level cannot be learned as clean air.
        c = self.c
        r0 = self.r0
        d = (rs / c["clean_air_ratio"] - self.r0_track) * c["drift_alpha"]
        s = r0 * c["drift_max_pct_h"] * c["sample_ms"] / 360000000
        r = self.r0_track + (s if d > s else -s if d < -s else d)
        cap = r0 * c["drift_max_pct"] / 100
        self.r0_track = r0 - cap if r < r0 - cap else r0 + cap if r > r0 + cap else r

    def _levels(self):
        c = self.c
        p = self.ppm
        h = c["hysteresis_ppm"]
        lv = self.level
        if lv == OK:
            if p >= c["high_ppm"]:
                self._start(HIGH)
            elif p >= c["alarm_ppm"]:
                self._start(ALARM)
        elif lv == ALARM:
            if p >= c["high_ppm"]:
                self.level = HIGH
                self._update(HIGH, c["high_ppm"])
            elif p < c["alarm_ppm"] - h:
                self._end_gas()
        elif p < c["alarm_ppm"] - h:
            self._end_gas()
        elif p < c["high_ppm"] - h:
            self.level = ALARM
            self._update(ALARM, c["alarm_ppm"])

    def _details(self, level, thr):
        return {"ppm": round(self.ppm, 1), "ratio": round(self.ratio, 3), "level": level,
                "threshold_ppm": thr}

    def _start(self, level):
        c = self.c
        self.level = level
        self._mark(2)
        thr = c["high_ppm"] if level == HIGH else c["alarm_ppm"]
        self.event_id = self.emit("gas", "start", "critical" if level == HIGH else "warning",
                                  self._details(level, thr))

    def _update(self, level, thr):
        self.emit("gas", "update", "critical" if level == HIGH else "warning",
                  self._details(level, thr), self.event_id)

    def _end_gas(self):
        self.level = OK
        if self.event_id is None:
            return
        self.emit("gas", "end", "info", self._details(ALARM, self.c["alarm_ppm"]),
                  self.event_id, self._since(2))
        self.event_id = None

    def calibrate(self):
        """Clean-air R0 from the mean of 16 readings; (r0, None) or (None, error)."""
        if self.fault:
            return None, "gas sensor fault: " + self.fault
        if not self.warm:
            return None, "gas sensor still warming up"
        if self.level != OK:
            return None, "gas alarm active (" + self.level + "): calibrate only in clean air"
        total = 0.0
        c = self.c
        for _ in range(16):
            v = self.adc.read_uv() / 1000000
            kind = self._fault_kind(v)
            if kind:
                return None, "gas sensor reads %.3f V (%s)" % (v, kind)
            vs = v * self.divider
            total += c["rl_ohm"] * (c["vcc_v"] - vs) / vs
        r0 = total / 16 / c["clean_air_ratio"]
        self.r0 = self.r0_track = r0
        return r0, None

    def self_test(self):
        v = self.adc.read_uv() / 1000000
        kind = self._fault_kind(v)
        return {"gas_adc_v": round(v, 3), "gas_circuit": kind or "ok"}, kind is None

    def metrics(self, m):
        m["gas_state"] = self.state
        m["gas_ppm"] = round(self.ppm, 1)
        m["gas_ratio"] = round(self.ratio, 3)
        m["gas_adc_v"] = round(self.pin_v, 3)
        m["gas_r0_ohm"] = round(self.r0_track, 1)
        m["gas_r0_drift_pct"] = round((self.r0_track - self.r0) * 100 / self.r0, 2)
