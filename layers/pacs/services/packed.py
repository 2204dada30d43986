"""Pre-packed WADO-RS bodies: responses too large to answer inline (Lambda: 6 MB of JSON, about
4.5 MB of binary after base64) are written once to the object store and served by a presigned GET.

    {partition}/derived/{study}/packed/{digest}.multipart

The digest covers the ordered keys and ETags of the parts, the boundary and the media type, so a
packed body is reused as long as its content is current and never served once an instance changes.
The boundary is derived from the same content, so the same request packs the same bytes. Packed
objects are under derived/: never indexed; a bucket lifecycle rule should expire them (infra).

Uploads stream: S3 multipart upload of 8 MiB parts (one part buffered at a time); other stores get
a spooled temporary file.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pacs.catalog.records import InstanceRow
from pacs.dicom.multipart import multipart_stream
from pacs.dicom.uids import check_uid
from pacs.errors import StorageFailure
from pacs.services.s3_stream import upload_s3
from pacs.storage.keys import check_partition
from pacs.storage.port import BlobStore

#: S3 multipart part size (the minimum is 5 MiB for every part but the last).
PART_SIZE = 8 << 20
#: What stays in memory of a spooled body before it goes to disk (stores without S3 multipart).
SPOOL_MEMORY = 8 << 20

Chunks = Callable[[InstanceRow], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class Packing:
    """One multipart body: where it is packed, its boundary and Content-Type, and its exact size."""

    key: str
    boundary: str
    content_type: str
    size: int


#: Pre-packed bodies are caches: the deployment's lifecycle rule on the derived bucket expires objects
#: under `{partition}/derived/` carrying this tag (infra/storage.py) a day after they were written.
TRANSIENT_TAGGING = "pacs-lifecycle=transient"


def part_head(boundary: str, media_type: str) -> bytes:
    """The delimiter and headers before each part (as `multipart_stream` writes them)."""
    return f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode()


def body_size(sizes: Iterable[int], boundary: str, media_type: str) -> int:
    """The exact size of the multipart body of parts of these sizes."""
    head = len(part_head(boundary, media_type))
    return sum(head + s + 2 for s in sizes) + len(f"--{boundary}--\r\n")


def packing(
    partition: str, study_uid: str, rows: list[InstanceRow], media_type: str = "application/dicom"
) -> Packing:
    """The packing of these rows, in this order (deterministic: the same rows give the same key)."""
    content = hashlib.sha256()
    for r in rows:
        content.update(f"{r.key}\0{r.etag}\n".encode())
    boundary = f"pacs-{content.hexdigest()[:32]}"
    digest = hashlib.sha256(content.digest() + f"\0{boundary}\0{media_type}".encode()).hexdigest()
    prefix = f"{check_partition(partition)}/derived/{check_uid(study_uid, 'StudyInstanceUID')}"
    return Packing(
        key=f"{prefix}/packed/{digest}.multipart",
        boundary=boundary,
        content_type=f'multipart/related; type="{media_type}"; boundary={boundary}',
        size=body_size((r.size for r in rows), boundary, media_type),
    )


def _exact(row: InstanceRow, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks of a part, checked against the catalogued size (the object changed otherwise)."""
    n = 0
    for chunk in chunks:
        n += len(chunk)
        yield chunk
    if n != row.size:
        raise StorageFailure(f"{row.key} has {n} bytes, the catalog says {row.size}: not packed")


def body(p: Packing, rows: list[InstanceRow], chunks: Chunks, media_type: str) -> Iterator[bytes]:
    return multipart_stream((_exact(r, chunks(r)) for r in rows), p.boundary, media_type)


def _upload_spooled(store: BlobStore, key: str, data: Iterable[bytes], content_type: str) -> None:
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY) as spool:
        for chunk in data:
            spool.write(chunk)
        spool.seek(0)
        store.put(key, spool, content_type=content_type)  # type: ignore[arg-type]


def pack(store: BlobStore, p: Packing, data: Iterable[bytes]) -> None:
    """Write the body to `p.key` with its multipart Content-Type, streaming."""
    from pacs.storage.s3 import S3BlobStore  # boto3 only where S3 is used

    if isinstance(store, S3BlobStore):
        upload_s3(store, p.key, data, p.content_type, part_size=PART_SIZE, tagging=TRANSIENT_TAGGING)
    else:
        _upload_spooled(store, p.key, data, p.content_type)


def packed_url(
    store: BlobStore,
    partition: str,
    study_uid: str,
    rows: list[InstanceRow],
    chunks: Chunks,
    *,
    max_inline: int,
    media_type: str = "application/dicom",
    expires: int = 900,
) -> str | None:
    """A presigned URL of the packed body when it exceeds `max_inline` (0: no limit) and the store
    can presign, packing it first unless already packed; None: answer inline."""
    if max_inline <= 0:
        return None
    p = packing(partition, study_uid, rows, media_type)
    if p.size <= max_inline:
        return None
    url = store.presigned_get(p.key, expires)
    if url is None:
        return None
    existing = store.head(p.key)
    if existing is None or existing.size != p.size:
        pack(store, p, body(p, rows, chunks, media_type))
    return url
