"""Derived copies of an instance in other transfer syntaxes: made once, kept under `derived/`, found
again by the next request that asks for the same syntax.

    {partition}/derived/{study}/series/{series}/instances/{sop}/ts/{syntax}[~{variant}].dcm

The original is never changed. A copy is a valid Part 10 object (preamble zeroed). Copies go with their
study (DeleteService removes `derived/{study}/` when the study is gone).
"""

from __future__ import annotations

import io

import pydicom
from pydicom.dataset import Dataset

from pacs.codecs import EncodeOptions, transcode
from pacs.dicom.uids import check_uid
from pacs.storage.keys import check_partition, instance_key
from pacs.storage.port import BlobStore


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
    return "-".join(parts)


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


class DerivedCopies:
    """Find or make the copy of an original in another syntax."""

    def __init__(self, store: BlobStore, partition: str = "default") -> None:
        self.store = store
        self.partition = check_partition(partition)

    def find(
        self, study: str, series: str, sop: str, syntax: str, options: EncodeOptions | None = None
    ) -> str | None:
        """The key of the existing copy, or None."""
        key = derived_key(self.partition, study, series, sop, syntax, options)
        return key if self.store.head(key) is not None else None

    def make(
        self, study: str, series: str, sop: str, syntax: str, options: EncodeOptions | None = None
    ) -> str:
        """The key of the copy, made from the original when missing (idempotent). Raises
        TranscodeError when no codec can produce it, NotFound when the original is gone."""
        key = derived_key(self.partition, study, series, sop, syntax, options)
        if self.store.head(key) is not None:
            return key
        with self.store.open(instance_key(self.partition, study, series, sop)) as fp:
            ds = pydicom.dcmread(fp)
        transcode(ds, syntax, options)
        self.store.put(key, encode_part10(ds))
        return key
