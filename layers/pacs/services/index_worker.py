"""The embedded indexer worker: consume the local queue and call the indexer service.

The AWS twin is `functions/indexer` (SQS batch → the same IndexerService). `pacs up --backend aws`
runs this worker on the SQS queue itself (`pacs.events.sqs.SqsQueue`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

from pacs.events.queue import IndexQueue, QueueMessage
from pacs.monitoring import metrics
from pacs.services.indexer import IndexerService, IndexOutcome

log = logging.getLogger("pacs.indexer")


def drain_once(queue: IndexQueue, indexer: IndexerService, *, batch: int = 32, wait: float = 0.0) -> int:
    """Process one batch of messages; returns how many were taken."""
    messages = queue.receive(batch, wait=wait)
    if not messages:
        return 0
    done: list[QueueMessage] = []
    outcomes: list[IndexOutcome] = []  # of the messages done, for the metrics
    # series metadata rebuilt once per changed series, at the end; the catalog written in one
    # transaction (one commit per batch, each message's writes atomic on their own), acknowledged after
    with indexer.batch():
        try:
            with indexer.transaction():
                for msg in messages:
                    try:
                        outcome = indexer.handle(msg.event)
                    except Exception as exc:
                        log.warning("indexing %s failed (attempt %d): %s", msg.event.key, msg.attempts, exc)
                        queue.fail(msg, f"{type(exc).__name__}: {exc}")
                        metrics.indexed("failed")
                    else:
                        done.append(msg)
                        outcomes.append(outcome)
        except Exception as exc:  # the commit, or the events' hand-over after it: delivered again
            log.warning("indexing a batch of %d failed: %s", len(done), exc)
            for msg in done:
                queue.fail(msg, f"{type(exc).__name__}: {exc}")
                metrics.indexed("failed")
            done, outcomes = [], []
    queue.ack(*(msg.id for msg in done))
    for msg, outcome in zip(done, outcomes, strict=True):  # committed: the lag is known
        metrics.indexed_event(msg.event.event_time, outcome, msg.event.size)
    return len(messages)


#: Scheduling priority (nice) of the indexer thread: under load the gateway's C-STORE answers come
#: first and indexing trails the burst by a moment (it is asynchronous anyway).
NICENESS = 10


#: A burst of ingest is indexed in one metadata batch for at most this long: each changed series'
#: metadata is rebuilt once when the burst ends (or after this), not after every few instances.
BURST_SECONDS = 5.0


def run(queue: IndexQueue, indexer: IndexerService, stop: threading.Event, *, poll: float = 0.2) -> None:
    """Index until `stop` is set, then finish what is already queued and visible.

    While messages keep coming, one metadata batch stays open (bounded by BURST_SECONDS): series
    metadata is dropped on each change (reads rebuild it on demand) and rebuilt once per burst.
    """
    with contextlib.suppress(OSError, AttributeError):  # Linux: a thread's nice is its own
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
    while not stop.is_set():
        with indexer.batch():
            started = time.monotonic()
            while drain_once(queue, indexer, wait=poll) and not stop.is_set() \
                    and time.monotonic() - started < BURST_SECONDS:
                pass
    with indexer.batch():
        while drain_once(queue, indexer):
            pass
