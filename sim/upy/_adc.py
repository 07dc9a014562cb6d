"""Simulated ESP32 ADC1 for `machine.ADC`: pin volts from the harness turned into what the
esp32 port returns (12-bit raw counts, read_uv() through ESP-IDF's line-fitting calibration).

Reads no lower than the calibration floor nor higher than its ceiling, like the chip;
never allocates on the per-read path beyond the harness signal itself."""

import _sim

_ctl = _sim.ctl

# ESP-IDF components/esp_adc/esp32/adc_cali_line_fitting.c (the scheme the esp32 port uses:
# ports/esp32/adc.c ensure_adc_calibration() -> adc_cali_create_scheme_line_fitting()).
VREF_MV = 1100  # VREF_OFFSET: the ideal Vref that eFuse Vref is stored relative to (and
# DEFAULT_VREF in ports/esp32/adc.c)
LIN_COEFF_A_SCALE = 65536  # LIN_COEFF_A_SCALE
LIN_COEFF_A_ROUND = 32768  # LIN_COEFF_A_ROUND (LIN_COEFF_A_SCALE/2)
ADC_12_BIT_RES = 4096  # ADC_12_BIT_RES
ADC1_VREF_ATTEN_SCALE = (57431, 76236, 105481, 196602)  # adc1_vref_atten_scale[4]
ADC1_VREF_ATTEN_OFFSET = (75, 78, 107, 142)  # adc1_vref_atten_offset[4]: the floor in mV
LUT_VREF_LOW = 1000  # LUT_VREF_LOW
LUT_VREF_HIGH = 1200  # LUT_VREF_HIGH
LUT_ADC_STEP_SIZE = 64  # LUT_ADC_STEP_SIZE
LUT_LOW_THRESH = 2880  # LUT_LOW_THRESH: raw counts above which 11 dB is non-linear
LUT_HIGH_THRESH = LUT_LOW_THRESH + LUT_ADC_STEP_SIZE  # LUT_HIGH_THRESH
# lut_adc1_low / lut_adc1_high: 20 points from raw 2880 to 4096, step 64 (mV)
LUT_ADC1_LOW = (2240, 2297, 2352, 2405, 2457, 2512, 2564, 2616, 2664, 2709,
                2754, 2795, 2832, 2868, 2903, 2937, 2969, 3000, 3030, 3060)
LUT_ADC1_HIGH = (2667, 2706, 2745, 2780, 2813, 2844, 2873, 2901, 2928, 2956,
                 2982, 3006, 3032, 3059, 3084, 3110, 3135, 3160, 3184, 3209)
ATTN_11DB = 3  # ADC_ATTEN_DB_11 (esp32 port ADC.ATTN_11DB)
RAW_MAX = 4095  # 12-bit raw (esp32 port default width, SOC_ADC_RTC_MAX_BITWIDTH 12)

# ESP-IDF docs, ESP32 api-reference/peripherals/adc (v4.4): at ADC_ATTEN_DB_11 the
# measurable input range is 150 mV ~ 2450 mV; the ESP32 datasheet's "ADC calibration
# results" give +-60 mV total error in that range and nothing above it. Above 2450 mV
# the simulated chip reads low, by 0 mV at 2450 mV growing 60 mV per 685 mV (the span
# from 2450 mV to the 11 dB ceiling at VREF_MV): the datasheet's error bound carried past
# the range it is given for, so firmware sees readings there compress and cannot trust them.
ACCURATE_MV = 2450
TOP_ERROR_MV = 60
TOP_SPAN_MV = 685
# Noise in raw counts, uniform in -NOISE..NOISE: within the ESP32 datasheet's ADC
# characteristics (DNL +-7 LSB, INL +-12 LSB at 12 bits, 100 nF at the pin).
NOISE = 3
_rng = [2463534242 & 0x7FFFFFFF]


def _noise():
    # The same integer LCG as machine._noise (its own state): allocation-free.
    r = (_rng[0] * 1103515245 + 12345) & 0x7FFFFFFF
    _rng[0] = r
    return (r >> 16) % (2 * NOISE + 1) - NOISE


def _coeff_a(atten):
    # characterize_using_vref(): coeff_a = (vref * atten_scale) / ADC_12_BIT_RES
    return VREF_MV * ADC1_VREF_ATTEN_SCALE[atten] // ADC_12_BIT_RES


def _linear(raw, atten):
    # calculate_voltage_linear()
    return ((_coeff_a(atten) * raw + LIN_COEFF_A_ROUND) // LIN_COEFF_A_SCALE
            + ADC1_VREF_ATTEN_OFFSET[atten])


