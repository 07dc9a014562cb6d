"""Log lines as journald gets them: key=value, one line per record, and under systemd the
syslog priority first, so `journalctl -p warning` shows warnings and errors only."""

from __future__ import annotations

import logging

import pytest

from edge_agent import logs


def record(level: int, msg: str, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError('a "bad"\nvalue')
        except ValueError:
            import sys
            info = sys.exc_info()
    return logging.LogRecord("edge_agent.x", level, __file__, 1, msg, (), info)


def test_lines_carry_the_syslog_priority_under_systemd_only() -> None:
    journal = logs.KeyValueFormatter(journal=True)
    plain = logs.KeyValueFormatter()
    for level, prio in ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6),
                        (logging.DEBUG, 7)):
        line = journal.format(record(level, "event=x a=1"))
        assert line.startswith(f"<{prio}>ts=") and line.endswith("event=x a=1")
        assert plain.format(record(level, "event=x a=1")).startswith("ts=")


def test_a_traceback_stays_one_quoted_value_on_one_line() -> None:
    line = logs.KeyValueFormatter(journal=True).format(
        record(logging.ERROR, "event=failed", exc=True))
    assert "\n" not in line and line.startswith("<3>")
    exc = line.split(" exc=", 1)[1]
    assert exc.startswith('"Traceback') and exc.endswith('"')
    assert 'ValueError: a \\"bad\\"\\nvalue' in exc


@pytest.mark.parametrize(("env", "journal"), [({"JOURNAL_STREAM": "8:123"}, True), ({}, False)])
def test_setup_detects_the_journal(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                   journal: bool) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup("INFO")
        fmt = root.handlers[0].formatter
        assert isinstance(fmt, logs.KeyValueFormatter) and fmt.journal is journal
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


LOGFMT = r'(?:[A-Za-z_][\w.]*=(?:"(?:[^"\\]|\\.)*"|[^\s"=\\]*))'


@pytest.mark.parametrize(("msg", "args", "pairs"), [
    ("event=x reason=%r host=%s n=%d ok=%s", ("a b", "h", 3, True),
     {"event": "x", "reason": '"a b"', "host": "h", "n": "3", "ok": "True"}),
    ("event=y cause=%s", (logs.quote('x "y"'),), {"event": "y", "cause": '"x \\"y\\""'}),
    ("event=z v=%s path=%s", (None, "/tmp/a=b"), {"event": "z", "v": '""', "path": '"/tmp/a=b"'}),
    ("event=w v=%.2f", (1.234,), {"event": "w", "v": "1.23"}),
    ("a library's free text: %s", ("z = 1",), {"msg": '"a library\'s free text: z = 1"'}),
])
def test_every_line_is_logfmt_without_python_reprs(msg: str, args: tuple[object, ...],
                                                   pairs: dict[str, str]) -> None:
    import re

    line = logs.KeyValueFormatter().format(
        logging.LogRecord("edge_agent.x", logging.INFO, __file__, 1, msg, args, None))
    assert re.fullmatch(rf"{LOGFMT}(?: {LOGFMT})*", line), line
    got = dict(re.findall(r'([A-Za-z_][\w.]*)=("(?:[^"\\]|\\.)*"|[^\s"=\\]*)', line))
    assert {k: got[k] for k in pairs} == pairs
