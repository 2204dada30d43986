"""Derived copies of an instance in other transfer syntaxes: made once, kept under `derived/`, found
again by the next request that asks for the same syntax.

    {partition}/derived/{study}/series/{series}/instances/{sop}/ts/{syntax}[~{variant}].dcm

The original is never changed. A copy is a valid Part 10 object (preamble zeroed). With a catalog
(`DerivedCatalog`: both adapters) each copy is recorded with the ETag of the original it was made from:
a copy of an older version is stale, never served, and remade (or dropped) by `refresh`. Copies go with
their instance, series and study (`remove`; DeleteService; the transcoder on InstanceDeleted).
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pydicom
from pydicom.dataset import Dataset

from pacs.catalog.port import DerivedCatalog
from pacs.catalog.records import DerivedCopyRow
from pacs.codecs import EncodeOptions, TranscodeError, transcode
from pacs.dicom.uids import check_uid
from pacs.errors import NotFound
from pacs.storage.keys import check_partition, instance_key
from pacs.storage.port import BlobInfo, BlobStore


def variant_of(options: EncodeOptions | None) -> str:
    """A short, key-safe name for lossy options ('' for the lossless default)."""
    if options is None or not options.lossy:
        return ""
    parts = []
    if options.quality is not None:
        parts.append(f"q{int(options.quality)}")
    if options.near_lossless is not None:
        parts.append(f"n{int(options.near_lossless)}")
    if options.ratio is not None:
        parts.append(f"r{float(options.ratio):g}")
    if options.qstep is not None:
        parts.append(f"s{float(options.qstep):g}")
    return "-".join(parts)


def instance_prefix(partition: str, study: str, series: str | None = None, sop: str | None = None) -> str:
    """The key prefix of the copies of a study (of one series, of one instance)."""
    prefix = f"{check_partition(partition)}/derived/{check_uid(study)}/"
    if series is not None:
        prefix += f"series/{check_uid(series)}/"
        if sop is not None:
            prefix += f"instances/{check_uid(sop)}/ts/"
    return prefix


def derived_key(
    partition: str, study: str, series: str, sop: str, syntax: str, options: EncodeOptions | None = None
) -> str:
    variant = variant_of(options)
    return (
        f"{check_partition(partition)}/derived/{check_uid(study)}/series/{check_uid(series)}"
        f"/instances/{check_uid(sop)}/ts/{check_uid(syntax)}{'~' + variant if variant else ''}.dcm"
    )


def encode_part10(ds: Dataset) -> bytes:
    """`ds` as a Part 10 file: zeroed preamble, file meta group length and syntax as the data set says."""
    buf = io.BytesIO()
    ds.preamble = b"\0" * 128
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


CopyOutcome = Literal["made", "remade", "exists", "dropped"]


@dataclass(frozen=True, slots=True)
class CopyResult:
    syntax: str
    variant: str
    key: str
    outcome: CopyOutcome
    size: int = 0


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def read_original(data: bytes) -> Dataset:
    """An original's data set from its bytes; TranscodeError when it is not a readable Part 10 object."""
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # pydicom raises many kinds on corrupt input
        raise TranscodeError(f"the original cannot be read: {type(exc).__name__}: {exc}") from exc


