"""The embedded durable queue: SQLite in WAL mode, shared by the processes of `pacs up`.

`publish` commits before it returns (WAL, `synchronous=NORMAL`): an event recorded before an ingest
is acknowledged survives a crash of any process. A power loss may drop the last events, never the
objects (they are fsync'ed): start-up reconciliation indexes whatever they announced.

Consumers claim messages with a visibility timeout (as SQS does): a consumer that dies leaves its
messages to be delivered again. After `max_attempts` failed
deliveries a message moves to the dead-letter table, where `dead_letters()` shows it and
`redrive()` puts it back.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from pacs.catalog.sqlite_connections import ThreadConnections
from pacs.events.model import ObjectEvent, event_timestamp

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL,
    visible_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (visible_at, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    failed_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class QueueMessage:
    id: int
    event: ObjectEvent
    attempts: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    event: ObjectEvent
    attempts: int
    error: str | None


class SqliteMessageQueue:
    """The queue itself, bodies as bytes: `LocalQueue` (object events) and `pacs.events.tasks`
    (export tasks) give them their types."""

    def __init__(
        self, path: str | Path, *, max_attempts: int = 5, visibility_timeout: float = 60.0
    ) -> None:
        self.path = str(path)
        self.max_attempts = max_attempts
        self.visibility_timeout = visibility_timeout
        self._conns = ThreadConnections(path)
        with self._conn() as db:
            db.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        return self._conns.get()

    def _insert(self, body: bytes) -> None:
        """Record a body durably (committed and synced) before returning."""
        self._conn().execute("INSERT INTO messages (body, visible_at) VALUES (?, ?)", (body, time.time()))

    def _claim(self, max_messages: int, wait: float) -> list[tuple[int, bytes, int]]:
        """Claim up to `max_messages` visible messages (id, body, attempts), waiting up to `wait`
        seconds for one."""
        deadline = time.monotonic() + wait
        while True:
            now = time.time()
            db = self._conn()
            # Look first without the write lock: publishers (the gateway, on its C-STORE critical path)
            # are not made to wait for a consumer that finds nothing.
            visible = db.execute("SELECT 1 FROM messages WHERE visible_at <= ? LIMIT 1", (now,)).fetchone()
            if visible is None:
                if time.monotonic() >= deadline:
                    return []
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute(
                    "UPDATE messages SET visible_at = ?, attempts = attempts + 1 WHERE id IN "
                    "(SELECT id FROM messages WHERE visible_at <= ? ORDER BY id LIMIT ?) "
                    "RETURNING id, body, attempts",
                    (now + self.visibility_timeout, now, max_messages),
                ).fetchall()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if rows or time.monotonic() >= deadline:
                rows.sort()
                return [(int(i), bytes(b), int(a)) for i, b, a in rows]
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def ack(self, *message_ids: int) -> None:
        """Remove processed messages (one statement for a whole batch)."""
        if message_ids:
            marks = ",".join("?" * len(message_ids))
            self._conn().execute(f"DELETE FROM messages WHERE id IN ({marks})", message_ids)

    def _fail(self, message_id: int, attempts: int, error: str, retry_after: float,
              *, dead: bool = False) -> None:
        """Visible again after `retry_after`, or dead-lettered after `max_attempts` deliveries (or
        at once when `dead`)."""
        db = self._conn()
        if dead or attempts >= self.max_attempts:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT OR REPLACE INTO dead_letters (id, body, attempts, last_error, failed_at) "
                "SELECT id, body, attempts, ?, ? FROM messages WHERE id = ?",
                (error, time.time(), message_id),
            )
            db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            db.execute("COMMIT")
        else:
            db.execute(
                "UPDATE messages SET visible_at = ?, last_error = ? WHERE id = ?",
                (time.time() + retry_after, error, message_id),
            )

    def depth(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM messages").fetchone()[0])

    def dead_letter_depth(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    def _dead_rows(self) -> list[tuple[int, bytes, int, str | None]]:
        return [(int(i), bytes(b), int(a), e) for i, b, a, e in self._conn().execute(
            "SELECT id, body, attempts, last_error FROM dead_letters ORDER BY id").fetchall()]

    def redrive(self) -> int:
        """Move every dead letter back to the queue; returns how many."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        n = db.execute(
            "INSERT INTO messages (body, visible_at) SELECT body, ? FROM dead_letters ORDER BY id",
            (time.time(),),
        ).rowcount
        db.execute("DELETE FROM dead_letters")
        db.execute("COMMIT")
        return int(n)

    def close(self) -> None:
        self._conns.close()


class LocalQueue(SqliteMessageQueue):
    """The index queue: object events."""

    def publish(self, event: ObjectEvent) -> None:
        """Record an event durably (committed and synced) before returning."""
        self._insert(event.to_json())

    def receive(self, max_messages: int = 10, wait: float = 0.0) -> list[QueueMessage]:
        """Claim up to `max_messages` visible messages, waiting up to `wait` seconds for one."""
        return [QueueMessage(i, ObjectEvent.from_json(b), a) for i, b, a in self._claim(max_messages, wait)]

    def fail(self, message: QueueMessage, error: str, *, retry_after: float = 1.0) -> None:
        """Make a message visible again later, or dead-letter it after `max_attempts` deliveries."""
        self._fail(message.id, message.attempts, error, retry_after)

    def oldest_age(self) -> float | None:
        """Seconds since the oldest waiting message was published (its first visibility); None: empty."""
        row = self._conn().execute("SELECT body FROM messages ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        written = event_timestamp(ObjectEvent.from_json(row[0]).event_time)
        return None if written is None else max(0.0, time.time() - written)

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter(i, ObjectEvent.from_json(b), a, e) for i, b, a, e in self._dead_rows()]
