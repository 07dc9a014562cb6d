"""Durable store-and-forward queue (SQLite in WAL mode) between the agent and the broker.

A message is written here before it is published and deleted only when the broker has
acknowledged it, so neither a broker outage nor a crash loses it. It never publishes.

Age is measured on the spool's own clock, never the wall clock: a Pi without an RTC boots
in 1970 (or at its last fake-hwclock save) and NTP steps the clock by years once the
network is back, exactly when an outage's events are waiting here."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Drop order when the spool is over its bounds: cheapest loss first.
KINDS = ("telemetry", "snapshot", "audit", "event")


@dataclass(frozen=True, slots=True)
class Spooled:
    id: int
    kind: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: float
    """Wall-clock time the message speaks of (its `ts`); never used for retention."""
    stored: float
    """Spool-clock seconds when it was stored."""


class Spool:
    """Bounded by total payload bytes and by age; drops telemetry, then snapshots, then
    events, oldest first, and counts every drop (persisted, reported in telemetry).

    The spool clock counts the seconds the spool has been open, across restarts (monotonic
    within a run, carried over in the database): a message's age is how long the node has
    held it while running, whatever the wall clock did meanwhile."""

    def __init__(self, path: Path, max_bytes: int = 64 * 1024 * 1024,
                 max_age_s: float = 7 * 24 * 3600,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._lock = threading.RLock()  # re-entered by put() inside batch()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS spool (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    kind TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,
                    qos INTEGER NOT NULL, retain INTEGER NOT NULL, created REAL NOT NULL);
                CREATE TABLE IF NOT EXISTS dropped (
                    kind TEXT PRIMARY KEY, count INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS clock (
                    id INTEGER PRIMARY KEY CHECK (id = 1), seconds REAL NOT NULL);
                """
            )
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(spool)")}
            if "stored" not in columns:  # a spool written before the spool clock
                self._db.execute("ALTER TABLE spool ADD COLUMN stored REAL NOT NULL DEFAULT 0")
            self._db.execute("DROP INDEX IF EXISTS spool_kind_created")
            self._db.execute("CREATE INDEX IF NOT EXISTS spool_kind_stored ON spool "
                             "(kind, stored)")
            row = self._db.execute("SELECT seconds FROM clock WHERE id = 1").fetchone()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ValueError(f"{path}: spool database is unusable ({exc})") from None
        self._monotonic = monotonic
        self._clock_base = (float(row[0]) if row else 0.0) - monotonic()
        self._bytes = int(self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM spool").fetchone()[0])

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Puts inside share one transaction, so one fsync: the events of one frame (and
        their snapshots) are stored together instead of each paying its own sync, which
        held back the last of a burst by a few milliseconds per event before it. Nothing
        is sent before the batch ends; an exception inside stores nothing of it."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
                self._save_clock()
            except BaseException:
                self._db.execute("ROLLBACK")
                self._recount()
                raise
            self._db.execute("COMMIT")

    def put(self, kind: str, topic: str, payload: bytes, qos: int, retain: bool = False,
            created: float | None = None) -> int:
        if kind not in KINDS:
            raise ValueError(f"spool kind must be one of {KINDS}, not {kind!r}")
        with self._lock:
            nested = self._db.in_transaction
            if not nested:
                self._db.execute("BEGIN")
            try:
                cur = self._db.execute(
                    "INSERT INTO spool (kind, topic, payload, qos, retain, created, stored) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (kind, topic, payload, qos, int(retain), created or time.time(),
                     self.clock()))
                self._bytes += len(payload)
                self._enforce_bounds()
                if not nested:
                    self._save_clock()
                    self._db.execute("COMMIT")
            except BaseException:
                if not nested and self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                    self._recount()
                raise
            return int(cur.lastrowid or 0)

    def clock(self) -> float:
        """Spool-clock seconds now."""
        return self._clock_base + self._monotonic()

    def after(self, last_id: int, limit: int) -> list[Spooled]:
        """Messages with id > last_id, oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM spool WHERE id > ? ORDER BY id LIMIT ?",
                (last_id, limit)).fetchall()
        return [_row(r) for r in rows]

    def get(self, ids: list[int]) -> list[Spooled]:
        with self._lock:
            q = ",".join("?" * len(ids))
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM spool WHERE id IN ({q}) ORDER BY id", ids).fetchall()
        return [_row(r) for r in rows]

    def ack(self, *row_ids: int) -> None:
        """Delete acknowledged messages, all in one transaction (one sync for a window of
        PUBACKs: an ack lost to a power cut only means the message is sent again)."""
        if not row_ids:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for row_id in row_ids:
                    row = self._db.execute("SELECT LENGTH(payload) FROM spool WHERE id = ?",
                                           (row_id,)).fetchone()
                    if row is None:
                        continue
                    self._db.execute("DELETE FROM spool WHERE id = ?", (row_id,))
                    self._bytes -= int(row[0])
                self._save_clock()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._recount()
                raise

    def purge(self, kind: str, older_than_s: float) -> int:
        """Delete messages of `kind` held longer than this (the camera's retention period
        for snapshots); returns how many. Not counted as drops: nothing was lost to a bound."""
        with self._lock:
            return self._delete_older(kind, self.clock() - older_than_s)

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0])

    def dropped(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT kind, count FROM dropped").fetchall()
        out = dict.fromkeys(KINDS, 0)
        out.update({k: int(c) for k, c in rows})
        return out

    @property
    def bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._save_clock()
            self._db.close()

    def _save_clock(self) -> None:
        self._db.execute("INSERT INTO clock (id, seconds) VALUES (1, ?) "
                         "ON CONFLICT(id) DO UPDATE SET seconds = excluded.seconds",
                         (self.clock(),))

    def _recount(self) -> None:
        self._bytes = int(self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM spool").fetchone()[0])

    def _delete_older(self, kind: str, cutoff: float) -> int:
        """Delete the messages of `kind` stored before spool-clock `cutoff`; how many."""
        n, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM spool "
            "WHERE kind = ? AND stored < ?", (kind, cutoff)).fetchone()
        if n:
            self._db.execute("DELETE FROM spool WHERE kind = ? AND stored < ?", (kind, cutoff))
            self._bytes -= int(size)
        return int(n)

    def _count_drop(self, kind: str, n: int) -> None:
        if n:
            self._db.execute(
                "INSERT INTO dropped (kind, count) VALUES (?, ?) "
                "ON CONFLICT(kind) DO UPDATE SET count = count + excluded.count", (kind, n))

    def _enforce_bounds(self) -> None:
        """Runs on every put: the age check reads the (kind, stored) index, so its cost does
        not grow with the spool; without it a broker outage slowed the pipeline thread more
        the longer it lasted (docs/performance.md)."""
        cutoff = self.clock() - self.max_age_s
        for kind in KINDS:
            self._count_drop(kind, self._delete_older(kind, cutoff))
        for kind in KINDS:
            while self._bytes > self.max_bytes:
                row = self._db.execute(
                    "SELECT id, LENGTH(payload) FROM spool WHERE kind = ? ORDER BY id LIMIT 1",
                    (kind,)).fetchone()
                if row is None:
                    break
                self._db.execute("DELETE FROM spool WHERE id = ?", (row[0],))
                self._bytes -= int(row[1])
                self._count_drop(kind, 1)


_COLUMNS = "id, kind, topic, payload, qos, retain, created, stored"


def _row(r: tuple[Any, ...]) -> Spooled:
    return Spooled(r[0], r[1], r[2], bytes(r[3]), r[4], bool(r[5]), r[6], r[7])
