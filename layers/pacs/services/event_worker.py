"""An embedded event worker (`pacs up`): follows the embedded event log with its own durable cursor and
handles each event in a pool of processes (the work is CPU-bound; threads would share one GIL). Shared by
the transcoder (`pacs.services.transcode_worker`) and the anonymizer (`pacs.services.anonymize_worker`);
their AWS twins are EventBridge → SQS → the same services in Lambda.

- The cursor (the last event id whose work is finished, and every one before it) is kept in the
  worker's SQLite file (`DATA_DIR/transcoder.db`, `DATA_DIR/anonymizer.db`): a restart neither repeats
  finished work nor loses an event; work in flight at a crash is done again (the services are idempotent).
- A failure worth retrying (the store or catalog did not answer, a worker process died) is retried
  after RETRY_DELAY, up to `max_attempts`; an event that can never succeed (the service's permanent
  failure) and one that exhausted its attempts go to the dead-letter table with the reason
  (`dead_letters()`, `redrive()`, `pacs transcoder|anonymizer dlq list|redrive`).
- A worker process that crashes breaks the pool: it is rebuilt and the work in flight submitted again
  (each counted as an attempt).

A kind of worker is a `Handler` factory: a module-level function (pickled by reference into the spawned
processes) that builds, from the settings, the function each pool process calls per event; that
function returns ("done", text) or ("permanent", reason), or raises for a retry.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson

from pacs.catalog.sqlite_connections import SqliteStore
from pacs.config import Settings
from pacs.events.embedded import EmbeddedEventLog, StoredEvent

log = logging.getLogger("pacs.event_worker")

#: What a pool process calls per event: ("done", text) | ("permanent", reason); raises: retry.
Handler = Callable[[str, dict[str, Any]], tuple[str, str]]
#: Builds a pool process's handler from the settings (module-level: pickled by reference).
HandlerFactory = Callable[[Settings], Handler]

RETRY_DELAY = 1.0
#: How often a running worker looks for redriven dead letters (`pacs transcoder dlq redrive`).
REDRIVE_CHECK_SECONDS = 1.0
MAX_ATTEMPTS = 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS cursor (name TEXT PRIMARY KEY, after INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    event_id INTEGER PRIMARY KEY, detail_type TEXT NOT NULL, detail BLOB NOT NULL, error TEXT NOT NULL,
    attempts INTEGER NOT NULL, failed_at REAL NOT NULL, redrive INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    event_id: int
    detail_type: str
    detail: dict[str, Any]
    error: str
    attempts: int


class WorkerState(SqliteStore):
    """A worker's cursor and dead letters (its own SQLite file under DATA_DIR)."""

    def __init__(self, path: str | Path, name: str) -> None:
        super().__init__(path, _SCHEMA)
        self.name = name

    def cursor(self) -> int:
        row = self._db().execute("SELECT after FROM cursor WHERE name=?", (self.name,)).fetchone()
        return 0 if row is None else int(row[0])

    def save_cursor(self, after: int) -> None:
        self._write(lambda db: db.execute(
            "INSERT INTO cursor (name, after) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET after = excluded.after", (self.name, after)))

    def dead_letter(self, event: StoredEvent, error: str, attempts: int) -> None:
        self._write(lambda db: db.execute(
            "INSERT OR REPLACE INTO dead_letters (event_id, detail_type, detail, error, attempts, failed_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (event.id, event.detail_type, orjson.dumps(event.detail), error, attempts, time.time())))

    def dead_letters(self) -> list[DeadLetter]:
        rows = self._db().execute(
            "SELECT event_id, detail_type, detail, error, attempts FROM dead_letters ORDER BY event_id"
        ).fetchall()
        return [DeadLetter(i, t, orjson.loads(d), e, a) for i, t, d, e, a in rows]

    def redrive(self) -> int:
        """Mark every dead letter for another try by the running (or next) worker; how many."""
        n: int = self._write(lambda db: db.execute("UPDATE dead_letters SET redrive = 1").rowcount)
        return n

    def take_redriven(self) -> list[StoredEvent]:
        def take(db: sqlite3.Connection) -> list[StoredEvent]:
            rows = db.execute("DELETE FROM dead_letters WHERE redrive = 1 "
                              "RETURNING event_id, detail_type, detail, failed_at").fetchall()
            return [StoredEvent(i, f, "pacs", t, orjson.loads(d)) for i, t, d, f in rows]

        taken: list[StoredEvent] = self._write(take)
        return taken


# -- in the worker processes --------------------------------------------------------------------------

_HANDLER: Handler | None = None


def _init(env: dict[str, str], extra: Callable[[], None] | None, factory: HandlerFactory) -> None:
    """A pool process: Ctrl-C is the supervisor's to handle; its own backend and service."""
    global _HANDLER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if extra is not None:
        extra()
    _HANDLER = factory(Settings.from_env(env))


def _ready() -> int:
    return os.getpid()


def _work(detail_type: str, detail: dict[str, Any]) -> tuple[str, str]:
    """("done", text) or ("permanent", reason); other exceptions are worth a retry."""
    assert _HANDLER is not None
    return _HANDLER(detail_type, detail)


# -- the supervisor's side ----------------------------------------------------------------------------


J = TypeVar("J")


def harvest(running: dict[Future[tuple[str, str]], J], timeout: float,
            died: str) -> tuple[list[tuple[J, str | None, str]], bool]:
    """Wait up to `timeout` for a job of the pool to finish; the finished ones (taken out of `running`),
    each with the worker's (kind, text), or (None, error) when it raised (`died: …` when its process
    died); and whether the pool broke."""
    finished, _ = wait(list(running), timeout=timeout, return_when=FIRST_COMPLETED)
    broken = False
    out: list[tuple[J, str | None, str]] = []
    for future in finished:
        job = running.pop(future)
        try:
            kind, text = future.result()
        except BrokenProcessPool as exc:
            broken = True
            out.append((job, None, f"{died}: {exc}"))
            continue
        except Exception as exc:
            out.append((job, None, f"{type(exc).__name__}: {exc}"))
            continue
        out.append((job, kind, text))
    return out, broken


class PoolSupervisor(Generic[J]):
    """What the event and export workers share: jobs in flight on a process pool, the pool rebuilt
    when a process dies, the loop until stopped. Subclasses set `_pool` and `_running`."""

    _pool: ProcessPoolExecutor | None
    _running: dict[Future[tuple[str, str]], J]

    def step(self, timeout: float = 0.5, *, read: bool = True) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _died(self, job: J) -> None:
        """A job in flight when its pool broke."""
        raise NotImplementedError

    def _rebuild(self) -> None:
        """The pool broke (a process died): every job in flight goes to `_died`; a new pool comes next."""
        pool, self._pool = self._pool, None
        for future, job in list(self._running.items()):
            del self._running[future]
            self._died(job)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def run(self, stop: threading.Event, *, poll: float = 0.5) -> None:
        """Work until `stop` is set, then finish the work in flight."""
        try:
            while not stop.is_set():
                self.step(poll)
            while self._running:
                self.step(poll, read=False)
        finally:
            self.close()

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            stop_resource_tracker()  # else it outlives `pacs up` by a moment


@dataclass(slots=True)
class _Job:
    event: StoredEvent
    attempts: int = 0
    #: False for a redriven dead letter (behind the cursor already).
    tracked: bool = True
    due: float = 0.0


class EventWorker(PoolSupervisor[_Job]):
    """Follow the event log and handle `detail_types` in `workers` processes, each running the handler
    `factory(settings)` builds; cursor and dead letters in `state_path` under `name`."""

    def __init__(self, settings: Settings, *, name: str, state_path: Path, detail_types: tuple[str, ...],
                 factory: HandlerFactory, workers: int, max_attempts: int = MAX_ATTEMPTS,
                 retry_delay: float = RETRY_DELAY, init: Callable[[], None] | None = None,
                 accepts: Callable[[StoredEvent], bool] | None = None) -> None:
        self.settings, self.name, self.detail_types, self.factory = settings, name, detail_types, factory
        #: Events this worker has work for (None: all of `detail_types`); the others are passed over in
        #: the supervisor (the cursor moves past them) without a round trip to the pool.
        self.accepts = accepts
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.max_attempts, self.retry_delay, self._extra_init = max_attempts, retry_delay, init
        self.events = EmbeddedEventLog(settings.data_dir / "events.db")
        self.state = WorkerState(state_path, name)
        self.cursor = self.state.cursor()
        self._read_upto = self.cursor
        self._running = {}
        self._waiting: list[_Job] = []  # retries, due later
        self._pool = None
        self.done = self.failed = 0
        self._next_redrive_check = 0.0

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
                initargs=(self.settings.to_env(), self._extra_init, self.factory))
        return self._pool

    def warm(self) -> None:
        """Start every pool process now (each imports its service and opens its backend: about a second)."""
        pool = self._executor()
        pids: set[int] = set()
        while len(pids) < self.workers:  # one task per idle process at a time, until all answered
            pids |= {f.result() for f in [pool.submit(_ready) for _ in range(self.workers)]}

    def _submit(self, job: _Job) -> None:
        job.attempts += 1
        try:
            future = self._executor().submit(_work, job.event.detail_type, job.event.detail)
        except BrokenProcessPool:  # a process died while idle: a new pool for this and what is in flight
            self._rebuild()
            future = self._executor().submit(_work, job.event.detail_type, job.event.detail)
        self._running[future] = job

    @property
    def busy(self) -> bool:
        return bool(self._running or self._waiting)

    def step(self, timeout: float = 0.5, *, read: bool = True) -> None:
        """Take new events (up to twice the pool's size in flight), wait up to `timeout` for work to
        finish, record what finished, and move the cursor past everything done."""
        if read:
            if time.monotonic() >= self._next_redrive_check:  # a write transaction: not at every step
                self._next_redrive_check = time.monotonic() + REDRIVE_CHECK_SECONDS
                for event in self.state.take_redriven():
                    self._submit(_Job(event, tracked=False))
            room = 2 * self.workers - len(self._running) - len(self._waiting)
            while room > 0:
                batch = self.events.read(self._read_upto, room if self.accepts is None else 500,
                                         self.detail_types)
                for event in batch:
                    self._read_upto = event.id
                    if self.accepts is None or self.accepts(event):
                        self._submit(_Job(event))
                        room -= 1
                        if room == 0:
                            break
                if not batch or self.accepts is None:
                    break
        now = time.monotonic()
        for job in [j for j in self._waiting if j.due <= now]:
            self._waiting.remove(job)
            self._submit(job)
        if not self._running:
            time.sleep(timeout if read or self._waiting else 0)
        else:
            finished, broken = harvest(self._running, timeout, f"a {self.name} process died")
            for job, kind, text in finished:
                if kind is None:
                    self._retry(job, text)
                elif kind == "permanent":
                    self._dead(job, text)
                else:
                    self.done += 1
                    log.debug("%s: event %d: %s", self.name, job.event.id, text)
            if broken:
                self._rebuild()
        self._advance()

    def _retry(self, job: _Job, error: str) -> None:
        if job.attempts >= self.max_attempts:
            self._dead(job, error)
            return
        log.warning("%s: event %d failed (attempt %d): %s", self.name, job.event.id, job.attempts, error)
        job.due = time.monotonic() + self.retry_delay
        self._waiting.append(job)

    def _dead(self, job: _Job, error: str) -> None:
        log.warning("%s: event %d dead-lettered: %s", self.name, job.event.id, error)
        self.state.dead_letter(job.event, error, job.attempts)
        self.failed += 1

    def _died(self, job: _Job) -> None:
        self._retry(job, f"a {self.name} process died")  # on the new pool

    def _advance(self) -> None:
        pending = [j.event.id for j in (*self._running.values(), *self._waiting) if j.tracked]
        cursor = min(pending) - 1 if pending else self._read_upto
        if cursor > self.cursor:
            self.cursor = cursor
            self.state.save_cursor(cursor)

    def run(self, stop: threading.Event, *, poll: float = 0.5) -> None:
        """Work until `stop` is set, then finish the work in flight (retries left for the next
        start: the cursor stays before them)."""
        super().run(stop, poll=poll)

    def close(self) -> None:
        self._close_pool()
        self.events.close()
        self.state.close()


def stop_resource_tracker() -> None:
    """Stop multiprocessing's resource tracker (started for the spawn pool's semaphores) and wait for it:
    left alone it exits only after this process does, a moment later, outside a clean shutdown. It is
    started again if anything needs it."""
    from multiprocessing import resource_tracker

    stop = getattr(resource_tracker._resource_tracker, "_stop", None)  # CPython 3.11+
    if stop is not None:
        with contextlib.suppress(OSError):  # ChildProcessError is an OSError
            stop()
