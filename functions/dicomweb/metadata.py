"""WADO-RS metadata and bulk data (PS3.18 10.4.1.1.2, 10.4.1.1.3).

Series metadata is one object-store read of the precomputed gzip'd array (see
`pacs.services.metadata`); its stored relative BulkDataURIs are made absolute with the base URL the
client used. The ETag is a hash of the stored bytes; `If-None-Match` with it gives 304. Bulk data is
read from the stored original at the offset its element headers give, with `Range` support on the
single-part application/octet-stream form. Pixel Data (7FE00010) asked as an image media type or with
a `transfer-syntax=` parameter (other than `*`) is answered like its frames, every frame a part in
the syntax negotiated as for frames (`functions.dicomweb.frames`): transcoded and cached when needed.
"""

from __future__ import annotations

import gzip
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pacs.dicom.multipart import multipart_stream, new_boundary
from pacs.dicom.uids import check_uid
from pacs.services.metadata import (
    BulkValue,
    MetadataService,
    absolutize,
    strong_etag,
)

from functions.dicomweb.context import DICOM_JSON, dicomweb_url, services
from functions.dicomweb.frames import all_frames
from functions.dicomweb.wado import NotAcceptable, media_ranges

router = APIRouter()

OCTET_STREAM = "application/octet-stream"
_JSON_TYPES = frozenset({DICOM_JSON, "application/json", "*/*", "application/*"})
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
PIXEL_DATA = "7FE00010"


def _metadata_service(request: Request) -> MetadataService:
    svc = services(request)
    return MetadataService(svc.backend.store, svc.backend.catalog, svc.backend.settings.partition)


def _check_json_accept(request: Request) -> None:
    accept = request.headers.get("accept")
    if accept and not any(m in _JSON_TYPES for m, _ in media_ranges(accept)):
        raise NotAcceptable(f"cannot answer {accept!r}: metadata is {DICOM_JSON}")


