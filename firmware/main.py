"""Entry point on the board: arm the watchdog, count the boot, start the board service.

The watchdog comes first, before any import that could raise: a board whose code fails
resets and counts the failed boot instead of waiting at the REPL for ever. app.py starts
in safe mode after repeated failed boots and clears the count once a boot has held."""

import machine

# Covers a boot (config, outbox, compaction on a slow flash) and the longest DNS look-up
# (21 s, docs/firmware.md); app.run() sets the configured timeout once the loop runs.
wdt = machine.WDT(timeout=30000)


def count_boot():
    """Bump `bootfails` (boots not yet known good) unless waking from deep sleep, which is
    the end of a good boot, not a failed one. A torn or missing file reads as 0."""
    n = 0
    try:
        with open("bootfails") as f:
            n = int(f.read())
    except (OSError, ValueError):
        pass
    if machine.reset_cause() == machine.DEEPSLEEP_RESET:
        return n
    with open("bootfails.tmp", "w") as f:
        f.write(str(n + 1))
    import os

    os.rename("bootfails.tmp", "bootfails")
    return n + 1


fails = 0
try:
    fails = count_boot()
    del count_boot
    import app

    app.main(wdt, fails)
except Exception as e:  # Ctrl-C (KeyboardInterrupt) still reaches the REPL
    import sys

    sys.print_exception(e)
    try:  # safe mode reports it after the next boot
        with open("lasterror", "w") as f:
            f.write(repr(e)[:160])
    except OSError:
        pass
    machine.reset()