class DerivedCopies:
    """Find or make the copy of an original in another syntax; with a catalog, record it."""

    def __init__(self, store: BlobStore, partition: str = "default", catalog: object | None = None) -> None:
        self.store = store
        self.partition = check_partition(partition)
        #: Where copies are recorded (a `DerivedCatalog`); None: the store alone says what exists.
        self.records: DerivedCatalog | None = catalog if _is_derived_catalog(catalog) else None  # type: ignore[assignment]
        self._instances = catalog

    def find(
        self, study: str, series: str, sop: str, syntax: str, options: EncodeOptions | None = None, *,
        source_etag: str | None = None,
    ) -> str | None:
        """The key of an existing, current copy, or None. With a catalog, a copy recorded as made from
        another version of the original than the catalogued one (or `source_etag`, the original's current
        ETag when the caller has its catalog row already) is not current."""
        key = derived_key(self.partition, study, series, sop, syntax, options)
        if self.records is not None:
            row = self.records.get_derived(self.partition, study, series, sop, syntax, variant_of(options))
            if row is None:
                return None
            current = source_etag if source_etag is not None else self._catalogued_etag(study, series, sop)
            if current is not None and current != row.source_etag:
                return None
            return row.key
        return key if self.store.head(key) is not None else None

    def make(
        self, study: str, series: str, sop: str, syntax: str, options: EncodeOptions | None = None
    ) -> str:
        """The key of the copy, made from the original when missing or stale (idempotent). Raises
        TranscodeError when no codec can produce it, NotFound when the original is gone."""
        found = self.find(study, series, sop, syntax, options)
        if found is not None:
            return found
        original = instance_key(self.partition, study, series, sop)
        head = self.store.head(original)
        if head is None:
            raise NotFound(f"instance {sop} is not stored")
        results = self.refresh(head, study, series, sop, [(syntax, options or EncodeOptions())],
                               data=self.store.get(original))
        return results[0].key

    def refresh(
        self, head: BlobInfo, study: str, series: str, sop: str,
        targets: Sequence[tuple[str, EncodeOptions]], *, data: bytes | None = None, drop_others: bool = False,
    ) -> list[CopyResult]:
        """Make each target copy of the original `head` (its current version) that is missing or was
        made from another version; record it. With `drop_others`, copies of the instance that are not
        targets and were made from another version are deleted (stale). The original is read once,
        only when a copy must be made; TranscodeError when it cannot be."""
        results: list[CopyResult] = []
        for syntax, options in targets:
            variant = variant_of(options)
            key = derived_key(self.partition, study, series, sop, syntax, options)
            row = None if self.records is None else self.records.get_derived(
                self.partition, study, series, sop, syntax, variant)
            if row is not None and row.source_etag == head.etag and self.store.head(key) is not None:
                results.append(CopyResult(syntax, variant, key, "exists", row.size))
                continue
            if row is None and self.records is None and self.store.head(key) is not None:
                results.append(CopyResult(syntax, variant, key, "exists"))
                continue
            if data is None:
                data = self.store.get(head.key)
            ds = read_original(data)
            transcode(ds, syntax, options, new_uid=False)  # the same instance in another syntax
            encoded = encode_part10(ds)
            self.store.put(key, encoded)  # replaces a stale copy; the same bytes again when twins race
            if self.records is not None:
                self.records.put_derived(DerivedCopyRow(
                    self.partition, study, series, sop, syntax, variant, key, len(encoded), head.etag,
                    head.version_id, now_iso(), _options_dict(options)))
            outcome: CopyOutcome = "made" if row is None else "remade"
            results.append(CopyResult(syntax, variant, key, outcome, len(encoded)))
        if drop_others and self.records is not None:
            wanted = {(r.syntax, r.variant) for r in results}
            for row in self.records.list_derived(self.partition, study, series, sop):
                if (row.syntax, row.variant) not in wanted and row.source_etag != head.etag:
                    self.store.delete(row.key)
                    self.records.remove_derived(self.partition, study, series, sop, row.syntax, row.variant)
                    results.append(CopyResult(row.syntax, row.variant, row.key, "dropped"))
        return results

    def remove(self, study: str, series: str | None = None, sop: str | None = None) -> int:
        """Delete the copies of a study (of one series, of one instance) and their records; how many
        objects went."""
        n = 0
        for blob in list(self.store.list(instance_prefix(self.partition, study, series, sop))):
            if blob.key.endswith(".dcm") and "/ts/" in blob.key:
                self.store.delete(blob.key)
                n += 1
        if self.records is not None:
            for row in self.records.list_derived(self.partition, study, series, sop):
                self.store.delete(row.key)
                self.records.remove_derived(self.partition, study, row.series_uid, row.sop_uid, row.syntax,
                                            row.variant)
        return n

    def _catalogued_etag(self, study: str, series: str, sop: str) -> str | None:
        get_instance = getattr(self._instances, "get_instance", None)
        if get_instance is None:
            return None
        row = get_instance(self.partition, study, series, sop)
        return None if row is None else str(row.etag)


def _options_dict(o: EncodeOptions) -> dict[str, float | int]:
    return {k: v for k, v in (("quality", o.quality), ("near_lossless", o.near_lossless), ("ratio", o.ratio))
            if v is not None}


def _is_derived_catalog(catalog: object | None) -> bool:
    return catalog is not None and all(
        callable(getattr(catalog, m, None))
        for m in ("put_derived", "get_derived", "list_derived", "remove_derived"))
