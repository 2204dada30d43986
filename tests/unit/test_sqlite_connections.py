"""Per-thread SQLite connections end with their threads: the gateway serves every association on a
new thread, and a catalog read from each must not keep a connection (and its descriptors) per thread."""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

from pacs.catalog.sqlite import SqliteCatalog
from pacs.catalog.sqlite_connections import ThreadConnections


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_threads_connection_closes_when_the_thread_ends(tmp_path: Path) -> None:
    conns = ThreadConnections(tmp_path / "x.db")
    conns.get().execute("CREATE TABLE t (x)")

    def use() -> None:
        conns.get().execute("SELECT count(*) FROM t").fetchone()

    def run(n: int) -> None:
        for _ in range(n):
            t = threading.Thread(target=use)
            t.start()
            t.join()
        gc.collect()

    run(1)  # SQLite's first reader opens the shared-memory index, kept for the process
    before = open_fds()
    run(50)
    assert len(conns) == 1  # this thread's
    assert open_fds() <= before
    conns.close()
    assert len(conns) == 0


def test_the_catalog_keeps_no_connection_per_finished_thread(tmp_path: Path) -> None:
    catalog = SqliteCatalog(tmp_path / "catalog.db")
    try:
        for n in range(101):
            if n == 1:
                before = open_fds()
            t = threading.Thread(target=catalog.get_study, args=("default", f"1.2.{n}"))
            t.start()
            t.join()
        gc.collect()
        assert open_fds() <= before
    finally:
        catalog.close()


def test_writes_in_a_batch_share_one_transaction_and_fail_alone(tmp_path: Path) -> None:
    import sqlite3

    import pytest
    from pacs.catalog.sqlite_connections import SqliteStore

    store = SqliteStore(tmp_path / "s.db", "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INT);")
    reader = sqlite3.connect(tmp_path / "s.db")

    def insert(k: str, fail: bool = False) -> None:
        def fn(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO t VALUES (?, 1)", (k,))
            db.execute("UPDATE t SET v = v + 1 WHERE k = ?", (k,))
            if fail:
                raise ValueError("half-way")

        store._write(fn)

    with store.batch():
        insert("a")
        with pytest.raises(ValueError):
            insert("b", fail=True)  # its insert and update are undone, not a's
        with store.batch():  # nested: joins the outer one
            insert("c")
        assert store._db().execute("SELECT k, v FROM t ORDER BY k").fetchall() == [("a", 2), ("c", 2)]
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (0,)  # not committed yet
    assert reader.execute("SELECT k, v FROM t ORDER BY k").fetchall() == [("a", 2), ("c", 2)]

    with pytest.raises(RuntimeError), store.batch():
        insert("d")
        raise RuntimeError("the batch fails")
    assert reader.execute("SELECT k FROM t ORDER BY k").fetchall() == [("a",), ("c",)]
    insert("e")  # after a batch, writes commit on their own again
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (3,)
    reader.close()
    store.close()


def _open_at_once(path: str, barrier: Any) -> None:
    barrier.wait()
    conns = ThreadConnections(path)
    conns.get().execute("SELECT 1")
    conns.close()


def test_processes_opening_a_new_database_together_all_succeed(tmp_path: Path) -> None:
    """Gateway workers start together on a fresh data directory: switching the new file to WAL answered
    "database is locked" at once (no busy handler) to all but one of them, and a worker that fails before
    serving stops the gateway. The pragmas are retried while the database is locked."""
    ctx = multiprocessing.get_context("fork")
    failures = 0
    for n in range(60):
        barrier = ctx.Barrier(3)
        procs = [ctx.Process(target=_open_at_once, args=(str(tmp_path / f"{n}.db"), barrier)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        failures += sum(p.exitcode != 0 for p in procs)
    assert failures == 0
