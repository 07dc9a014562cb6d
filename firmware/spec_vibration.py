"""Settings of the vibration sensor: one "key type min max default" table and cross-key rules.

Loaded only while validating config (boot, set_config), then dropped to free the heap."""

# rate_hz is the ADXL345's output data rate, read through its 32-entry FIFO: at 50 Hz the
# FIFO spans 640 ms, longer than the flash's worst sector erase (400 ms); at 100 Hz only
# 320 ms. critical_g and sustain_s: strong motion sustained this long (within 1 s) makes an
# event critical; peak_gate_g sustained as long makes a warning event.
SPEC = (
    "rate_hz i 25 400 50;range_g i 2 16 4;sta_s f 0.1 10.0 1.0;"
    "lta_s f 1.0 300.0 30.0;trigger f 1.1 50.0 4.0;detrigger f 1.0 50.0 1.5;"
    "peak_gate_g f 0.001 8.0 0.03;critical_g f 0.01 8.0 0.08;sustain_s f 0.02 1.0 0.15;"
    "max_event_s i 1 3600 120"
)


def cross(s):
    if s["rate_hz"] not in (25, 50, 100, 200, 400):
        return "rate_hz: one of 25, 50, 100, 200, 400 (the ADXL345's output data rates)"
    if s["detrigger"] >= s["trigger"]:
        return "detrigger: must be below trigger"
    if s["lta_s"] <= s["sta_s"]:
        return "lta_s: must be longer than sta_s"
    if s["lta_s"] * s["rate_hz"] > 32768:
        return "lta_s: at most 32768 samples (lta_s * rate_hz)"
    if s["critical_g"] < s["peak_gate_g"]:
        return "critical_g: must be at least peak_gate_g"
    return None
