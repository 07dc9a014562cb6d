"""Settings of the gas sensor: one "key type min max default" table and cross-key rules.

Loaded only while validating config (boot, set_config), then dropped to free the heap."""

# MQ-2 datasheet curve for LPG: ppm = curve_a * (Rs/R0) ** curve_b; clean air Rs/R0 = 9.83.
# warmup_s after power-on or deep sleep (cold heater), warmup_hot_s after a watchdog, hard or
# soft reset (the heater stayed on). Drift: R0 follows clean air by drift_alpha per sample,
# at most 1 % of R0 per hour and 10 % in all, only while the reading is below a twentieth of
# alarm_ppm (gas.py). open_v/short_v are pin volts: the ESP32 reads
# 0.142 V for an open sensor and its ceiling (3.06-3.21 V by chip) for a short; clean air
# reads about 0.31 V (Rs = 9.83 R0 on a 10k load, 5 V, divider 1.5). Limits the ADC cannot
# reach (stored by older firmware) are moved inside 0.16-3.0 V by gas.py.
SPEC = (
    "warmup_s i 0 86400 60;warmup_hot_s i 0 86400 5;sample_ms i 100 60000 1000;"
    "vcc_v f 1.0 12.0 5.0;"
    "rl_ohm f 100.0 1e6 10000.0;curve_a f 0.001 1e7 574.25;"
    "curve_b f -10.0 10.0 -2.222;clean_air_ratio f 0.1 100.0 9.83;"
    "r0_ohm f 1.0 1e7 10000.0;alarm_ppm f 1.0 1e5 1000.0;high_ppm f 1.0 1e5 5000.0;"
    "hysteresis_ppm f 0.0 1e4 200.0;drift_alpha f 0.0 0.1 0.0005;"
    "open_v f 0.0 1.0 0.18;short_v f 2.0 3.3 3.0;fault_samples i 1 100 3"
)


def cross(s):
    if s["high_ppm"] <= s["alarm_ppm"]:
        return "high_ppm: must be above alarm_ppm"
    if s["hysteresis_ppm"] >= s["alarm_ppm"]:
        return "hysteresis_ppm: must be below alarm_ppm"
    return None