def _lut(raw):
    # calculate_voltage_lut(): bilinear in (Vref, raw) between the low and high curves;
    # raw 4095 sits in the last step (i = 18)
    i = (raw - LUT_LOW_THRESH) // LUT_ADC_STEP_SIZE
    x2 = LUT_VREF_HIGH - VREF_MV
    x1 = VREF_MV - LUT_VREF_LOW
    y2 = (i + 1) * LUT_ADC_STEP_SIZE + LUT_LOW_THRESH - raw
    y1 = raw - (i * LUT_ADC_STEP_SIZE + LUT_LOW_THRESH)
    v = (LUT_ADC1_LOW[i] * x2 * y2 + LUT_ADC1_HIGH[i] * x1 * y2
         + LUT_ADC1_LOW[i + 1] * x2 * y1 + LUT_ADC1_HIGH[i + 1] * x1 * y1)
    d = (LUT_VREF_HIGH - LUT_VREF_LOW) * LUT_ADC_STEP_SIZE
    return (v + d // 2) // d


def raw_to_mv(raw, atten=ATTN_11DB):
    """ESP-IDF cali_raw_to_voltage() for ADC1 characterised from Vref (millivolts)."""
    if raw > RAW_MAX:
        raw = RAW_MAX
    if atten != ATTN_11DB or raw < LUT_LOW_THRESH:
        return _linear(raw, atten)
    lut = _lut(raw)
    if raw > LUT_HIGH_THRESH:
        return lut
    # interpolate_two_points() between the linear and the LUT voltage
    lin = _linear(raw, atten)
    x = raw - LUT_LOW_THRESH
    return (lin * LUT_ADC_STEP_SIZE + lut * x - lin * x + LUT_ADC_STEP_SIZE // 2) \
        // LUT_ADC_STEP_SIZE


def mv_to_raw(mv, atten=ATTN_11DB):
    """The raw count of a chip whose calibration is right: the largest raw that calibrates
    to at most mv (0 below the floor, RAW_MAX at and above the ceiling)."""
    if mv < ADC1_VREF_ATTEN_OFFSET[atten]:
        return 0
    lo = 0
    hi = RAW_MAX
    while lo < hi:  # raw_to_mv is non-decreasing in raw: 12 halvings
        mid = (lo + hi + 1) // 2
        if raw_to_mv(mid, atten) <= mv:
            lo = mid
        else:
            hi = mid - 1
    return lo


def pin_to_raw(mv, atten=ATTN_11DB):
    """Raw count the simulated chip converts `mv` at the pin to, before noise."""
    if atten == ATTN_11DB and mv > ACCURATE_MV:
        mv -= (mv - ACCURATE_MV) * TOP_ERROR_MV // TOP_SPAN_MV
    return mv_to_raw(mv, atten)


class ADC:
    """Value from the harness in volts at the pin; a pin listed in ctl "adc_power" sees
    0 V unless the firmware drives that power pin high (resistive probes)."""

    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = ATTN_11DB
    WIDTH_12BIT = 3

    def __init__(self, pin, atten=ATTN_11DB):
        import machine  # loaded by now: the firmware imports ADC from it

        self.id = getattr(pin, "id", pin)
        self._key = str(self.id)
        self._atten = atten
        self._outputs = machine._outputs

    def atten(self, a):
        self._atten = a

    def read(self):
        """Raw 12-bit count, as the esp32 port's ADC.read() (adc1_get_raw)."""
        _ctl.poll()
        pw = _ctl.get("adc_power", self._key)
        if pw is not None and not self._outputs.get(pw, 0):
            mv = 0
        else:
            v = _sim.signal_value(_ctl.get("adc", self._key), 0.0)
            mv = int(v * 1000) if v > 0 else 0
        raw = pin_to_raw(mv, self._atten) + _noise()
        if raw < 0:
            return 0
        return raw if raw < RAW_MAX else RAW_MAX

    def read_u16(self):
        # ports/esp32/machine_adc.c mp_machine_adc_read_u16(): raw << (16 - bits) |
        # raw >> (2 * bits - 16), bits = 12
        raw = self.read()
        return (raw << 4) | (raw >> 8)

    def read_uv(self):
        # ports/esp32/adc.c madcblock_read_uv_helper(): adc_cali_raw_to_voltage() in mV,
        # times 1000
        return raw_to_mv(self.read(), self._atten) * 1000
