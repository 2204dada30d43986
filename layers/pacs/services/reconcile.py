"""Reconciliation: diff the object store against the catalog and index what is missing.

An instance stored but never indexed (a crash between the write and its event) is found here.
It runs at embedded start-up, on a schedule in AWS, and as `pacs reconcile`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pacs.catalog.port import Catalog
from pacs.events.publisher import EventPublisher
from pacs.services.indexer import IndexerService
from pacs.storage.keys import parse_instance_key, partition_studies_prefix
from pacs.storage.port import BlobInfo, BlobStore

_BATCH = 100


@dataclass(slots=True)
class ReconcileReport:
    scanned: int = 0
    indexed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def reconcile(store: BlobStore, catalog: Catalog, partition: str = "default",
              events: EventPublisher | None = None) -> ReconcileReport:
    """`events`: where an instance indexed here is announced (InstanceStored), as by the indexer."""
    indexer = IndexerService(store, catalog, events)
    report = ReconcileReport()
    batch: list[BlobInfo] = []

    def flush() -> None:
        missing = catalog.missing_keys(partition, [b.key for b in batch])
        for info in batch:
            if info.key not in missing:
                continue
            head = store.head(info.key)
            if head is None:
                continue
            try:
                indexer.index(head, sequencer=head.sequencer or "")
                report.indexed += 1
            except Exception as exc:  # one bad object must not stop the pass
                report.failed.append((info.key, str(exc)))
        batch.clear()

    for info in store.list(partition_studies_prefix(partition)):
        if parse_instance_key(info.key) is None:
            continue
        report.scanned += 1
        batch.append(info)
        if len(batch) >= _BATCH:
            flush()
    flush()
    return report
