"""MQ-series gas sensor on an ADC1 pin: warm-up, R0 calibration, Rs/R0 -> ppm curve,
alarm/high thresholds with hysteresis, slow clean-air drift tracking, open/short faults.

Never reports gas while warming up or while the sensor circuit is open or shorted."""

import time
from machine import ADC, Pin


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
        self.t0 = time.ticks_ms()
        self.next = self.t0
        self.state = WARMING
        self.event_id = None
        self.event_t = 0
        self.fault = None
        self.fault_id = None
        self.fault_t = 0
        self.bad = 0
        self.good = 0
        self.ppm = 0.0
        self.ratio = 0.0
        self.rs = 0.0
        self.pin_v = 0.0
        self.configure(cfg)
        self.r0_track = self.r0

    def configure(self, cfg):
        self.c = cfg["gas"]
        self.r0 = self.c["r0_ohm"]
        self.r0_track = self.r0

    def due_ms(self, now):
        return time.ticks_diff(self.next, now)

    def tick(self, now):
        if time.ticks_diff(now, self.next) < 0:
            return
        self.next = time.ticks_add(now, self.c["sample_ms"])
        self.sample(now)

    def _fault_kind(self, v):
        c = self.c
        if v < c["open_v"]:
            return "open"
        if v > c["short_v"]:
            return "short"
        return None

    def sample(self, now):
        c = self.c
        v = self.adc.read_uv() / 1000000
        self.pin_v = v
        kind = self._fault_kind(v)
        if kind:
            self.good = 0
            self.bad += 1
            if self.fault is None and self.bad >= c["fault_samples"]:
                self._end_gas(now)
                self.fault = kind
                self.fault_t = now
                self.state = FAULT
                self.fault_id = self.emit("sensor_fault", "start", "warning",
                                          {"sensor": "gas", "fault": kind, "value": v})
            return
        self.bad = 0
        if self.fault is not None:
            self.good += 1
            if self.good < c["fault_samples"]:
                return
            self.emit("sensor_fault", "end", "info",
                      {"sensor": "gas", "fault": self.fault, "value": v},
                      self.fault_id, time.ticks_diff(now, self.fault_t) / 1000)
            self.fault = None
            self.state = WARMING
        vs = v * self.divider
        self.rs = c["rl_ohm"] * (c["vcc_v"] - vs) / vs
        if self.rs < 1.0:
            self.rs = 1.0
        self.ratio = self.rs / self.r0_track
        self.ppm = c["curve_a"] * self.ratio ** c["curve_b"]
        if time.ticks_diff(now, self.t0) < c["warmup_s"] * 1000:
            self.state = WARMING
            return
        self._levels(now)
        if self.state == OK and self.ppm < c["alarm_ppm"] / 2:
            # Clean air: follow the slow baseline drift of the sensing element.
            a = c["drift_alpha"]
            self.r0_track += (self.rs / c["clean_air_ratio"] - self.r0_track) * a

    def _levels(self, now):
        c = self.c
        p = self.ppm
        h = c["hysteresis_ppm"]
        st = self.state
        if st in (WARMING, OK, FAULT):
            if p >= c["high_ppm"]:
                self._start(now, HIGH)
            elif p >= c["alarm_ppm"]:
                self._start(now, ALARM)
            else:
                self.state = OK
        elif st == ALARM:
            if p >= c["high_ppm"]:
                self.state = HIGH
                self._update(HIGH, c["high_ppm"])
            elif p < c["alarm_ppm"] - h:
                self._end_gas(now)
        elif st == HIGH:
            if p < c["alarm_ppm"] - h:
                self._end_gas(now)
            elif p < c["high_ppm"] - h:
                self.state = ALARM
                self._update(ALARM, c["alarm_ppm"])

    def _details(self, level, thr):
        return {"ppm": round(self.ppm, 1), "ratio": round(self.ratio, 3), "level": level,
                "threshold_ppm": thr}

    def _start(self, now, level):
        c = self.c
        self.state = level
        self.event_t = now
        thr = c["high_ppm"] if level == HIGH else c["alarm_ppm"]
        self.event_id = self.emit("gas", "start", "critical" if level == HIGH else "warning",
                                  self._details(level, thr))

    def _update(self, level, thr):
        self.emit("gas", "update", "critical" if level == HIGH else "warning",
                  self._details(level, thr), self.event_id)

    def _end_gas(self, now):
        if self.event_id is None:
            return
        self.emit("gas", "end", "info", self._details(ALARM, self.c["alarm_ppm"]),
                  self.event_id, time.ticks_diff(now, self.event_t) / 1000)
        self.event_id = None
        self.state = OK

    def calibrate(self):
        """Clean-air R0 from the mean of 16 readings; (r0, None) or (None, error)."""
        if self.fault:
            return None, "gas sensor fault: " + self.fault
        if self.state == WARMING:
            return None, "gas sensor still warming up"
        total = 0.0
        c = self.c
        for _ in range(16):
            vs = self.adc.read_uv() / 1000000 * self.divider
            if vs <= 0:
                return None, "gas sensor reads 0 V"
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
