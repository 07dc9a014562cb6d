"""The ESP32's ADC1 at 11 dB for sim/upy/_adc.py: the raw count a pin voltage converts to, and
ESP-IDF's line-fitting calibration of a raw count back to millivolts (what read_uv returns).

Integer arithmetic only (the calibration's intermediates stay below 2**30; the noise LCG,
like machine._noise, relies on the unix port's 63-bit small ints): never allocates."""

from micropython import const

# ESP-IDF components/esp_adc/esp32/adc_cali_line_fitting.c (the scheme the esp32 port uses:
# ports/esp32/adc.c ensure_adc_calibration() -> adc_cali_create_scheme_line_fitting()),
# ADC1 at ADC_ATTEN_DB_11 (the only attenuation the boards use), characterised from Vref.
# VREF_OFFSET: the ideal Vref, which eFuse Vref is stored relative to (DEFAULT_VREF in
# ports/esp32/adc.c too); chips range 1000-1200 mV (ESP-IDF adc_calibration docs).
_VREF_MV = const(1100)
# characterize_using_vref(): coeff_a = vref * adc1_vref_atten_scale[3] (196602) /
# ADC_12_BIT_RES (4096); coeff_b = adc1_vref_atten_offset[3] (142 mV: the floor)
_COEFF_A = const(52799)  # 1100 * 196602 // 4096
_COEFF_B = const(142)
_LUT_LOW_THRESH = const(2880)  # LUT_LOW_THRESH: raw counts above which 11 dB is non-linear
_LUT_STEP = const(64)  # LUT_ADC_STEP_SIZE (LUT_HIGH_THRESH = LUT_LOW_THRESH + 64)
# lut_adc1_low / lut_adc1_high (for Vref LUT_VREF_LOW 1000 and LUT_VREF_HIGH 1200 mV): 20
# points from raw 2880 to 4096, step 64 (mV)
_LOW = (2240, 2297, 2352, 2405, 2457, 2512, 2564, 2616, 2664, 2709,
        2754, 2795, 2832, 2868, 2903, 2937, 2969, 3000, 3030, 3060)
_HIGH = (2667, 2706, 2745, 2780, 2813, 2844, 2873, 2901, 2928, 2956,
         2982, 3006, 3032, 3059, 3084, 3110, 3135, 3160, 3184, 3209)
_RAW_MAX = const(4095)  # 12-bit raw (the esp32 port's default width)

# ESP-IDF docs, ESP32 api-reference/peripherals/adc (v4.4): at ADC_ATTEN_DB_11 the
# measurable input range is 150 mV ~ 2450 mV; the ESP32 datasheet's "ADC calibration
# results" give +-60 mV total error in that range and nothing above it. Above 2450 mV
# the simulated chip reads low, by 0 mV at 2450 mV growing 60 mV per 685 mV (the span
# from 2450 mV to the ceiling at the ideal Vref): the datasheet's error bound carried past
# the range it is given for, so firmware sees readings there compress and cannot trust them.
_ACCURATE_MV = const(2450)
_TOP_ERROR_MV = const(60)
_TOP_SPAN_MV = const(685)
# Noise in raw counts, uniform in -3..3: within the ESP32 datasheet's ADC characteristics
# (DNL +-7 LSB, INL +-12 LSB at 12 bits with 100 nF at the pin).
_NOISE = const(3)
_seed = 0x1D872B41


def raw_to_mv(raw):
    """ESP-IDF cali_raw_to_voltage() at 11 dB (millivolts)."""
    # calculate_voltage_linear()
    lin = (_COEFF_A * raw + 32768) // 65536 + _COEFF_B  # LIN_COEFF_A_ROUND, LIN_COEFF_A_SCALE
    if raw < _LUT_LOW_THRESH:
        return lin
    # calculate_voltage_lut(): bilinear in (Vref, raw) between the two curves; the Vref
    # distances are both 100 mV at 1100, the divisor (1200 - 1000) * 64; raw 4095 sits in
    # the last step (i = 18)
    i = (raw - _LUT_LOW_THRESH) // _LUT_STEP
    y1 = raw - _LUT_LOW_THRESH - i * _LUT_STEP
    y2 = _LUT_STEP - y1
    x2 = 1200 - _VREF_MV
    x1 = _VREF_MV - 1000
    lut = ((_LOW[i] * x2 + _HIGH[i] * x1) * y2 + (_LOW[i + 1] * x2 + _HIGH[i + 1] * x1) * y1
           + 6400) // 12800
    if raw > _LUT_LOW_THRESH + _LUT_STEP:
        return lut
    # LUT_LOW_THRESH <= raw <= LUT_HIGH_THRESH: interpolate_two_points(linear, lut)
    x = raw - _LUT_LOW_THRESH
    return (lin * _LUT_STEP + (lut - lin) * x + _LUT_STEP // 2) // _LUT_STEP


def pin_to_raw(mv):
    """The raw count (with noise) the simulated chip converts `mv` millivolts at the pin to:
    the largest raw that calibrates to at most mv, after the top-end error above."""
    global _seed
    if mv > _ACCURATE_MV:
        mv -= (mv - _ACCURATE_MV) * _TOP_ERROR_MV // _TOP_SPAN_MV
    lo = 0
    hi = _RAW_MAX if mv >= _COEFF_B else 0
    while lo < hi:  # raw_to_mv never decreases with raw: 12 halvings
        mid = (lo + hi + 1) // 2
        if raw_to_mv(mid) <= mv:
            lo = mid
        else:
            hi = mid - 1
    # the integer LCG of machine._noise (its own state): allocation-free
    _seed = (_seed * 1103515245 + 12345) & 0x7FFFFFFF
    lo += (_seed >> 16) % (2 * _NOISE + 1) - _NOISE
    return 0 if lo < 0 else _RAW_MAX if lo > _RAW_MAX else lo
