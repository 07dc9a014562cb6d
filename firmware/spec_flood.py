"""Settings of the flood sensor: one "key type min max default" table and cross-key rules.

Loaded only while validating config (boot, set_config), then dropped to free the heap."""

SPEC = (
    "sample_ms i 5 1000 20;float_on_ms i 0 600000 2000;float_off_ms i 0 600000 10000;"
    "float_active_low b 0 0 1;probe b 0 0 1;probe_ms i 100 600000 1000;"
    "probe_cm_per_v f 0.1 1000.0 20.0;probe_offset_v f 0.0 3.3 0.1;"
    "level_alarm_cm f 0.1 1000.0 10.0;rate_alarm_cm_min f 0.1 1000.0 5.0;"
    "rate_window_s i 5 600 30;stuck_s i 1 86400 60;floating_toggles i 3 1000 8;"
    "deep_sleep b 0 0 0;sleep_s i 10 86400 300;alarm_sleep_s i 10 86400 60;"
    "awake_max_s i 1 120 6"
)

def cross(s):
    if s["alarm_sleep_s"] > s["sleep_s"]:
        return "alarm_sleep_s: must be at most sleep_s (a flood wakes the board more often)"
    return None
