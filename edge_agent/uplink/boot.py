"""The persisted per-node boot counter (Sparkplug's bdSeq): bumped once per start.

Written atomically (temp file, fsync, rename) so a power cut never resets it."""

from __future__ import annotations

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
