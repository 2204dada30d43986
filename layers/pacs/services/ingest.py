"""Ingest: validate a received Part 10 object and store it durably, exactly as received.

The ingest contract (DESIGN.md ◆): the object is parsed once (header only), validated, written
once; only when the write succeeded does the caller answer success. A re-sent SOP Instance with
identical bytes is a no-op; with other bytes the duplicate policy decides (default `replace`: the
newest is kept and the replaced version is kept under `{partition}/history/`).

Every object is stored with a zeroed 128-byte preamble, whatever it held on arrival: a preamble is
free for any content (PS3.10 7.1), so an `MZ` or ELF header there would make the stored object a
valid executable as well (the CVE-2019-11687 polyglot class); nothing in DICOM reads it.

With an `indexer`, each stored (or already present) object is indexed before the call returns:
searchable, retrievable and deletable by the caller's next request (DESIGN.md 4a). The event-driven
indexer still sees the object and finds it indexed (an idempotent no-op).
"""

from __future__ import annotations

import enum
import io
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from pacs.config import Settings
from pacs.dicom.part10 import Part10Header, parse_part10
from pacs.dicom.uids import UidPolicy, check_policy
from pacs.errors import DuplicateRejected, InvalidDataset, PacsError, StorageFailure, WrongStudy
from pacs.events.model import sequencer_now
from pacs.monitoring.metrics import instance_refused, instance_stored, object_store_error
from pacs.storage.keys import check_partition, instance_key
from pacs.storage.port import AlreadyExists, BlobInfo, BlobStore

if TYPE_CHECKING:
    from pacs.services.indexer import IndexerService

#: The length of the Part 10 preamble, stored as zeros.
PREAMBLE = 128
_ZEROS = bytes(PREAMBLE)

