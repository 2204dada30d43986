"""Ingest: validate a received Part 10 object and store it durably, exactly as received.

The ingest contract (DESIGN.md ◆): the object is parsed once (header only), validated, written
once; only when the write succeeded does the caller answer success. A re-sent SOP Instance with
identical bytes is a no-op; with other bytes the duplicate policy decides (default `replace`: the
newest is kept and the replaced version is kept under `{partition}/history/`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pacs.dicom.part10 import Part10Header, parse_part10
from pacs.errors import DuplicateRejected
from pacs.events.model import sequencer_now
from pacs.storage.keys import check_partition, instance_key
from pacs.storage.port import AlreadyExists, BlobStore


class DuplicatePolicy(enum.StrEnum):
    REPLACE = "replace"  # keep the newest; the replaced version goes to history
    KEEP = "keep"  # keep the first; answer success without storing
    REJECT = "reject"  # refuse with a failure status


class Outcome(enum.StrEnum):
    STORED = "stored"
    IDENTICAL = "identical"  # the same bytes were already stored: nothing to do
    REPLACED = "replaced"
    KEPT_EXISTING = "kept-existing"


@dataclass(frozen=True, slots=True)
class StoredInstance:
    key: str
    header: Part10Header
    size: int
    outcome: Outcome


class IngestService:
    def __init__(
        self,
        store: BlobStore,
        *,
        partition: str = "default",
        duplicate_policy: DuplicatePolicy = DuplicatePolicy.REPLACE,
    ) -> None:
        self.store = store
        self.partition = check_partition(partition)
        self.duplicate_policy = DuplicatePolicy(duplicate_policy)

    def ingest(self, data: bytes | bytearray | memoryview) -> StoredInstance:
        """Store one Part 10 object; raises a PacsError (InvalidDataset, InvalidUID, StorageFailure,
        DuplicateRejected) with nothing stored when it cannot."""
        header = parse_part10(data)
        key = instance_key(self.partition, header.study_uid, header.series_uid, header.sop_instance_uid)
        body = bytes(data) if not isinstance(data, bytes) else data
        try:
            self.store.put(key, body, if_absent=True)
            return StoredInstance(key, header, len(body), Outcome.STORED)
        except AlreadyExists:
            pass
        existing = self.store.get(key)
        if existing == body:
            return StoredInstance(key, header, len(body), Outcome.IDENTICAL)
        if self.duplicate_policy is DuplicatePolicy.REJECT:
            raise DuplicateRejected(
                f"SOP Instance {header.sop_instance_uid} is already stored with different content"
            )
        if self.duplicate_policy is DuplicatePolicy.KEEP:
            return StoredInstance(key, header, len(existing), Outcome.KEPT_EXISTING)
        self.store.put(self.history_key(header), existing)
        self.store.put(key, body)
        return StoredInstance(key, header, len(body), Outcome.REPLACED)

    def history_key(self, h: Part10Header) -> str:
        """Where a replaced version is kept: outside `studies/`, so it is never indexed."""
        return (
            f"{self.partition}/history/{h.study_uid}/{h.series_uid}/{h.sop_instance_uid}"
            f"/{sequencer_now()}.dcm"
        )
