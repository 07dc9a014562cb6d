"""The Makefile as a new user meets it: `make help` says what to run and where the tools
are, and the demo asks for no package only the tests need."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make(*args: str) -> str:
    r = subprocess.run(["make", "-C", str(ROOT), *args], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_help_names_the_targets_and_where_the_tools_are() -> None:
    out = make("--no-print-directory", "help")
    for target in ("make demo", "make test", "make bench"):
        assert target in out
    assert ".venv/bin/edge-agent" in out and ".venv/bin/edge-sim" in out


def test_the_demo_needs_the_broker_not_the_test_tools() -> None:
    demo = make("-n", "--no-print-directory", "deps")
    assert "mosquitto" in demo and "shellcheck" not in demo and "systemd" not in demo
    test = make("-n", "--no-print-directory", "deps-test")
    assert "shellcheck" in test and "systemd-analyze" in test
