"""Simulated `machine.ADC` of the ESP32 (ADC1, 11 dB): pin volts from the harness, read
through the chip model and ESP-IDF's calibration in _adccal (loaded with the first ADC).

Reads no lower than the calibration floor nor higher than its ceiling, like the chip;
allocates nothing per read beyond turning the harness's volts into millivolts."""

import _sim

_ctl = _sim.ctl


class ADC:
    """Value from the harness in volts at the pin; a pin listed in ctl "adc_power" sees
    0 V unless the firmware drives that power pin high (resistive probes). Models 11 dB
    only, whatever `atten` says."""

    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, pin, atten=3):
        import _adccal  # the calibration tables: on the heap only on boards with an ADC
        import machine  # loaded by now: the firmware imports ADC from it

        self._cal = _adccal
        self._key = str(getattr(pin, "id", pin))
        self._outputs = machine._outputs

    def atten(self, a):
        pass

    def read(self):
        """Raw 12-bit count, as the esp32 port's ADC.read() (adc1_get_raw)."""
        _ctl.poll()
        pw = _ctl.get("adc_power", self._key)
        v = 0.0
        if pw is None or self._outputs.get(pw, 0):
            v = _sim.signal_value(_ctl.get("adc", self._key), 0.0)
        return self._cal.pin_to_raw(int(v * 1000) if v > 0 else 0)

    def read_u16(self):
        # ports/esp32/machine_adc.c mp_machine_adc_read_u16(): raw << (16 - bits) |
        # raw >> (2 * bits - 16), bits = 12
        raw = self.read()
        return (raw << 4) | (raw >> 8)

    def read_uv(self):
        # ports/esp32/adc.c madcblock_read_uv_helper(): adc_cali_raw_to_voltage() in mV,
        # times 1000
        return self._cal.raw_to_mv(self.read()) * 1000
