"""Flood: debounced float switch, a level probe powered only while read, float, level and
rate-of-rise alarms, stuck/disagreeing/floating input faults, bounded battery wakes.

Never ends an alarm while either input says water; never leaves the probe powered."""

import sys
import time

import machine
from machine import ADC, Pin


def _sleep_code():
    """flood_sleep.py: loaded only after a deep-sleep wake and around a sleep (heap)."""
    import flood_sleep

    return flood_sleep


def _drop_sleep_code():
    sys.modules.pop("flood_sleep", None)


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
        self.raw = False
        self.wet = False  # debounced float state
        self.changed_at = now  # when raw last differed from the debounced state
        self.toggles = 0
        self.window_t = now
        self.level = 0.0
        self.rate = 0.0
        self.levels = []
        # Durations count whole seconds of their own (secs), not ticks: ESP32 ticks wrap at
        # 2**30 ms and an alarm may outlast the 2**29 ms a ticks_diff can measure.
        self.secs = 0
        self.clock_at = now
        self.event_id = None
        self.event_s = 0  # secs at the start (negative: it began before a deep sleep)
        self.source = None
        self.faults = {}  # kind -> [event_id, secs at the start, sensor]
        self.disagree_s = 0
        self.suspect = None
        self.stable_t = now
        self.sleep_pid = 0  # packet id of the `sleeping` status waiting for its PUBACK
        self.configure(cfg)
        if machine.reset_cause() == machine.DEEPSLEEP_RESET:
            _sleep_code().boot(self, now)  # an alarm or fault kept over the sleep goes on
            _drop_sleep_code()

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
        d = time.ticks_diff(now, self.clock_at)
        if d >= 1000:
            self.secs += d // 1000
            self.clock_at = time.ticks_add(self.clock_at, d // 1000 * 1000)
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
            self._disagree(now)
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
        # An input with no pull (an open wire without the board's external pull-up) chatters:
        # many edges per second. flood-v1's float has a 100k pull-up, so a cut wire there
        # reads steady dry instead, and the probe disagreeing names it (see _disagree).
        if self.toggles >= self.c["floating_toggles"]:
            self.stable_t = now
            self._fault_on(now, "floating", "float", None, None)
        elif time.ticks_diff(now, self.stable_t) > 5000:
            self._fault_off(now, "floating")
        self.toggles = 0
        self.window_t = now

    def _disagree(self, now):
        # The float says water while the probe reads dry, or the probe reads well above the
        # alarm level while the float says dry, for stuck_s: the input that says "no water"
        # is the suspect (a corroded probe and a cut or stuck float both read dry). The alarm
        # is never withdrawn for it: _flood holds while either input says water.
        c = self.c
        suspect = None
        if "floating" in self.faults:
            pass  # the float is already known bad; its frozen state proves nothing
        elif self.wet and self.level < 1.0:
            suspect = "probe"
        elif not self.wet and self.level > c["level_alarm_cm"] * 2:
            suspect = "float"
        f = self.faults.get("stuck")
        if f and f[2] != suspect:
            self._fault_off(now, "stuck")
        if suspect != self.suspect:
            self.suspect = suspect
            self.disagree_s = self.secs
        if suspect is None or "stuck" in self.faults:
            return
        if self.secs - self.disagree_s >= c["stuck_s"]:
            if suspect == "float":
                self._fault_on(now, "stuck", "float", 0,
                               "float reads dry while the probe reads water")
            else:
                self._fault_on(now, "stuck", "probe", round(self.level, 1),
                               "probe reads dry while the float says water")

    def _fault_on(self, now, kind, sensor, value, message):
        if kind in self.faults:
            return
        d = {"sensor": sensor, "fault": kind, "value": value}
        if message:
            d["message"] = message
        eid = self.emit("sensor_fault", "start", "warning", d)
        self.faults[kind] = [eid, self.secs, sensor]

    def _fault_off(self, now, kind):
        f = self.faults.pop(kind, None)
        if f:
            self.emit("sensor_fault", "end", "info", {"sensor": f[2], "fault": kind},
                      f[0], self.secs - f[1])

    def _flood(self, now):
        c = self.c
        src = None
        if self.wet:
            src = "float"
        elif c["probe"] and self.level >= c["level_alarm_cm"]:
            src = "probe"
        elif c["probe"] and self.rate >= c["rate_alarm_cm_min"] and self.level >= 2.0:
            src = "rate"
        if src and self.event_id is None:
            self.event_s = self.secs
            self.source = src
            self.event_id = self.emit("flood", "start", "critical", self._details(src))
        elif src is None and self.event_id is not None:
            # Both inputs agree it is dry (the float debounced, the probe below the level
            # with hysteresis and no longer rising).
            if self.level < c["level_alarm_cm"] - 2 and self.rate < c["rate_alarm_cm_min"] / 2:
                self.emit("flood", "end", "info", self._details(self.source), self.event_id,
                          self.secs - self.event_s)
                self.event_id = None

    def _details(self, src):
        probe = self.c["probe"]
        return {"source": src, "level_cm": round(self.level, 1) if probe else None,
                "rate_cm_min": round(self.rate, 2) if probe else None}

    # -- battery boards: bounded wakes and deep sleep ----------------------------------------

    def sleep_ms(self, board):
        """How long the next deep sleep lasts: alarm_sleep_s while a flood is active or an
        alarm still waits in the outbox (the network was down), else sleep_s."""
        c = self.c
        short = self.event_id is not None or board.outbox.alarms()
        return (c["alarm_sleep_s"] if short else c["sleep_s"]) * 1000

    def maybe_sleep(self, board, now):
        """Battery boards (deep_sleep): once the outbox is sent, announce a retained
        `sleeping` status with the next wake (QoS 1, wait for its PUBACK) and sleep. Awake
        time is bounded whether or not the network comes up: after awake_max_s the board
        sleeps with its messages kept in the outbox for the next wake. Only a float change
        still being debounced may hold it longer (at most the debounce time more)."""
        c = self.c
        if not c["deep_sleep"]:
            return
        up = board.uptime_ms()
        budget = c["awake_max_s"] * 1000
        if self.raw != self.wet and up < budget + max(c["float_on_ms"], c["float_off_ms"]):
            return  # confirm the float's change first, so the alarm starts or ends now
        cl = board.client
        online = board.online()
        acked = online and self.sleep_pid and cl.inflight_pid != self.sleep_pid
        if acked and not board.outbox.depth():
            _sleep_code().sleep(self, board, True)  # the broker holds our `sleeping` status
        if up >= budget:
            _sleep_code().sleep(self, board, False)
        if not online:
            self.sleep_pid = 0  # announced on a link that is gone: announce again
            return
        if board.outbox.depth():
            if acked:
                self.sleep_pid = 0  # something new to send first, then announce again
            return
        if not self.sleep_pid and cl.can_publish_qos1():
            self.sleep_pid = max(0, _sleep_code().announce(self, board))
            _drop_sleep_code()

    def self_test(self):
        v = self.read_probe_v() if self.c["probe"] else None
        ok = not self.faults
        return {"float_wet": self.raw, "probe_v": v, "faults": list(self.faults)}, ok

    def metrics(self, m):
        m["float_wet"] = 1 if self.wet else 0
        if self.c["probe"]:
            m["level_cm"] = round(self.level, 1)
            m["rate_cm_min"] = round(self.rate, 2)
