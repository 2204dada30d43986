"""Pick the adapters for a backend: one code path, only the adapters differ.

- embedded: filesystem objects + SQLite catalog + SQLite durable queue (the store notifies it);
- aws: S3 objects + DynamoDB catalog; notifications come from the bucket (S3 → SQS). With PACS_QUEUE_URL
  the SQS queue is `queue` (the local process tree indexes from it); PACS_EVENT_BUS: EventBridge events.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pacs.catalog.nodes import NodeRegistry
from pacs.catalog.port import Catalog
from pacs.config import Settings
from pacs.events.local import LocalQueue
from pacs.events.model import ObjectEvent
from pacs.events.publisher import EventPublisher
from pacs.events.queue import IndexQueue
from pacs.services.commitment import CommitmentRecords
from pacs.services.indexer import IndexerService
from pacs.services.ingest import DuplicatePolicy, IngestService
from pacs.services.mpps import MppsStore
from pacs.storage.keys import parse_instance_key
from pacs.storage.port import BlobStore


@dataclass(slots=True)
class Backend:
    settings: Settings
    store: BlobStore
    catalog: Catalog
    #: The index queue: the embedded queue, or on AWS the SQS queue S3 notifies when PACS_QUEUE_URL
    #: is set (`pacs up --backend aws`, `pacs dlq`); None on Lambda, where SQS invokes the indexer.
    queue: IndexQueue | None
    #: Where received data sets are spooled: beside the objects (same filesystem) when embedded.
    spool_dir: Path | None = None
    #: Remote DICOM nodes, kept in the catalog's database.
    nodes: NodeRegistry | None = None
    #: Where domain events go (EventBridge on AWS, the embedded event log `events.db` locally).
    events: EventPublisher | None = None
    #: MPPS steps and storage commitment requests, beside the catalog (same database / table).
    mpps: MppsStore | None = None
    commitments: CommitmentRecords | None = None
    #: Where de-identified exports go (`{partition}/export/…`): the exports bucket on AWS when
    #: PACS_EXPORTS_BUCKET is set, else the same store as the originals.
    exports: BlobStore | None = None

    @property
    def exports_store(self) -> BlobStore:
        return self.exports if self.exports is not None else self.store

    def close(self) -> None:
        self.catalog.close()
        for other in (self.mpps, self.queue, self.nodes, self.events):
            close = getattr(other, "close", None)
            if close is not None:
                close()


def ingest_service(backend: Backend, *, index: bool, serial_index: bool = False) -> IngestService:
    """The ingest service of a backend, by its settings; with `index`, each stored instance is
    indexed before the store is acknowledged (STOW-RS always; C-STORE with PACS_INDEX_ON_STORE);
    with `serial_index`, one at a time (the parts of one STOW-RS request)."""
    return IngestService(
        backend.store, partition=backend.settings.partition,
        duplicate_policy=DuplicatePolicy(backend.settings.duplicate_policy),
        indexer=IndexerService(backend.store, backend.catalog, backend.events) if index else None,
        serial_index=serial_index,
    )


def open_backend(settings: Settings) -> Backend:
    if settings.backend == "embedded":
        from pacs.catalog.mpps_sqlite import SqliteMppsStore
        from pacs.catalog.nodes_sqlite import SqliteNodeRegistry
        from pacs.catalog.sqlite import SqliteCatalog
        from pacs.events.embedded import EmbeddedEventLog
        from pacs.storage.filesystem import FilesystemBlobStore

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        queue = LocalQueue(settings.data_dir / "queue.db")
        def notify(event: ObjectEvent) -> None:
            """Announce originals only, as the S3 notification filter does (`studies/…/*.dcm`)."""
            if parse_instance_key(event.key) is not None:
                queue.publish(event)

        store = FilesystemBlobStore(settings.data_dir / "objects", notify=notify)
        spool = settings.data_dir / "spool"
        spool.mkdir(exist_ok=True)
        catalog_db = settings.data_dir / "catalog.db"
        backend = Backend(settings, store, SqliteCatalog(catalog_db), queue, spool,
                          nodes=SqliteNodeRegistry(catalog_db),
                          events=EmbeddedEventLog(settings.data_dir / "events.db"))
        backend.mpps = backend.commitments = SqliteMppsStore(catalog_db)  # after the catalog's tables
        return backend
    if settings.backend == "aws":
        from pacs.catalog.dynamodb import DynamoCatalog
        from pacs.catalog.mpps_dynamodb import DynamoMppsStore
        from pacs.catalog.nodes_dynamodb import DynamoNodeRegistry
        from pacs.events.eventbridge import EventBridgePublisher
        from pacs.events.sqs import SqsQueue
        from pacs.storage.s3 import S3BlobStore

        missing = [n for n in ("bucket", "table") if not getattr(settings, n)]
        if missing:
            raise ValueError(f"the aws backend needs {', '.join('PACS_' + m.upper() for m in missing)}")
        endpoint = settings.endpoint_url or None
        s3 = S3BlobStore(settings.bucket, derived_bucket=settings.derived_bucket or None,
                         endpoint_url=endpoint, region=settings.region)
        catalog = DynamoCatalog(settings.table, region=settings.region, host=endpoint)
        nodes = DynamoNodeRegistry(settings.table, region=settings.region, host=endpoint)
        events = EventBridgePublisher(settings.event_bus, endpoint_url=endpoint, region=settings.region) \
            if settings.event_bus else None
        sqs = SqsQueue(settings.queue_url, dlq_url=settings.dlq_url, endpoint_url=endpoint,
                       region=settings.region) if settings.queue_url else None
        records = DynamoMppsStore(settings.table, region=settings.region, host=endpoint)
        exports = S3BlobStore(settings.exports_bucket, endpoint_url=endpoint, region=settings.region) \
            if settings.exports_bucket else None
        return Backend(settings, s3, catalog, sqs, nodes=nodes, events=events, mpps=records,
                       commitments=records, exports=exports)
    raise ValueError(f"unknown backend {settings.backend!r}: use embedded or aws")
