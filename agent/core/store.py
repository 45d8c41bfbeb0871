"""Final states of finished migrations, kept on disk for the retention period.

A restarted agent serves them again, so a client that re-syncs after an agent
restart misses no outcome, and gets each under the same id (no duplicates).
It also remembers the ids of migrations in flight (see ``active``), and keeps the agent's
``sequence`` monotonic across restarts by reserving it in blocks (one write per
``SEQUENCE_BLOCK`` publications, not one per update).

sqlite3 is blocking; each call here is one small indexed statement in WAL
mode without a per-commit fsync (sub-millisecond), so it runs on the event loop
to keep the store in publication order.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from migwatch.agent.core.convert import migration_from_pb, migration_to_pb
from migwatch.agent.model import Migration
from migwatch.v1 import migwatch_pb2 as pb

log = logging.getLogger(__name__)

SEQUENCE_BLOCK = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS finals (
    id TEXT PRIMARY KEY,
    finished_at REAL NOT NULL,
    record BLOB NOT NULL          -- a serialized migwatch.v1.Migration
);
CREATE INDEX IF NOT EXISTS finals_by_time ON finals (finished_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- Migrations in flight, so an agent restarted mid-migration (even by kill -9) keeps
-- publishing the one it finds again under the same id.
CREATE TABLE IF NOT EXISTS inflight (
    key TEXT PRIMARY KEY,         -- domain UUID and direction
    id TEXT NOT NULL,
    started_at REAL NOT NULL,
    record BLOB NOT NULL          -- its first published migwatch.v1.Migration
);
"""


class FinalStore:
    """One sqlite file of final states."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._reserved = self._meta("sequence_reserved")

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def sequence_floor(self) -> int:
        """A sequence above any the previous run published."""
        return self._reserved

    def reserve(self, sequence: int) -> None:
        """Note that ``sequence`` is about to be used; writes once per block."""
        if sequence < self._reserved:
            return
        self._reserved = sequence + SEQUENCE_BLOCK
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('sequence_reserved', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (self._reserved,),
        )

    def save(self, m: Migration, retention_s: float) -> None:
        """Keep a final state, and forget those older than the retention."""
        assert m.finished_at is not None, "only final states are stored"
        self._db.execute(
            "INSERT OR REPLACE INTO finals (id, finished_at, record) VALUES (?, ?, ?)",
            (m.id, m.finished_at, migration_to_pb(m).SerializeToString()),
        )
        self.prune(m.finished_at - retention_s)

    def load(self, since: float) -> list[Migration]:
        """Final states newer than ``since`` (unix seconds), oldest first; older ones
        are deleted."""
        self._db.execute("DELETE FROM finals WHERE finished_at < ?", (since,))
        found = []
        for (blob,) in self._db.execute("SELECT record FROM finals ORDER BY finished_at"):
            try:
                found.append(migration_from_pb(pb.Migration.FromString(blob)))
            except Exception:  # a corrupt row must not keep the agent from starting
                log.exception("skipping an unreadable stored final state")
        return found

    def prune(self, since: float) -> None:
        self._db.execute("DELETE FROM finals WHERE finished_at < ?", (since,))

    def remember_active(self, key: str, m: Migration, started_at: float) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO inflight (key, id, started_at, record) VALUES (?, ?, ?, ?)",
            (key, m.id, started_at, migration_to_pb(m).SerializeToString()),
        )

    def forget_active(self, key: str) -> None:
        self._db.execute("DELETE FROM inflight WHERE key = ?", (key,))

    def active(self) -> dict[str, tuple[str, float]]:
        """key -> (id, started_at) of the migrations in flight when the last run ended."""
        rows = self._db.execute("SELECT key, id, started_at FROM inflight").fetchall()
        return {key: (mid, float(started)) for key, mid, started in rows}

    def active_records(self) -> dict[str, Migration]:
        """key -> the record of each migration in flight when the last run ended."""
        found = {}
        for key, blob in self._db.execute("SELECT key, record FROM inflight"):
            try:
                found[key] = migration_from_pb(pb.Migration.FromString(blob))
            except Exception:  # a corrupt row must not keep the agent from starting
                log.exception("skipping an unreadable in-flight record")
        return found

    def close(self) -> None:
        self._db.close()
