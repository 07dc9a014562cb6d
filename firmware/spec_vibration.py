"""Settings of the vibration sensor: one "key type min max default" table and cross-key rules.

Loaded only while validating config (boot, set_config), then dropped to free the heap."""

SPEC = (
    "rate_hz i 10 400 100;range_g i 2 16 4;sta_s f 0.1 10.0 1.0;"
    "lta_s f 1.0 300.0 30.0;trigger f 1.1 50.0 4.0;detrigger f 1.0 50.0 1.5;"
    "peak_gate_g f 0.001 8.0 0.03;max_event_s i 1 3600 120"
)


def cross(s):
    if s["detrigger"] >= s["trigger"]:
        return "detrigger: must be below trigger"
    if s["lta_s"] <= s["sta_s"]:
        return "lta_s: must be longer than sta_s"
    if s["lta_s"] * s["rate_hz"] > 32768:
        return "lta_s: at most 32768 samples (lta_s * rate_hz)"
    return None
