"""The BlobStore port: the object store holding originals (immutable Part 10) and derived data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from pacs.events.model import ObjectEvent


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int
    etag: str
    version_id: str | None = None
    #: Orders writes of the same key (hex, comparable with `sequencer_order`), where the store knows it.
    sequencer: str | None = None


class AlreadyExists(Exception):
    """`put(..., if_absent=True)` found an object at the key; nothing was written."""


class BlobStore(Protocol):
    """Objects by key. Writes are atomic: a reader sees the whole object or none of it."""

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        content_type: str = "application/dicom",
        if_absent: bool = False,
    ) -> BlobInfo:
        """Write durably, replacing any object at `key` (or raising AlreadyExists when `if_absent`);
        raises StorageFailure when not stored."""
        ...

    def put_file(
        self, key: str, path: Path, *, content_type: str = "application/dicom", if_absent: bool = False
    ) -> BlobInfo:
        """Store a local file (a spooled upload) without reading it into memory; the file itself
        is left in place for the caller to remove. Same guarantees as `put`."""
        ...

    def head(self, key: str) -> BlobInfo | None: ...

    def open(self, key: str) -> BinaryIO:
        """A readable, seekable stream; raises NotFound."""
        ...

    def get(self, key: str) -> bytes: ...

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object in pieces, never whole in memory."""
        ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> Iterator[BlobInfo]: ...

    def presigned_get(self, key: str, expires: int = 900) -> str | None:
        """A URL that GETs the object without credentials for `expires` seconds, or None when the
        store cannot presign (the filesystem)."""
        ...


#: Called after an object is durably created or removed, in stores that do not notify by themselves
#: (the filesystem). S3 notifies through its own bucket notifications instead.
Notify = Callable[[ObjectEvent], None]
