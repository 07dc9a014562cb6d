"""Periodic telemetry: readings summary, heap, uptime, reset cause, version, RSSI, queue.

Loaded on demand and dropped after each report to keep the resident heap small."""

import gc
import json

def build(self):
    gc.collect()
    used = gc.mem_alloc()  # live heap (after a collection), for the heap budget
    m = self._base()
    m["kind"] = self.kind
    m["boot"] = self.boot
    m["uptime_s"] = m["uptime_ms"] // 1000
    free = gc.mem_free()
    try:  # raises on an ESP32 whenever the station is not associated, even just now
        rssi = self.wlan.status("rssi") if self.wifi_up else None
    except OSError:
        rssi = None
    met = {"free_heap_bytes": free, "heap_used_bytes": used, "min_free_heap_bytes": self.heap_min,
           "reset_cause": self.reset_cause, "fw_version": self.version,
           "rssi_dbm": rssi,
           "queue_depth": self.outbox.depth(),
           "queue_drops_telemetry": self.outbox.drops_telemetry,
           "queue_drops_alarm": self.outbox.drops_alarm,
           "mqtt_reconnects": self.mqtt_reconnects, "loop_errors": self.loop_errors, "wifi_reconnects": self.wifi_reconnects}
    self.sensor.metrics(met)
    m["metrics"] = met
    if self.online():
        m["broker"] = "%s:%d" % (self.client.host, self.client.port)
    else:
        m["historical"] = True
    return json.dumps(m).encode()

