"""Ingest: validate a received Part 10 object and store it durably, exactly as received.

The ingest contract (DESIGN.md ◆): the object is parsed once (header only), validated, written
once; only when the write succeeded does the caller answer success. A re-sent SOP Instance with
identical bytes is a no-op; with other bytes the duplicate policy decides (default `replace`: the
newest is kept and the replaced version is kept under `{partition}/history/`).
"""

from __future__ import annotations

import enum
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pacs.config import Settings
from pacs.dicom.part10 import Part10Header, parse_part10
from pacs.dicom.uids import UidPolicy, check_policy
from pacs.errors import DuplicateRejected, InvalidDataset, PacsError, WrongStudy
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
        uid_policy: UidPolicy | str | None = None,
    ) -> None:
        self.store = store
        self.partition = check_partition(partition)
        self.duplicate_policy = DuplicatePolicy(duplicate_policy)
        #: Which instance UIDs are accepted (None: the setting, `PACS_UID_POLICY`).
        self.uid_policy = UidPolicy(uid_policy if uid_policy is not None else Settings.from_env().uid_policy)

    def ingest(self, data: bytes | bytearray | memoryview, *, study_uid: str | None = None) -> StoredInstance:
        """Store one Part 10 object; raises a PacsError (InvalidDataset, InvalidUID, StorageFailure,
        DuplicateRejected; WrongStudy when `study_uid` is given and differs) with nothing stored."""
        header = parse_part10(data)
        body = bytes(data) if not isinstance(data, bytes) else data
        return self._store(
            header, len(body), study_uid,
            put=lambda key, if_absent: self.store.put(key, body, if_absent=if_absent),
            same_as=lambda key: self.store.get(key) == body,
        )

    def ingest_file(self, path: Path, *, study_uid: str | None = None) -> StoredInstance:
        """Store a spooled Part 10 file without reading it whole into memory (memory-mapped for the
        header walk; linked or streamed into the store). The file is left for the caller to remove."""
        header, size = _parse_file(path)
        return self._store(
            header, size, study_uid,
            put=lambda key, if_absent: self.store.put_file(key, path, if_absent=if_absent),
            same_as=lambda key: _same_content(self.store.iter_chunks(key), path),
        )

    def _store(
        self, header: Part10Header, size: int, study_uid: str | None, *,
        put: Callable[[str, bool], object], same_as: Callable[[str], bool],
    ) -> StoredInstance:
        """Apply the duplicate policy and store; errors name the instance they concern."""
        try:
            check_policy(header.study_uid, "StudyInstanceUID", self.uid_policy)
            check_policy(header.series_uid, "SeriesInstanceUID", self.uid_policy)
            check_policy(header.sop_instance_uid, "SOPInstanceUID", self.uid_policy)
            if study_uid is not None and header.study_uid != study_uid:
                raise WrongStudy(
                    f"SOP Instance {header.sop_instance_uid} belongs to study {header.study_uid}, "
                    f"not {study_uid}"
                )
            return self._put(header, size, put=put, same_as=same_as)
        except PacsError as exc:
            exc.sop_class_uid, exc.sop_instance_uid = header.sop_class_uid, header.sop_instance_uid
            raise

    def _put(
        self, header: Part10Header, size: int, *, put: Callable[[str, bool], object],
        same_as: Callable[[str], bool],
    ) -> StoredInstance:
        key = instance_key(self.partition, header.study_uid, header.series_uid, header.sop_instance_uid)
        try:
            put(key, True)
            return StoredInstance(key, header, size, Outcome.STORED)
        except AlreadyExists:
            pass
        if same_as(key):
            return StoredInstance(key, header, size, Outcome.IDENTICAL)
        if self.duplicate_policy is DuplicatePolicy.REJECT:
            raise DuplicateRejected(
                f"SOP Instance {header.sop_instance_uid} is already stored with different content"
            )
        if self.duplicate_policy is DuplicatePolicy.KEEP:
            return StoredInstance(key, header, size, Outcome.KEPT_EXISTING)
        with self.store.open(key) as old:
            self.store.put(self.history_key(header), old)
        put(key, False)
        return StoredInstance(key, header, size, Outcome.REPLACED)

    def history_key(self, h: Part10Header) -> str:
        """Where a replaced version is kept: outside `studies/`, so it is never indexed."""
        return (
            f"{self.partition}/history/{h.study_uid}/{h.series_uid}/{h.sop_instance_uid}"
            f"/{sequencer_now()}.dcm"
        )


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


def _same_content(chunks: Iterator[bytes], path: Path) -> bool:
    """Compare a stored object with a local file, piece by piece."""
    with open(path, "rb") as fh:
        for chunk in chunks:
            if fh.read(len(chunk)) != chunk:
                return False
        return fh.read(1) == b""
