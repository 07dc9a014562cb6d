"""Settings of the flood sensor: (type, min, max, default) per key and cross-key rules.

Loaded only while validating config (boot, set_config), then dropped to free the heap."""

SPEC = {
    "sample_ms": (int, 5, 1000, 20), "float_on_ms": (int, 0, 600000, 2000),
    "float_off_ms": (int, 0, 600000, 10000), "float_active_low": (bool, 0, 0, True),
    "probe": (bool, 0, 0, True), "probe_ms": (int, 100, 600000, 1000),
    "probe_cm_per_v": (float, 0.1, 1000.0, 20.0), "probe_offset_v": (float, 0.0, 3.3, 0.1),
    "level_alarm_cm": (float, 0.1, 1000.0, 10.0), "rate_alarm_cm_min": (float, 0.1, 1000.0, 5.0),
    "rate_window_s": (int, 5, 600, 30), "stuck_s": (int, 1, 86400, 60),
    "floating_toggles": (int, 3, 1000, 8), "deep_sleep": (bool, 0, 0, False),
    "sleep_s": (int, 10, 86400, 300),
}

def cross(s):
    return None
