"""Simulated `esp32`: deep-sleep wake sources, recorded for the harness.

The harness restarts a sleeping board when its wake pin reaches the level or the timer ends."""

import _sim

WAKEUP_ALL_LOW = 0
WAKEUP_ANY_HIGH = 1


def wake_on_ext0(pin, level):
    _sim.write_file("wake_ext0", str(pin.id if hasattr(pin, "id") else pin) + " " + str(int(level)))


def wake_on_ext1(pins, level):
    pass


def raw_temperature():
    return 120


def mcu_temperature():
    return 49