T = TypeVar("T")
U = TypeVar("U")


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
        indexer: IndexerService | None = None,
        serial_index: bool = False,
        uid_policy: UidPolicy | str | None = None,
    ) -> None:
        self.store = store
        self.partition = check_partition(partition)
        self.duplicate_policy = DuplicatePolicy(duplicate_policy)
        #: When set, each object is indexed before `ingest`/`ingest_file` return (read-your-writes).
        self.indexer = indexer
        #: With `serial_index`, concurrent calls store in parallel but index one at a time: the parts
        #: of one STOW-RS request mostly share a study, whose catalog items concurrent writes would
        #: contend for (DynamoDB transactions conflict and back off).
        self._index_lock: AbstractContextManager[object] = threading.Lock() if serial_index else nullcontext()
        #: Which instance UIDs are accepted (None: the setting, `PACS_UID_POLICY`).
        self.uid_policy = UidPolicy(uid_policy if uid_policy is not None else Settings.from_env().uid_policy)

    def ingest(self, data: bytes | bytearray | memoryview, *, study_uid: str | None = None) -> StoredInstance:
        """Store one Part 10 object; raises a PacsError (InvalidDataset, InvalidUID, StorageFailure,
        DuplicateRejected; WrongStudy when `study_uid` is given and differs) with nothing stored.
        With an `indexer`, an error of the indexing comes after the object was stored: the
        event-driven indexer retries it."""
        header = _refused_if_raises(parse_part10, data)
        if bytes(data[:PREAMBLE]) != _ZEROS:
            body = _ZEROS + bytes(data[PREAMBLE:])
        else:
            body = bytes(data) if not isinstance(data, bytes) else data
        return self._store(
            header, len(body), study_uid,
            put=lambda key, if_absent: self.store.put(key, body, if_absent=if_absent),
            same_as=lambda key: self.store.get(key) == body,
            local=lambda: io.BytesIO(body),
        )

    def ingest_file(self, path: Path, *, study_uid: str | None = None) -> StoredInstance:
        """Store a spooled Part 10 file without reading it whole into memory (memory-mapped for the
        header walk; linked or streamed into the store). The file is a spool file of the caller's,
        which removes it: its preamble is zeroed in place first."""
        header, size = _refused_if_raises(_parse_file, path)
        _zero_preamble(path)
        return self._store(
            header, size, study_uid,
            put=lambda key, if_absent: self.store.put_file(key, path, if_absent=if_absent),
            same_as=lambda key: _same_content(self.store.iter_chunks(key), path),
            local=lambda: open(path, "rb"),
        )

    def _store(
        self, header: Part10Header, size: int, study_uid: str | None, *,
        put: Callable[[str, bool], BlobInfo], same_as: Callable[[str], bool],
        local: Callable[[], BinaryIO],
    ) -> StoredInstance:
        """Apply the duplicate policy, store, and index when asked (from `local`, the bytes just
        stored, unless the store kept other bytes); errors name the instance."""
        try:
            check_policy(header.study_uid, "StudyInstanceUID", self.uid_policy)
            check_policy(header.series_uid, "SeriesInstanceUID", self.uid_policy)
            check_policy(header.sop_instance_uid, "SOPInstanceUID", self.uid_policy)
            if study_uid is not None and header.study_uid != study_uid:
                raise WrongStudy(
                    f"SOP Instance {header.sop_instance_uid} belongs to study {header.study_uid}, "
                    f"not {study_uid}"
                )
            stored, info = self._put(header, size, put=put, same_as=same_as)
            if self.indexer is not None:
                with self._index_lock:
                    self._index(stored, info, None if stored.outcome is Outcome.KEPT_EXISTING else local)
        except PacsError as exc:
            exc.sop_class_uid, exc.sop_instance_uid = header.sop_class_uid, header.sop_instance_uid
            instance_refused(type(exc).__name__)
            if isinstance(exc, StorageFailure):
                object_store_error("put")
            raise
        instance_stored(stored.outcome)
        return stored

    def _index(
        self, stored: StoredInstance, info: BlobInfo | None, local: Callable[[], BinaryIO] | None
    ) -> None:
        """Index the object now at the key (a no-op when it is indexed already)."""
        assert self.indexer is not None
        head = info or self.store.head(stored.key)
        if head is None:  # deleted by another request meanwhile: nothing left to index
            return
        self.indexer.index(head, sequencer=head.sequencer or sequencer_now(), local=local)

    def _put(
        self, header: Part10Header, size: int, *, put: Callable[[str, bool], BlobInfo],
        same_as: Callable[[str], bool],
    ) -> tuple[StoredInstance, BlobInfo | None]:
        """Store by the duplicate policy: the outcome, and what was written (None: nothing)."""
        key = instance_key(self.partition, header.study_uid, header.series_uid, header.sop_instance_uid)
        try:
            info = put(key, True)
            return StoredInstance(key, header, size, Outcome.STORED), info
        except AlreadyExists:
            pass
        if same_as(key):
            return StoredInstance(key, header, size, Outcome.IDENTICAL), None
        if self.duplicate_policy is DuplicatePolicy.REJECT:
            raise DuplicateRejected(
                f"SOP Instance {header.sop_instance_uid} is already stored with different content"
            )
        if self.duplicate_policy is DuplicatePolicy.KEEP:
            return StoredInstance(key, header, size, Outcome.KEPT_EXISTING), None
        with self.store.open(key) as old:
            self.store.put(self.history_key(header), old)
        info = put(key, False)
        return StoredInstance(key, header, size, Outcome.REPLACED), info

    def history_key(self, h: Part10Header) -> str:
        """Where a replaced version is kept: outside `studies/`, so it is never indexed."""
        return (
            f"{self.partition}/history/{h.study_uid}/{h.series_uid}/{h.sop_instance_uid}"
            f"/{sequencer_now()}.dcm"
        )


def _refused_if_raises(parse: Callable[[T], U], arg: T) -> U:
    """`parse(arg)`, an error counted as a refused instance (metrics)."""
    try:
        return parse(arg)
    except PacsError as exc:
        instance_refused(type(exc).__name__)
        raise


def _parse_file(path: Path) -> tuple[Part10Header, int]:
    """The header of a Part 10 file, and its size."""
    error: PacsError | None = None
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise InvalidDataset("empty data set")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            try:
                return parse_part10(mapped), size  # type: ignore[arg-type]  # a buffer, as bytes are
            except PacsError as exc:  # re-raised once the map is closed (its traceback holds views)
                error = type(exc)(exc.reason)
    raise error


def _zero_preamble(path: Path) -> None:
    """Overwrite a Part 10 file's preamble with zeros, when it holds anything else."""
    with open(path, "r+b") as fh:
        if fh.read(PREAMBLE) != _ZEROS:
            fh.seek(0)
            fh.write(_ZEROS)


def _same_content(chunks: Iterator[bytes], path: Path) -> bool:
    """Compare a stored object with a local file, piece by piece."""
    with open(path, "rb") as fh:
        for chunk in chunks:
            if fh.read(len(chunk)) != chunk:
                return False
        return fh.read(1) == b""
