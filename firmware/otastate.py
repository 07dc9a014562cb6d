"""What the running firmware knows of OTA, set by slots.py at boot: the version on trial,
the status message's `ota` field, and whether a transfer waits to go on.

Resident, so it holds three values and nothing else: trial.py runs the trial, otafetch.py
a transfer, each loaded only while needed. An OTA never replaces it."""

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations for mypy only; MicroPython never evaluates them
    from typing import Any

trial: Any = None  # while a new version is on trial: [slot, boots, trial_s, version, previous]
last: Any = None  # the status message's `ota` (a dict), or None
pending = False  # a transfer a reset interrupted waits to go on (slots.OFFER)
