"""Runs first on the ESP32 after every reset; keeps the boot path trivially safe.

Never does I/O that could fail and stop main.py from running."""

import gc

gc.collect()
