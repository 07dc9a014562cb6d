"""Structured key=value logging to stdout for journald.

Under systemd (JOURNAL_STREAM set: stdout is the journal) each line starts with its syslog
priority, `<4>` for a warning, which journald reads and strips (the unit's default
SyslogLevelPrefix=yes): `journalctl -u edge-agent -p warning` then shows what matters.
Never logs secrets: callers pass no passwords, and config dumps mask them."""

from __future__ import annotations

import logging
import os
import re
import sys
import time

PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
            logging.DEBUG: 7}
"""Python level -> syslog priority (sd-daemon.h: SD_CRIT 2 ... SD_DEBUG 7)."""


class KeyValueFormatter(logging.Formatter):
    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} " \
               f"logger={record.name} {message(record)}"
        if record.exc_info:
            line += " exc=" + quote(self.formatException(record.exc_info))
        if self.journal:
            prefix = f"<{PRIORITY.get(record.levelno, 6)}>"
            line = prefix + line.replace("\n", "\n" + prefix)
        return line


def quote(text: str) -> str:
    """A free-text value quoted so a `key=value` line stays one parseable line."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_BARE = re.compile(r'^[^\s"=\\]+$')
_QUOTED = re.compile(r'^"(?:[^"\\\n]|\\.)*"$')


def value(v: object) -> str:
    """One logfmt value: bare when it can be, else quoted; never a Python repr (a string
    logged with %r reads as the string, None as an empty value)."""
    if v is None:
        return '""'
    text = str(v)
    if _BARE.match(text) or _QUOTED.match(text):  # already quoted by the caller (quote())
        return text
    return quote(text)


def message(record: logging.LogRecord) -> str:
    """The record as logfmt pairs. Our call sites write `event=name key=%s ...`: each
    argument becomes one logfmt value. A message from a library (free text) becomes
    `msg="..."`."""
    msg = str(record.msg)
    if not msg.startswith("event="):
        return "msg=" + quote(record.getMessage())
    args = record.args
    if not args:
        return msg
    def one(a: object) -> object:  # numbers keep their format specs (%d, %.1f)
        return a if isinstance(a, int | float) and not isinstance(a, bool) else value(a)

    if isinstance(args, dict):
        args = {k: one(a) for k, a in args.items()}
    else:
        args = tuple(one(a) for a in args)
    try:
        return msg.replace("%r", "%s") % args
    except (TypeError, ValueError):
        return "msg=" + quote(record.getMessage())


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(KeyValueFormatter(journal=bool(os.environ.get("JOURNAL_STREAM"))))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
