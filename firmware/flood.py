"""Flood: debounced float switch and an optional resistive level probe powered only while
reading; float, level and rate-of-rise alarms; stuck and floating inputs are faults.

Never leaves the probe powered between readings (electrolysis eats the electrodes)."""

import time
from machine import ADC, Pin


class Flood:
    sensor = "flood"

    def __init__(self, cfg, board, emit):
        p = board["pins"]
        self.float_pin = Pin(p["float"], Pin.IN, Pin.PULL_UP)
        self.probe_pwr = Pin(p["probe_power"], Pin.OUT, value=0)
        self.probe_adc = ADC(Pin(p["probe_adc"]), atten=ADC.ATTN_11DB)
        self.emit = emit
        now = time.ticks_ms()
        self.next = now
        self.next_probe = now
        self.raw = 0
        self.wet = False  # debounced float state
        self.changed_at = now  # when raw last differed from the debounced state
        self.toggles = 0
        self.window_t = now
        self.level = 0.0
        self.rate = 0.0
        self.levels = []
        self.event_id = None
        self.event_t = 0
        self.source = None
        self.faults = {}  # fault kind -> (event_id, start ms)
        self.disagree_t = None
        self.stable_t = now
        self.configure(cfg)

    def configure(self, cfg):
        self.c = cfg["flood"]
        n = max(2, self.c["rate_window_s"] * 1000 // self.c["probe_ms"] + 1)
        self.levels = self.levels[-n:]
        self.nlevels = n

    def due_ms(self, now):
        return time.ticks_diff(self.next, now)

    def tick(self, now):
        if time.ticks_diff(now, self.next) < 0:
            return
        c = self.c
        self.next = time.ticks_add(now, c["sample_ms"])
        v = self.float_pin.value()
        raw = (v == 0) if c["float_active_low"] else (v == 1)
        if raw != self.raw:
            self.toggles += 1
            self.raw = raw
        if raw == self.wet:
            self.changed_at = now
        else:
            hold = c["float_on_ms"] if raw else c["float_off_ms"]
            if time.ticks_diff(now, self.changed_at) >= hold and "floating" not in self.faults:
                self.wet = raw
        if time.ticks_diff(now, self.window_t) >= 1000:
            self._floating(now)
        if c["probe"] and time.ticks_diff(now, self.next_probe) >= 0:
            self.next_probe = time.ticks_add(now, c["probe_ms"])
            self._probe()
            self._stuck(now)
        self._flood(now)

    def read_probe_v(self):
        self.probe_pwr.value(1)
        time.sleep_us(200)  # let the electrodes settle
        v = self.probe_adc.read_uv() / 1000000
        self.probe_pwr.value(0)
        return v

    def _probe(self):
        c = self.c
        v = self.read_probe_v()
        lv = (v - c["probe_offset_v"]) * c["probe_cm_per_v"]
        self.level = lv if lv > 0 else 0.0
        self.levels.append(self.level)
        if len(self.levels) > self.nlevels:
            self.levels.pop(0)
        span_min = (len(self.levels) - 1) * c["probe_ms"] / 60000
        self.rate = (self.levels[-1] - self.levels[0]) / span_min if span_min > 0 else 0.0

    def _floating(self, now):
        # An unconnected input (broken wire, no pull-up) chatters: many edges per second.
        if self.toggles >= self.c["floating_toggles"]:
            self.stable_t = now
            self._fault_on(now, "floating", None)
        elif time.ticks_diff(now, self.stable_t) > 5000:
            self._fault_off(now, "floating")
        self.toggles = 0
        self.window_t = now

    def _stuck(self, now):
        # The float says wet while the probe sees no water (or the reverse, well above the
        # alarm level) for stuck_s: one of them is stuck; we blame the float switch.
        c = self.c
        dis = (self.wet and self.level < 1.0) or \
            (not self.wet and self.level > c["level_alarm_cm"] * 2)
        if not dis:
            self.disagree_t = None
            self._fault_off(now, "stuck")
        elif self.disagree_t is None:
            self.disagree_t = now
        elif time.ticks_diff(now, self.disagree_t) >= c["stuck_s"] * 1000:
            self._fault_on(now, "stuck", 1 if self.wet else 0)

    def _fault_on(self, now, kind, value):
        if kind in self.faults:
            return
        eid = self.emit("sensor_fault", "start", "warning",
                        {"sensor": "float", "fault": kind, "value": value})
        self.faults[kind] = (eid, now)

    def _fault_off(self, now, kind):
        f = self.faults.pop(kind, None)
        if f:
            self.emit("sensor_fault", "end", "info", {"sensor": "float", "fault": kind},
                      f[0], time.ticks_diff(now, f[1]) / 1000)

    def _flood(self, now):
        c = self.c
        src = None
        if self.wet and "stuck" not in self.faults:
            src = "float"
        elif c["probe"] and self.level >= c["level_alarm_cm"]:
            src = "probe"
        elif c["probe"] and self.rate >= c["rate_alarm_cm_min"] and self.level >= 2.0:
            src = "rate"
        if src and self.event_id is None:
            self.event_t = now
            self.source = src
            self.event_id = self.emit("flood", "start", "critical", self._details(src))
        elif src is None and self.event_id is not None:
            if self.level < c["level_alarm_cm"] - 2 and self.rate < c["rate_alarm_cm_min"] / 2:
                self.emit("flood", "end", "info", self._details(self.source), self.event_id,
                          time.ticks_diff(now, self.event_t) / 1000)
                self.event_id = None

    def _details(self, src):
        probe = self.c["probe"]
        return {"source": src, "level_cm": round(self.level, 1) if probe else None,
                "rate_cm_min": round(self.rate, 2) if probe else None}

    def maybe_sleep(self, board, now):
        """Battery boards: deep sleep once everything is sent and nothing is active; wake
        on the float switch (ext0) or the timer."""
        c = self.c
        if not c["deep_sleep"] or self.event_id is not None or self.faults or self.raw:
            return
        if board.outbox.depth() or not board.online() or \
                time.ticks_diff(now, board.t0) < 5000:
            return
        import esp32
        import machine

        esp32.wake_on_ext0(self.float_pin, not c["float_active_low"])
        board.client.disconnect()
        print("fw deepsleep", c["sleep_s"])
        machine.deepsleep(c["sleep_s"] * 1000)

    def self_test(self):
        v = self.read_probe_v() if self.c["probe"] else None
        ok = "floating" not in self.faults and "stuck" not in self.faults
        return {"float_wet": self.raw, "probe_v": v, "faults": list(self.faults)}, ok

    def metrics(self, m):
        m["float_wet"] = 1 if self.wet else 0
        if self.c["probe"]:
            m["level_cm"] = round(self.level, 1)
            m["rate_cm_min"] = round(self.rate, 2)
