"""Retrieve: the stored objects of a study, series or instance, streamed from the object store.

The 128-byte preamble is always sent as zeros: ingest zeroes it (`pacs.services.ingest`), and an
object stored before it did is not served with an executable header in it either.
"""

from __future__ import annotations

from collections.abc import Iterator

from pacs.catalog.port import Catalog
from pacs.catalog.records import InstanceRow
from pacs.errors import NotFound
from pacs.services.ingest import PREAMBLE
from pacs.storage.port import BlobStore


class RetrieveService:
    def __init__(self, store: BlobStore, catalog: Catalog, partition: str = "default") -> None:
        self.store = store
        self.catalog = catalog
        self.partition = partition

    def instances(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[InstanceRow]:
        """The catalogued instances to send, in series and instance order; NotFound when none."""
        if sop_uid is not None and series_uid is not None:
            row = self.catalog.get_instance(self.partition, study_uid, series_uid, sop_uid)
            rows = [row] if row else []
        else:
            rows = self.catalog.query_instances(self.partition, study_uid, series_uid, ()).rows
        if not rows:
            what = "instance" if sop_uid else "series" if series_uid else "study"
            raise NotFound(f"no such {what}")
        return rows

    def chunks(self, row: InstanceRow, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The stored object's bytes, piece by piece, its preamble as zeros."""
        return _zeroed_preamble(self.store.iter_chunks(row.key, chunk_size))

    def key_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Any stored Part 10 object's bytes (a derived copy's), piece by piece, its preamble as zeros."""
        return _zeroed_preamble(self.store.iter_chunks(key, chunk_size))


def _zeroed_preamble(chunks: Iterator[bytes]) -> Iterator[bytes]:
    sent = 0
    for chunk in chunks:
        if sent < PREAMBLE:
            n = min(PREAMBLE - sent, len(chunk))
            if chunk[:n] != bytes(n):
                chunk = bytes(n) + chunk[n:]
        sent += len(chunk)
        yield chunk
