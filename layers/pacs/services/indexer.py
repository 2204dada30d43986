"""Indexer: turn object events into catalog rows, idempotently and in any order.

The indexer is level-triggered: an event only says "this key changed"; the indexer reads the
object store's current state for the key and makes the catalog agree with it. A created event
whose ETag no longer matches the stored object is superseded (the newer write has its own event);
a key that no longer exists is removed from the catalog. Versions are ordered by the event's
sequencer, so a late, older delivery never overwrites newer state. An object the catalog already
holds with the same ETag (indexed on store, as STOW-RS does) is not read again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, cast

from pydicom.dataset import Dataset

from pacs.catalog.port import Catalog
from pacs.catalog.records import DicomJson, IndexedInstance, InstanceRow
from pacs.dicom.levels import split_document, split_levels
from pacs.errors import InvalidDataset
from pacs.events.details import BatchPublisher, announcement
from pacs.events.model import ObjectEvent, sequencer_order
from pacs.events.publisher import EventPublisher
from pacs.services.metadata import MetadataService, instance_document, read_instance
from pacs.storage.keys import InstanceKey, parse_instance_key
from pacs.storage.port import BlobInfo, BlobStore

log = logging.getLogger("pacs.indexer")


class IndexOutcome(enum.StrEnum):
    IGNORED = "ignored"  # not an original instance key
    SUPERSEDED = "superseded"  # the object changed again since this event
    INSERTED = "inserted"
    REPLACED = "replaced"
    UNCHANGED = "unchanged"
    STALE = "stale"
    REMOVED = "removed"
    ABSENT = "absent"  # removed from the store and not in the catalog


class IndexerService:
    def __init__(self, store: BlobStore, catalog: Catalog, events: EventPublisher | None = None) -> None:
        self.store = store
        self.catalog = catalog
        #: Domain events (InstanceStored, InstanceDeleted, each followed by StudyUpdated) are emitted
        #: after a change of the catalog only: a duplicate, stale or superseded event emits nothing.
        self.events = events
        self.metadata = MetadataService(store, catalog)
        #: Series whose metadata changed in the current `batch()`; None outside a batch.
        self._dirty: set[tuple[str, str, str]] | None = None
        #: Instance metadata to write when the batch ends (the latest version of each instance).
        self._pending: dict[InstanceKey, DicomJson] = {}
        #: Domain events held until the catalog transaction of `transaction()` commits; None outside.
        self._held: list[tuple[str, dict[str, Any]]] | None = None
        self._publish_batch = events.publish_batch if isinstance(events, BatchPublisher) else None
        #: Events handed over at once (EventBridge's PutEvents takes 10).
        self._batch_limit = int(getattr(events, "batch_limit", 10))

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Coalesce metadata work: instance metadata is written and each changed series rebuilt once,
        at the end, off the ingest burst's critical path (the catalog itself is updated at once).

        Outside a batch a change writes the instance metadata and drops the series object; the first
        read rebuilds it."""
        outer = self._dirty is None
        if outer:
            self._dirty = set()
        try:
            yield
        finally:
            if outer:
                dirty, self._dirty = self._dirty or set(), None
                pending, self._pending = self._pending, {}
                for ref, doc in pending.items():
                    try:
                        self.metadata.write_document(ref, doc)
                    except Exception as exc:  # rebuilt from the original on first read
                        log.warning("instance metadata %s not written: %s", ref.sop_uid, exc)
                for partition, study, series in sorted(dirty):
                    try:
                        self.metadata.rebuild_series(partition, study, series)
                    except Exception as exc:  # the first read rebuilds it: never fail the batch
                        log.warning("series metadata %s/%s not rebuilt: %s", study, series, exc)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """The catalog writes of the block in one transaction, when the catalog offers one (SQLite:
        each write still atomic on its own, a savepoint; one commit instead of one per instance).
        The domain events of the block are published once it committed, in order, each as it would
        have been (StudyUpdated with the aggregates right after its change); none when it failed."""
        batch = getattr(self.catalog, "batch", None)
        if batch is None or self._held is not None:
            yield
            return
        self._held = []
        try:
            with batch():
                yield
            held = self._held
        finally:
            self._held = None
        self._publish(held)

    def _publish(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        if not events or self.events is None:
            return
        if self._publish_batch is None:
            for detail_type, detail in events:
                self.events.publish(detail_type, detail)
            return
        step = max(2, self._batch_limit - self._batch_limit % 2)  # a StudyUpdated stays with its cause
        for start in range(0, len(events), step):
            self._publish_batch(events[start:start + step])

    def _announce(self, row: InstanceRow, *, removed: bool, replaced: bool = False,
                  modality: str | None = None, calling_ae: str | None = None) -> None:
        """InstanceStored (or InstanceDeleted) for `row`, then StudyUpdated for its study (as
        `pacs.events.details.announce`); held while a `transaction()` is open."""
        pair = announcement(self.catalog, row, removed=removed, replaced=replaced, modality=modality,
                            calling_ae=calling_ae)
        if self._held is not None:
            self._held.extend(pair)
        else:
            self._publish(pair)

    def _series_changed(self, ref: InstanceKey) -> None:
        series = (ref.partition, ref.study_uid, ref.series_uid)
        if self._dirty is None:
            self.metadata.invalidate_series(*series)
        elif series not in self._dirty:  # once per series and batch
            self.metadata.invalidate_series(*series)
            self._dirty.add(series)

    def handle(self, event: ObjectEvent) -> IndexOutcome:
        ref = parse_instance_key(event.key)
        if ref is None:
            return IndexOutcome.IGNORED
        head = self.store.head(event.key)
        if head is None:
            old = None if self.events is None else self.catalog.get_instance(
                ref.partition, ref.study_uid, ref.series_uid, ref.sop_uid)
            removed = self.catalog.remove_instance(ref.partition, ref.study_uid, ref.series_uid, ref.sop_uid)
            self._pending.pop(ref, None)
            self.metadata.remove_instance(ref)
            self._series_changed(ref)
            if removed and old is not None and self.events is not None:
                self._announce(old, removed=True)
            return IndexOutcome.REMOVED if removed else IndexOutcome.ABSENT
        if event.kind == "removed":
            return IndexOutcome.SUPERSEDED  # re-created since: the created event indexes it
        if event.etag and head.etag != event.etag:
            return IndexOutcome.SUPERSEDED
        row = self.catalog.get_instance(ref.partition, ref.study_uid, ref.series_uid, ref.sop_uid)
        if row is not None and row.etag == head.etag:  # indexed on store (STOW-RS): nothing to do
            return IndexOutcome.UNCHANGED
        return self.index(head, sequencer=event.sequencer or head.sequencer or "")

    def index(
        self, head: BlobInfo, *, sequencer: str, local: Callable[[], BinaryIO] | None = None
    ) -> IndexOutcome:
        """Read the header of a stored object and upsert it into the catalog. `local` opens a local
        copy of the very bytes stored (the ingest's spool file): read instead of the store."""
        ref = parse_instance_key(head.key)
        if ref is None:
            return IndexOutcome.IGNORED
        source = self.store if local is None else cast(BlobStore, _LocalCopy(self.store, head.key, local))
        ds, pixel = read_instance(source, head.key)
        doc = instance_document(ref, ds, pixel)  # the one conversion: metadata and catalog levels
        found = (_text(doc, "0020000D", ds, "StudyInstanceUID"),
                 _text(doc, "0020000E", ds, "SeriesInstanceUID"),
                 _text(doc, "00080018", ds, "SOPInstanceUID"))
        if found != (ref.study_uid, ref.series_uid, ref.sop_uid):
            raise InvalidDataset(f"object {head.key} holds UIDs {found}, not those of its key")
        if self._dirty is not None:
            self._pending[ref] = doc
        else:
            self.metadata.write_document(ref, doc)
        self._series_changed(ref)
        study, series, instance = split_document(doc) or split_levels(ds)
        syntax = str(ds.file_meta.TransferSyntaxUID)
        instance["00083002"] = {"vr": "UI", "Value": [syntax]}
        row = InstanceRow(
            partition=ref.partition,
            study_uid=ref.study_uid,
            series_uid=ref.series_uid,
            sop_uid=ref.sop_uid,
            sop_class_uid=_text(doc, "00080016", ds, "SOPClassUID"),
            transfer_syntax_uid=syntax,
            key=head.key,
            size=head.size,
            etag=head.etag,
            sequencer=sequencer,
            attrs=instance,
            version_id=head.version_id,
        )
        item = IndexedInstance(row, study, series, _text(doc, "00080060", ds, "Modality", or_empty=True))
        outcome = IndexOutcome(self.catalog.upsert_instance(item))
        if outcome is IndexOutcome.STALE:
            outcome = self._catch_up(item, head)
        if self.events is not None and outcome in (IndexOutcome.INSERTED, IndexOutcome.REPLACED):
            self._announce(row, removed=False, replaced=outcome is IndexOutcome.REPLACED,
                           modality=item.modality, calling_ae=_calling_ae(ds))
        return outcome

    def _catch_up(self, item: IndexedInstance, head: BlobInfo) -> IndexOutcome:
        """Stale by sequencer, yet the store still holds what was read: the catalog is behind.

        Sequencers tie when they come from S3's one-second Last-Modified, or mean nothing across
        sources (reconciliation vs. events). The current object wins over the catalog's row.
        """
        i = item.instance
        current = self.store.head(head.key)
        old = self.catalog.get_instance(i.partition, i.study_uid, i.series_uid, i.sop_uid)
        if current is None or current.etag != head.etag or old is None or old.etag == head.etag:
            return IndexOutcome.STALE
        bumped = f"{max(sequencer_order(old.sequencer), sequencer_order(i.sequencer)) + 1:020X}"
        newer = IndexedInstance(
            dataclasses.replace(i, sequencer=bumped), item.study_attrs, item.series_attrs, item.modality
        )
        return IndexOutcome(self.catalog.upsert_instance(newer))


class _LocalCopy:
    """A store whose object `key` is read from a local copy (every other call goes to the store)."""

    def __init__(self, store: BlobStore, key: str, local: Callable[[], BinaryIO]) -> None:
        self._store, self._key, self._local = store, key, local

    def open(self, key: str) -> BinaryIO:
        return self._local() if key == self._key else self._store.open(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _calling_ae(ds: Dataset) -> str | None:
    """Who sent the object: (0002,0016) Source Application Entity Title of its file meta (the gateway
    writes the calling AE title there), or None."""
    meta = getattr(ds, "file_meta", None)
    value = meta.get("SourceApplicationEntityTitle") if meta is not None else None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    text = str(value or "").strip()
    return text or None


def _text(doc: DicomJson, key: str, ds: Dataset, keyword: str, *, or_empty: bool = False) -> str:
    """`str(ds.get(keyword, ""))` (with `or_empty`: `str(ds.get(keyword, "") or "")`), read from the
    element's JSON when it holds one text value; from pydicom for anything else."""
    values = doc.get(key, {}).get("Value")
    if values is not None and len(values) == 1 and type(values[0]) is str and values[0]:
        return values[0]
    value = ds.get(keyword, "")
    return str(value or "") if or_empty else str(value)
