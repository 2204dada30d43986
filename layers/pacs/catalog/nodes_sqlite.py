"""SQLite NodeRegistry (embedded mode): a `nodes` table in the catalog's database file."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from pacs.catalog.nodes import RemoteNode, check_node

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    ae_title TEXT PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL, tls INTEGER NOT NULL,
    operations TEXT NOT NULL, description TEXT NOT NULL
) WITHOUT ROWID;
"""
_COLS = "ae_title, host, port, tls, operations, description"


def _node(r: tuple[str, str, int, int, str, str]) -> RemoteNode:
    ops = frozenset(o for o in r[4].split(",") if o)
    return RemoteNode(r[0], r[1], int(r[2]), bool(r[3]), ops, r[5])


class SqliteNodeRegistry:
    """Nodes in `path` (the catalog's database: one file holds the whole embedded catalog)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._db().executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
            with self._lock:
                self._conns.append(db)
        return db

    def put_node(self, node: RemoteNode) -> None:
        n = check_node(node)
        self._db().execute(
            f"INSERT OR REPLACE INTO nodes ({_COLS}) VALUES (?,?,?,?,?,?)",
            (n.ae_title, n.host, n.port, int(n.tls), ",".join(sorted(n.operations)), n.description),
        )

    def get_node(self, ae_title: str) -> RemoteNode | None:
        r = self._db().execute(f"SELECT {_COLS} FROM nodes WHERE ae_title=?", (ae_title,)).fetchone()
        return None if r is None else _node(r)

    def list_nodes(self) -> list[RemoteNode]:
        return [_node(r) for r in self._db().execute(f"SELECT {_COLS} FROM nodes ORDER BY ae_title")]

    def remove_node(self, ae_title: str) -> bool:
        return self._db().execute("DELETE FROM nodes WHERE ae_title=?", (ae_title,)).rowcount > 0

    def close(self) -> None:
        with self._lock:
            for db in self._conns:
                db.close()
            self._conns.clear()
        self._local = threading.local()
