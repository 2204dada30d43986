"""Per-thread SQLite connections end with their threads: the gateway serves every association on a
new thread, and a catalog read from each must not keep a connection (and its descriptors) per thread."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

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
