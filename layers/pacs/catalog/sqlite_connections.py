"""Per-thread SQLite connections that end with their thread.

SQLite connections are not shared between threads here, and the gateway serves every association on
a thread of its own: a connection kept per thread until `close()` would pile up one set of file
descriptors per association (a worker then runs out of descriptors within a few hundred). Each
thread's connection lives in a thread-local holder whose finaliser closes it when the thread ends.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=30000")
#: How long a new connection retries its pragmas while another process holds the database: switching a
#: new file to WAL answers "database is locked" at once, without the busy handler, when two processes
#: (the gateway's workers starting on a fresh data directory) do it together.
PRAGMA_RETRY_SECONDS = 30.0


class _Holder:
    __slots__ = ("__weakref__", "db")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __del__(self) -> None:
        self.db.close()


class ThreadConnections:
    """`get()` is the calling thread's connection to `path`, opened on first use."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._open: weakref.WeakSet[_Holder] = weakref.WeakSet()
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is None:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            _apply_pragmas(db)
            holder = self._local.holder = _Holder(db)
            with self._lock:
                self._open.add(holder)
        return holder.db

    def __len__(self) -> int:
        """Connections open now (threads that used one and are still alive)."""
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        """Close every thread's connection (the store is not used afterwards)."""
        with self._lock:
            holders, self._open = list(self._open), weakref.WeakSet()
        for holder in holders:
            holder.db.close()
        self._local = threading.local()


def _apply_pragmas(db: sqlite3.Connection) -> None:
    deadline = time.monotonic() + PRAGMA_RETRY_SECONDS
    for pragma in PRAGMAS:
        while True:
            try:
                db.execute(pragma)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    db.close()
                    raise
                time.sleep(0.01)


def transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn(db)` in one write transaction (taken at once: BEGIN IMMEDIATE), rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


class SqliteStore:
    """A store in one SQLite file: its schema applied at opening, per-thread connections, transactions."""

    def __init__(self, path: str | Path, schema: str) -> None:
        self.path = str(path)
        self._conns = ThreadConnections(path)
        self._batching = threading.local()
        self._db().executescript(schema)

    def _db(self) -> sqlite3.Connection:
        return self._conns.get()

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(db)` atomically: its own transaction, or a savepoint inside this thread's `batch()`."""
        db = self._db()
        if not getattr(self._batching, "on", False):
            return transaction(db, fn)
        db.execute("SAVEPOINT write")
        try:
            result = fn(db)
        except BaseException:
            db.execute("ROLLBACK TO write")
            db.execute("RELEASE write")
            raise
        db.execute("RELEASE write")
        return result

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """This thread's writes inside the block share one transaction, committed at its end (rolled
        back when the block raises): each write stays atomic (a savepoint, undone alone when it
        fails), the block pays one commit. Reads of this thread see its writes at once, other
        connections when the block ends. Nested blocks join the outer one."""
        if getattr(self._batching, "on", False):
            yield
            return
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        self._batching.on = True
        try:
            yield
        except BaseException:
            self._batching.on = False
            db.execute("ROLLBACK")
            raise
        self._batching.on = False
        db.execute("COMMIT")

    def close(self) -> None:
        self._conns.close()