def _accepts_gzip(request: Request) -> bool:
    for item in request.headers.get("accept-encoding", "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().removeprefix("q=")
            try:
                return not params or float(q) > 0
            except ValueError:
                return True
    return False


def _base(request: Request) -> str:
    return dicomweb_url(request) + "/"


def _not_modified(request: Request, etag: str) -> bool:
    wanted = request.headers.get("if-none-match")
    if not wanted:
        return False
    tags = {t.strip().removeprefix("W/") for t in wanted.split(",")}
    return "*" in tags or etag in tags


class _Rendered:
    """Responses made from stored metadata, by (ETag, base URL, gzip): a series' metadata is then
    rewritten and compressed once per client base URL, not on every read (bounded LRU)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.items: OrderedDict[tuple[str, str, bool], bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, str, bool], make: Callable[[], bytes]) -> bytes:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        data = make()
        with self.lock:
            self.items[key] = data
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return data


_rendered = _Rendered()


def _render(body: bytes, base: str, gz: bool) -> bytes:
    data = absolutize(body, base)
    return gzip.compress(data, compresslevel=1) if gz else data


def _json_response(
    request: Request, body: bytes, etag: str | None = None, *, compressed: bool = False
) -> Response:
    """`body` (JSON with relative URIs; gzip'd when `compressed`) made absolute, gzip'd when the client
    accepts it. With an ETag the result is cached, so the stored body is only unpacked once."""
    headers = {"Vary": "Accept-Encoding"}
    if etag is not None:
        headers["ETag"] = etag
        if _not_modified(request, etag):
            return Response(status_code=304, headers=headers)
    gz = _accepts_gzip(request) and (compressed or len(body) > 1024)
    base = _base(request)

    def make() -> bytes:
        return _render(gzip.decompress(body) if compressed else body, base, gz)

    data = _rendered.get((etag, base, gz), make) if etag is not None else make()
    if gz:
        headers["Content-Encoding"] = "gzip"
    return Response(data, media_type=DICOM_JSON, headers=headers)


@router.get("/studies/{study}/series/{series}/metadata")
def series_metadata(request: Request, study: str, series: str) -> Response:
    check_uid(study, "StudyInstanceUID")
    check_uid(series, "SeriesInstanceUID")
    _check_json_accept(request)
    stored = _metadata_service(request).series_metadata(study, series)
    etag = strong_etag(stored)
    if _not_modified(request, etag):
        return Response(status_code=304, headers={"ETag": etag, "Vary": "Accept-Encoding"})
    return _json_response(request, stored, etag, compressed=True)


@router.get("/studies/{study}/metadata")
def study_metadata(request: Request, study: str) -> Response:
    check_uid(study, "StudyInstanceUID")
    _check_json_accept(request)
    svc = _metadata_service(request)
    arrays = [gzip.decompress(svc.series_metadata(study, s)) for s in svc.study_series(study)]
    body = b"[" + b",".join(a[1:-1] for a in arrays if len(a) > 2) + b"]"
    return _json_response(request, body, strong_etag(body))


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata")
def instance_metadata(request: Request, study: str, series: str, instance: str) -> Response:
    check_uid(study, "StudyInstanceUID")
    check_uid(series, "SeriesInstanceUID")
    check_uid(instance, "SOPInstanceUID")
    _check_json_accept(request)
    doc = _metadata_service(request).instance_metadata(study, series, instance)
    body = b"[" + doc + b"]"
    return _json_response(request, body, strong_etag(body))


def _asks_a_syntax(accept: str | None) -> bool:
    """True when an Accept header names an image media type or a transfer syntax for bulk data."""
    for media, params in media_ranges(accept or ""):
        part = params.get("type", "").lower() if media == "multipart/related" else media
        if part.startswith("image/") or params.get("transfer-syntax", "*") != "*":
            return True
    return False


def _bulk_form(accept: str | None) -> str:
    """"single" (application/octet-stream) or "multipart" (multipart/related; type=octet-stream)."""
    if not accept:
        return "single"
    for media, params in media_ranges(accept):
        if media in (OCTET_STREAM, "*/*", "application/*"):
            return "single"
        kind = params.get("type", OCTET_STREAM).lower()
        if media in ("multipart/related", "multipart/*") and kind in (OCTET_STREAM, "*/*", "application/*"):
            return "multipart"
    raise NotAcceptable(f"cannot answer {accept!r}: bulk data is {OCTET_STREAM}")


def _range(header: str | None, length: int) -> tuple[int, int] | None:
    """[start, end) of a single `Range: bytes=a-b` (suffix form too); None for the whole value."""
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None or (not m[1] and not m[2]):
        return None  # multiple or unknown ranges: the whole value (RFC 9110 allows ignoring Range)
    if not m[1]:
        return max(0, length - int(m[2])), length
    start = int(m[1])
    end = min(int(m[2]) + 1, length) if m[2] else length
    return start, end


@router.get("/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path:path}")
def bulkdata(request: Request, study: str, series: str, instance: str, path: str) -> Response:
    check_uid(study, "StudyInstanceUID")
    check_uid(series, "SeriesInstanceUID")
    check_uid(instance, "SOPInstanceUID")
    accept = request.headers.get("accept")
    if path.strip("/").upper() == PIXEL_DATA and _asks_a_syntax(accept):
        return all_frames(request, study, series, instance)
    form = _bulk_form(accept)
    svc = _metadata_service(request)
    value: BulkValue = svc.locate_bulk(study, series, instance, path)
    if form == "multipart":
        boundary = new_boundary()
        parts: Iterator[Iterator[bytes]] = iter([svc.bulk_chunks(value, 0, value.length)])
        return StreamingResponse(
            multipart_stream(parts, boundary, OCTET_STREAM),
            media_type=f'multipart/related; type="{OCTET_STREAM}"; boundary={boundary}',
        )
    wanted = _range(request.headers.get("range"), value.length)
    headers = {"Accept-Ranges": "bytes"}
    if wanted is None:
        headers["Content-Length"] = str(value.length)
        return StreamingResponse(svc.bulk_chunks(value, 0, value.length), media_type=OCTET_STREAM,
                                 headers=headers)
    start, end = wanted
    if start >= end or start >= value.length:
        headers["Content-Range"] = f"bytes */{value.length}"
        return Response(status_code=416, headers=headers)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{value.length}"
    headers["Content-Length"] = str(end - start)
    return StreamingResponse(svc.bulk_chunks(value, start, end), status_code=206, media_type=OCTET_STREAM,
                             headers=headers)
