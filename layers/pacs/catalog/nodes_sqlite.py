"""SQLite NodeRegistry (embedded mode): a `nodes` table in the catalog's database file.

Nodes are read at every association (the calling-AE policy), for a C-MOVE destination or a
commitment reply, and written by `pacs nodes` (another process). One connection per registry, shared
by the threads that use it under a lock: opening one per call cost a quarter of a millisecond of each
association's set-up, and one per thread would pile up descriptors with the gateway's association
threads. Reads see what another process committed (autocommit: a fresh snapshot per statement).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pacs.catalog.nodes import RemoteNode, check_node

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    ae_title TEXT PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL, tls INTEGER NOT NULL,
    operations TEXT NOT NULL, description TEXT NOT NULL, preferred_syntax TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
"""
_COLS = "ae_title, host, port, tls, operations, description, preferred_syntax"


def _node(r: tuple[str, str, int, int, str, str, str]) -> RemoteNode:
    ops = frozenset(o for o in r[4].split(",") if o)
    return RemoteNode(r[0], r[1], int(r[2]), bool(r[3]), ops, r[5], r[6] or "")


def _migrate(db: sqlite3.Connection) -> None:
    """Add the columns a table made by an earlier release lacks (another process may race: a column
    it added first is fine)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(nodes)")}
    if "preferred_syntax" not in have:
        try:
            db.execute("ALTER TABLE nodes ADD COLUMN preferred_syntax TEXT NOT NULL DEFAULT ''")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise


class SqliteNodeRegistry:
    """Nodes in `path` (the catalog's database: one file holds the whole embedded catalog)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            _migrate(db)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                             check_same_thread=False)
                self._conn.execute("PRAGMA busy_timeout=30000")
            yield self._conn

    def put_node(self, node: RemoteNode) -> None:
        n = check_node(node)
        with self._db() as db:
            db.execute(
                f"INSERT OR REPLACE INTO nodes ({_COLS}) VALUES (?,?,?,?,?,?,?)",
                (n.ae_title, n.host, n.port, int(n.tls), ",".join(sorted(n.operations)), n.description,
                 n.preferred_syntax),
            )

    def get_node(self, ae_title: str) -> RemoteNode | None:
        with self._db() as db:
            r = db.execute(f"SELECT {_COLS} FROM nodes WHERE ae_title=?", (ae_title,)).fetchone()
        return None if r is None else _node(r)

    def list_nodes(self) -> list[RemoteNode]:
        with self._db() as db:
            return [_node(r) for r in db.execute(f"SELECT {_COLS} FROM nodes ORDER BY ae_title")]

    def remove_node(self, ae_title: str) -> bool:
        with self._db() as db:
            return db.execute("DELETE FROM nodes WHERE ae_title=?", (ae_title,)).rowcount > 0

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
