"""MQ-series gas sensor on an ADC1 pin: warm-up by reset cause, R0 calibration, Rs/R0 -> ppm
curve, alarm/high thresholds with hysteresis, bounded clean-air drift tracking, open/short faults.

Never reports gas while warming up or from a reading the open/short limits reject; a fault
never ends a gas alarm."""

import time
from machine import ADC, Pin, reset_cause

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
        # machine.reset_cause() on the esp32 port (ports/esp32/modmachine.c): after a
        # watchdog, panic or machine.reset() (HARD_RESET 2, WDT_RESET 3) or a soft reset (5)
        # the 5 V heater is still hot; power-on (1, brownout too) and deep-sleep wake (4)
        # start it cold.
        self.hot = reset_cause() in (2, 3, 5)
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

    def due_ms(self, now):
        return time.ticks_diff(self.next, now)

    def tick(self, now):
        if time.ticks_diff(now, self.next) < 0:
            return
        self.next = time.ticks_add(now, self.c["sample_ms"])
        self.sample(now)

    def _fault_kind(self, v):
        # The ESP32 ADC reads nothing below 0.142 V (an open sensor reads that) nor above
        # 3.06-3.21 V by chip (a short reads that): limits outside (from older firmware's
        # config) are moved inside to 0.16 V and 3.0 V, or they could never trigger.
        c = self.c
        if v < c["open_v"] or v < 0.16:
            return "open"
        if v >= c["short_v"] or v >= 3.0:
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
        if self._faulty(v):
            return
        vs = v * self.divider
        rs = c["rl_ohm"] * (c["vcc_v"] - vs) / vs
        if rs < 1.0:
            rs = 1.0
        self.ratio = rs / self.r0_track
        self.ppm = c["curve_a"] * self.ratio ** c["curve_b"]
        if not self.warm:
            return
        self._levels()
        # Frozen from a twentieth of alarm_ppm up: clean air reads 4 ppm on the MQ-2 curve.
        if self.level == OK and self.ppm * 20 < c["alarm_ppm"]:
            self._drift(rs)

    def _faulty(self, v):
        # True while the reading must not be used as gas: outside the open/short limits (a
        # short reads the ADC's ceiling, far above any alarm), or a fault not yet cleared by
        # fault_samples good readings in a row.
        kind = self._fault_kind(v)
        n = self.c["fault_samples"]
        if (kind is None) == (self.fault is None):
            self.streak = 0
        elif self.streak < n:
            self.streak += 1
        if kind:
            if self.fault is None and self.streak >= n:
                self.fault = kind
                self.streak = 0
                self._mark(4)
                self.fault_id = self.emit("sensor_fault", "start", "warning",
                                          {"sensor": "gas", "fault": kind, "value": v})
            return True
        if self.fault is None:
            return False
        if self.streak < n:
            return True
        self.emit("sensor_fault", "end", "info", {"sensor": "gas", "fault": self.fault,
                                                  "value": v}, self.fault_id, self._since(4))
        self.fault = None
        self.streak = 0
        return False

    def _drift(self, rs):
        # Clean air: follow the slow baseline drift of the sensing element, at most 1 % of
        # the calibrated R0 per hour and 10 % in all, so a leak that rises slowly under the
        # freeze level cannot be learned as clean air (it would read up to 21 % low).
        c = self.c
        r0 = self.r0
        d = (rs / c["clean_air_ratio"] - self.r0_track) * c["drift_alpha"]
        s = r0 * c["sample_ms"] / 360000000
        r = self.r0_track + (s if d > s else -s if d < -s else d)
        s = r0 / 10
        self.r0_track = r0 - s if r < r0 - s else r0 + s if r > r0 + s else r

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
                return None, "gas sensor fault: " + kind
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
        m["gas_state"] = FAULT if self.fault else self.level if self.warm else WARMING
        m["gas_ppm"] = round(self.ppm, 1)
        m["gas_ratio"] = round(self.ratio, 3)
        m["gas_adc_v"] = round(self.pin_v, 3)
        m["gas_r0_ohm"] = round(self.r0_track, 1)
        m["gas_r0_drift_pct"] = round((self.r0_track - self.r0) * 100 / self.r0, 2)
