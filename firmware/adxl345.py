"""ADXL345 accelerometer over I2C: set rate, range and full resolution; raw xyz reads.

read_into() allocates nothing; errors surface as OSError for the caller to count."""

from micropython import const

ADDR = const(0x53)
_DEVID = const(0x00)
_BW_RATE = const(0x2C)
_POWER_CTL = const(0x2D)
_DATA_FORMAT = const(0x31)
_DATAX0 = const(0x32)
COUNTS_PER_G = const(256)  # full resolution: 3.9 mg/LSB at every range
_RATES = ((400, 0x0C), (200, 0x0B), (100, 0x0A), (50, 0x09), (25, 0x08), (12, 0x07))


class ADXL345:
    def __init__(self, i2c, addr=ADDR):
        self.i2c = i2c
        self.addr = addr
        self.one = bytearray(1)

    def _w(self, reg, v):
        self.one[0] = v
        self.i2c.writeto_mem(self.addr, reg, self.one)

    def init(self, rate_hz=100, range_g=4):
        """Raises OSError if the chip does not answer or is not an ADXL345."""
        self.i2c.readfrom_mem_into(self.addr, _DEVID, self.one)
        if self.one[0] != 0xE5:
            raise OSError(19)
        code = 0x0A
        for hz, c in _RATES:  # output data rate at least twice our sampling rate
            if hz >= 2 * rate_hz:
                code = c
        self._w(_BW_RATE, code)
        rng = {2: 0, 4: 1, 8: 2, 16: 3}.get(range_g, 1)
        self._w(_DATA_FORMAT, 0x08 | rng)  # FULL_RES
        self._w(_POWER_CTL, 0x08)  # measure

    def read_into(self, buf):
        """Six bytes: X0 X1 Y0 Y1 Z0 Z1, little-endian two's complement."""
        self.i2c.readfrom_mem_into(self.addr, _DATAX0, buf)

    def devid(self):
        self.i2c.readfrom_mem_into(self.addr, _DEVID, self.one)
        return self.one[0]
