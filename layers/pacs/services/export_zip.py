"""A ZIP of exported files, streamed: read from the store a chunk at a time, written into one object
of the store (an S3 multipart upload; on the filesystem a spool file linked into place). The whole
archive is never in memory: zipfile writes to a sink that the generator empties after every chunk
(entries carry data descriptors, as on any unseekable stream)."""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from pacs.services.s3_stream import upload_s3
from pacs.storage.port import BlobStore

PART_SIZE = 8 << 20
#: Deflate at level 1: about half the size of uncompressed images, at well over 50 MB/s.
COMPRESS_LEVEL = 1


class _Sink:
    """A write-only, unseekable file whose written bytes are taken out by `take`."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> Iterator[bytes]:
        parts, self._parts = self._parts, []
        if parts:
            yield b"".join(parts)


def zip_stream(store: BlobStore, entries: Iterable[tuple[str, str, int]]) -> Iterator[bytes]:
    """The ZIP of `entries` (key in the store, name in the archive, size), in pieces."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL,
                         allowZip64=True) as zf:  # type: ignore[call-overload]
        for key, name, size in entries:
            with zf.open(name, "w", force_zip64=size > 0x7FFF0000) as w:
                for chunk in store.iter_chunks(key):
                    w.write(chunk)
                    yield from sink.take()
            yield from sink.take()
    yield from sink.take()


def write_stream(store: BlobStore, key: str, data: Iterable[bytes], *, content_type: str = "application/zip",
                 spool_dir: Path | None = None) -> int:
    """Write a stream as one object at `key`; its size."""
    from pacs.storage.s3 import S3BlobStore  # boto3 only where S3 is used

    if isinstance(store, S3BlobStore):
        size = 0

        def counted() -> Iterator[bytes]:
            nonlocal size
            for chunk in data:
                size += len(chunk)
                yield chunk

        upload_s3(store, key, counted(), content_type, part_size=PART_SIZE)
        return size
    if spool_dir is not None:
        spool_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=spool_dir, prefix="export-", suffix=".zip") as spool:
        for chunk in data:
            spool.write(chunk)
        spool.flush()
        return store.put_file(key, Path(spool.name), content_type=content_type).size
