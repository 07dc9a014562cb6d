"""Entry point on the board: arm the watchdog, count the boot, start the board service.

The watchdog comes first, before any import that could raise: a board whose code fails
resets and counts the failed boot (guard.py) instead of sitting at the REPL for ever.
app.py starts in safe mode after repeated failed boots and clears the count once a boot
has held. Kept this small because its code stays on the heap while the board runs."""

import machine
import sys

# Covers a boot (config, outbox, compaction on a slow flash) and the longest DNS look-up
# (21 s, docs/firmware.md); app.run() sets the configured timeout once the loop runs.
wdt = machine.WDT(timeout=30000)
try:
    import guard

    fails = guard.count()
    del guard
    sys.modules.pop("guard")
    # The slot the modules come from (OTA), before any of them is imported: a new version
    # on trial starts its own count of failed boots.
    fails = __import__("slots").boot(fails)
    import app

    app.main(wdt, fails)
except Exception as e:  # Ctrl-C (KeyboardInterrupt) still reaches the REPL
    import guard

    guard.failed(e)
