"""The persisted per-node boot counter (Sparkplug's bdSeq), bumped once per start, and the
instance id of the state directory that holds it.

Written atomically (temp file, fsync, rename) so a power cut never resets them."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from edge_agent.atomic import write_atomic


def next_boot(state_dir: Path) -> int:
    """Read the last boot number, store and return the next one."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "boot"
    try:
        last = int(path.read_text().strip() or "0")
    except FileNotFoundError:
        last = 0
    except ValueError as exc:
        raise ValueError(f"{path}: boot counter is not a number ({exc})") from None
    boot = last + 1
    write_atomic(path, f"{boot}\n")
    return boot


INSTANCE = re.compile(r"^[0-9a-f]{8}$")


def instance(state_dir: Path) -> str:
    """The state directory's instance id: 8 random hex digits made the first time, then read
    back. A wiped state directory or a reinstall gets a new one (a clash has odds of one in
    four billion), so `{node}-{instance}-{boot}-{seq}` never repeats for a node id."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "instance"
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = secrets.token_hex(4)
        write_atomic(path, f"{value}\n")
        return value
    if not INSTANCE.match(value):
        raise ValueError(f"{path}: instance id {value!r} is not 8 hex digits")
    return value
