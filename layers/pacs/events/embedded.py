"""The embedded domain-event log: an append-only SQLite table beside the queue (`events.db`).

The local twin of the EventBridge bus. `publish` commits before it returns (WAL); every process of
`pacs up` may publish (the indexer, the gateway's workers). Downstream services consume it by
cursor: `read(after=last_id_seen)` returns the events appended since, in order, so a consumer that
remembers its last id sees each event at least once, as with an EventBridge rule.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pacs.catalog.sqlite_connections import ThreadConnections, transaction
from pacs.events.publisher import SOURCE

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    source TEXT NOT NULL,
    detail_type TEXT NOT NULL,
    detail BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    time: float
    source: str
    detail_type: str
    detail: dict[str, Any]


class EmbeddedEventLog:
    """EventPublisher on SQLite; `read` is the consumer side."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._conns = ThreadConnections(path)
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        return self._conns.get()

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        self.publish_batch([(detail_type, detail)])

    #: The most events `publish_batch` is given at once by the indexer (any number is taken).
    batch_limit = 1000

    def publish_batch(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Append the events in one transaction, in order (consecutive ids)."""
        now = time.time()
        rows = [(now, SOURCE, t, orjson.dumps(d)) for t, d in events]
        transaction(self._conn(), lambda db: db.executemany(
            "INSERT INTO events (time, source, detail_type, detail) VALUES (?, ?, ?, ?)", rows))

    def read(self, after: int = 0, limit: int = 100, detail_types: tuple[str, ...] = ()) -> list[StoredEvent]:
        """Events with an id above `after`, oldest first (optionally of some detail types only)."""
        sql = "SELECT id, time, source, detail_type, detail FROM events WHERE id > ?"
        args: list[Any] = [after]
        if detail_types:
            sql += f" AND detail_type IN ({','.join('?' * len(detail_types))})"
            args += detail_types
        rows = self._conn().execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [StoredEvent(i, t, s, d, orjson.loads(b)) for i, t, s, d, b in rows]

    def last_id(self) -> int:
        return int(self._conn().execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])

    def close(self) -> None:
        self._conns.close()
