"""The embedded study-stable worker (`pacs up`): a thread following the event log (`StudyUpdated`) with
its own durable cursor, keeping the timers of `pacs.services.study_stable` in SQLite and firing the due
ones into the event log. Its state is `DATA_DIR/stable.db`: the cursor and, per (partition, study),
the last change, the due time and the generation emitted. A timer survives a restart: a study whose
quiet time passed while `pacs up` was down is announced at the next start.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

import orjson

from pacs.catalog.port import Catalog
from pacs.catalog.sqlite_connections import SqliteStore
from pacs.config import Settings
from pacs.events.embedded import EmbeddedEventLog
from pacs.events.publisher import STUDY_STABLE, STUDY_UPDATED
from pacs.services.event_worker import WorkerState
from pacs.services.study_stable import StudyStableService, Timer

log = logging.getLogger("pacs.study_stable")

STATE_FILE = "stable.db"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS timers (
    partition TEXT NOT NULL, study TEXT NOT NULL, last_change REAL NOT NULL, due REAL,
    generation INTEGER NOT NULL DEFAULT 0, pending INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (partition, study)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS timers_due ON timers (due) WHERE due IS NOT NULL;
CREATE INDEX IF NOT EXISTS timers_pending ON timers (pending) WHERE pending = 1;
"""
_COLUMNS = "partition, study, last_change, due, generation"


class SqliteTimerStore(SqliteStore):
    """`pacs.services.study_stable.TimerStore` on SQLite."""

    def __init__(self, path: str) -> None:
        super().__init__(path, _SCHEMA)

    def _rowcount(self, sql: str, args: tuple[object, ...]) -> int:
        n: int = self._write(lambda db: db.execute(sql, args).rowcount)
        return n

    def record(self, partition: str, study_uid: str, at: float, due: float | None) -> bool:
        return self._rowcount(
            "INSERT INTO timers (partition, study, last_change, due) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (partition, study) DO UPDATE SET last_change = excluded.last_change, "
            "due = excluded.due WHERE excluded.last_change > timers.last_change",
            (partition, study_uid, at, due)) > 0

    def due(self, now: float, limit: int = 100) -> list[Timer]:
        rows = self._db().execute(f"SELECT {_COLUMNS} FROM timers WHERE due IS NOT NULL AND due <= ? "
                                  "ORDER BY due LIMIT ?", (now, limit)).fetchall()
        return [Timer(*row) for row in rows]

    def claim(self, timer: Timer) -> bool:
        return self._rowcount(
            "UPDATE timers SET generation = generation + 1, due = NULL, pending = 1 WHERE partition = ? "
            "AND study = ? AND last_change = ? AND generation = ? AND due IS NOT NULL",
            (timer.partition, timer.study_uid, timer.last_change, timer.generation)) > 0

    def release(self, timer: Timer) -> None:
        self._rowcount("UPDATE timers SET generation = generation - 1, pending = 0, due = coalesce(due, ?) "
                       "WHERE partition = ? AND study = ? AND pending = 1",
                       (timer.due, timer.partition, timer.study_uid))

    def published(self, timer: Timer) -> None:
        self._rowcount("UPDATE timers SET pending = 0 WHERE partition = ? AND study = ?",
                       (timer.partition, timer.study_uid))

    def pending(self) -> list[Timer]:
        rows = self._db().execute(f"SELECT {_COLUMNS} FROM timers WHERE pending = 1").fetchall()
        return [Timer(p, s, c, 0.0, g) for p, s, c, _, g in rows]

    def get(self, partition: str, study_uid: str) -> Timer | None:
        row = self._db().execute(f"SELECT {_COLUMNS} FROM timers WHERE partition = ? AND study = ?",
                                 (partition, study_uid)).fetchone()
        return None if row is None else Timer(*row)


def _in_log(events: EmbeddedEventLog) -> Callable[[Timer], bool]:
    """Whether a pending claim's StudyStable is in the event log already (a crash after publishing)."""
    def published(timer: Timer) -> bool:
        db = sqlite3.connect(events.path)
        try:
            rows = db.execute("SELECT detail FROM events WHERE detail_type = ? ORDER BY id DESC",
                              (STUDY_STABLE,)).fetchall()
        finally:
            db.close()
        for (raw,) in rows:
            d = orjson.loads(raw)
            if (d.get("partition"), d.get("studyInstanceUID")) == (timer.partition, timer.study_uid):
                return bool(d.get("generation") == timer.generation)
        return False

    return published


class StableWorker:
    """Follow `StudyUpdated` in the event log and fire due timers, every `poll` seconds."""

    name = "study-stable"

    def __init__(self, settings: Settings, catalog: Catalog, *, quiet_seconds: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.events = EmbeddedEventLog(settings.data_dir / "events.db")
        self.state = WorkerState(settings.data_dir / STATE_FILE, "stable")
        self.timers = SqliteTimerStore(str(settings.data_dir / STATE_FILE))
        quiet = settings.study_quiet_seconds if quiet_seconds is None else quiet_seconds
        self.service = StudyStableService(catalog, self.timers, self.events, quiet_seconds=quiet, clock=clock)
        self.cursor = self.state.cursor()
        self.service.recover(_in_log(self.events))

    def step(self) -> int:
        """Record the new StudyUpdated events, then fire the due timers; how many were emitted."""
        while batch := self.events.read(self.cursor, 500, (STUDY_UPDATED,)):
            for event in batch:
                self.service.handle(event.detail_type, event.detail, event.time)
            self.cursor = batch[-1].id
            self.state.save_cursor(self.cursor)
        return len(self.service.fire())

    def run(self, stop: threading.Event, *, poll: float = 0.2) -> None:
        try:
            while not stop.is_set():
                try:
                    self.step()
                except Exception:  # the catalog or a database did not answer: the next step retries
                    log.exception("study-stable: step failed")
                stop.wait(poll)
        finally:
            self.close()

    def close(self) -> None:
        self.events.close()
        self.state.close()
        self.timers.close()
