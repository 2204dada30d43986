"""What the tests of the embedded event workers (transcoder, anonymizer) share: indexing what was
ingested (its events in the log), and stepping a worker until a condition holds."""

from __future__ import annotations

import time
from collections.abc import Callable

from pacs.backends import Backend
from pacs.services import index_worker
from pacs.services.event_worker import EventWorker
from pacs.services.indexer import IndexerService

DEADLINE = 120.0  # seconds: spawning pool processes on a busy 2-core machine


def index_all(backend: Backend) -> None:
    """Index every queued object (the domain events land in the embedded event log)."""
    assert backend.queue is not None
    indexer = IndexerService(backend.store, backend.catalog, backend.events)
    while index_worker.drain_once(backend.queue, indexer):
        pass


def until(what: Callable[[], bool], worker: EventWorker) -> None:
    deadline = time.monotonic() + DEADLINE
    while not what():
        assert time.monotonic() < deadline, "the worker did not finish in time"
        worker.step(0.2)
