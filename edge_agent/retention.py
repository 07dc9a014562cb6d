"""Deletes what the node keeps that may show a person once it is older than the camera's
retention period (`privacy.retention`): reference snapshots on disk and snapshot payloads
still waiting in the spool. Events (no pixels) are not touched here; the spool's own bounds
keep them."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from edge_agent.uplink.spool import Spool

log = logging.getLogger(__name__)

EVERY_S = 600.0
"""How often a running node purges (and once at start)."""


def purge(snapshots: Path, spool: Spool, retention_s: float,
          now: float | None = None) -> int:
    """Delete and count. A file's age is taken from its modification time by the wall
    clock; one dated in the future (a clock set back) is kept until it is old by it."""
    now = time.time() if now is None else now
    gone = 0
    for path in snapshots.glob("*.jpg") if snapshots.is_dir() else []:
        try:
            if now - path.stat().st_mtime > retention_s:
                path.unlink()
                gone += 1
        except OSError as exc:  # another purge, or a failing card: try again next time
            log.warning("event=purge_failed path=%s reason=%r", path, exc.strerror or str(exc))
    gone += spool.purge("snapshot", retention_s)
    if gone:
        log.info("event=snapshots_purged count=%d retention_h=%.1f", gone, retention_s / 3600)
    return gone
