"""The embedded export worker (`pacs up`): consumes the task queue (`DATA_DIR/tasks.db`) and runs each
task in a pool of processes (de-identification is CPU-bound Python: threads would share one GIL).

- A task that raises is delivered again after RETRY_DELAY, up to the queue's `max_attempts`; one that
  can never succeed (`PermanentExportFailure`) is dead-lettered at once. A task given up is reported
  to the service (`abandon`): its instances count as failed and the job still finishes.
- A pool process that dies breaks the pool: it is rebuilt and the tasks in flight are delivered again.
- At stop, the tasks in flight finish; queued ones wait in the durable queue for the next start.

`drain(service, queue)` runs tasks in the calling thread until the queue is empty (tests, tools).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pacs.config import Settings
from pacs.events.tasks import SqliteTaskQueue, Task, TaskConsumer
from pacs.services.event_worker import PoolSupervisor, harvest
from pacs.services.exports import ExportService, PermanentExportFailure

log = logging.getLogger("pacs.exports")

RETRY_DELAY = 2.0

# -- in the pool processes ----------------------------------------------------------------------------

_SERVICE: ExportService | None = None


def _init(env: dict[str, str], extra: Callable[[], None] | None) -> None:
    global _SERVICE
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if extra is not None:
        extra()
    from pacs.backends import open_backend

    _SERVICE = ExportService.from_backend(open_backend(Settings.from_env(env)))


def _work(body: dict[str, Any]) -> tuple[str, str]:
    """("done", "") or ("permanent", reason); other exceptions are worth another delivery."""
    assert _SERVICE is not None
    try:
        _SERVICE.handle_task(body)
    except PermanentExportFailure as exc:
        return "permanent", str(exc)
    return "done", ""


# -- the supervisor's side ----------------------------------------------------------------------------


def _settle(queue: TaskConsumer, service: ExportService, task: Task, error: str | None, *,
            permanent: bool = False, max_attempts: int) -> None:
    if error is None:
        queue.ack(task.id)
        return
    given_up = permanent or task.attempts >= max_attempts
    log.warning("export task %s (attempt %d) %s: %s", task.body, task.attempts,
                "given up" if given_up else "failed", error)
    queue.fail(task, error, retry_after=RETRY_DELAY, permanent=permanent)
    if given_up:
        service.abandon(task.body, error)


def drain(service: ExportService, queue: SqliteTaskQueue, *, max_tasks: int = 100_000) -> int:
    """Run queued tasks here until none is visible; how many ran."""
    ran = 0
    while ran < max_tasks:
        tasks = queue.receive(10)
        if not tasks:
            return ran
        for task in tasks:
            ran += 1
            try:
                service.handle_task(task.body)
            except PermanentExportFailure as exc:
                _settle(queue, service, task, str(exc), permanent=True, max_attempts=queue.max_attempts)
            except Exception as exc:
                _settle(queue, service, task, f"{type(exc).__name__}: {exc}", max_attempts=queue.max_attempts)
            else:
                _settle(queue, service, task, None, max_attempts=queue.max_attempts)
    return ran


class ExportWorker(PoolSupervisor[Task]):
    """Consume the embedded task queue with `workers` processes (0: PACS_DEID_WORKERS, else one per CPU)."""

    def __init__(self, settings: Settings, *, workers: int = 0,
                 init: Callable[[], None] | None = None) -> None:
        from pacs.backends import open_backend

        self.settings = settings
        self.workers = max(1, workers or settings.deid_workers or os.cpu_count() or 1)
        self._extra_init = init
        self.backend = open_backend(settings)
        self.service = ExportService.from_backend(self.backend)
        queue = self.service.queue
        assert isinstance(queue, SqliteTaskQueue), "the embedded worker consumes the embedded queue"
        self.queue = queue
        self._pool = None
        self._running = {}
        self.done = self.failed = 0

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
                initargs=(self.settings.to_env(), self._extra_init))
        return self._pool

    def _submit(self, task: Task) -> None:
        try:
            future = self._executor().submit(_work, task.body)
        except BrokenProcessPool:
            self._rebuild()
            future = self._executor().submit(_work, task.body)
        self._running[future] = task

    def _died(self, task: Task) -> None:
        self._settle(task, "an export process died")

    def _settle(self, task: Task, error: str | None, *, permanent: bool = False) -> None:
        if error is None:
            self.done += 1
        else:
            self.failed += 1
        _settle(self.queue, self.service, task, error, permanent=permanent,
                max_attempts=self.queue.max_attempts)

    def step(self, timeout: float = 0.5, *, read: bool = True) -> None:
        """Take tasks (up to twice the pool's size in flight), wait up to `timeout` for one to finish."""
        room = 2 * self.workers - len(self._running)
        if read and room > 0:
            for task in self.queue.receive(room, wait=0 if self._running else timeout):
                self._submit(task)
        if not self._running:
            return
        finished, broken = harvest(self._running, timeout, "an export process died")
        for task, kind, text in finished:
            if kind is None:
                self._settle(task, text)
            else:
                self._settle(task, text if kind == "permanent" else None, permanent=kind == "permanent")
        if broken:
            self._rebuild()

    def close(self) -> None:
        self._close_pool()
        self.service.close()
        self.backend.close()

