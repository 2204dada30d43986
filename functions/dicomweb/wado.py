"""WADO-RS retrieve (PS3.18 10.4): study, series, instance as multipart/related application/dicom.

Objects are sent as stored, streamed from the object store in 1 MiB pieces (never a whole study in
memory). An explicitly requested transfer syntax other than the stored one is 406 until the
transcoder exists.

A body larger than `max_inline_response` (set on Lambda, whose buffered responses are limited to
6 MB) is never truncated: when the store can presign (S3) it is pre-packed there once
(`pacs.services.packed`) and answered with `303 See Other` to a presigned GET of it. Otherwise
(filesystem, or no limit) it is streamed.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pacs.catalog.records import InstanceRow
from pacs.dicom.multipart import multipart_stream, new_boundary
from pacs.dicom.uids import check_uid
from pacs.errors import PacsError
from pacs.services.packed import packed_url

from functions.dicomweb.context import services

router = APIRouter()


class NotAcceptable(PacsError):
    http_status = 406


def media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """Each media range of an Accept header as (media type, parameters), best q first, q=0 dropped."""
    ranges = []
    for item in filter(None, (p.strip() for p in accept.split(","))):
        media, *fields = (f.strip() for f in item.split(";"))
        params = {}
        for f in fields:
            if "=" in f:
                k, v = f.split("=", 1)
                params[k.strip().lower()] = v.strip().strip('"')
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            ranges.append((q, media.lower(), params))
    ranges.sort(key=lambda r: -r[0])
    return [(m, p) for _, m, p in ranges]


def acceptable_syntaxes(accept: str | None) -> set[str] | None:
    """Transfer syntaxes acceptable for application/dicom parts; None means any (sent as stored)."""
    if not accept:
        return None
    wanted: set[str] = set()
    for media, params in media_ranges(accept):
        if media in ("*/*", "multipart/*"):
            return None
        if media == "multipart/related":
            if params.get("type", "application/dicom").lower() not in ("application/dicom", "*/*"):
                continue
        elif media != "application/dicom":
            continue
        ts = params.get("transfer-syntax", "*")
        if ts == "*":
            return None
        wanted.add(ts)
    if not wanted:
        raise NotAcceptable(
            f'cannot answer {accept!r}: this resource is multipart/related; type="application/dicom"'
        )
    return wanted


def _respond(request: Request, rows: list[InstanceRow]) -> Response:
    wanted = acceptable_syntaxes(request.headers.get("accept"))
    if wanted is not None:
        odd = sorted({r.transfer_syntax_uid for r in rows} - wanted)
        if odd:
            raise NotAcceptable(
                f"stored as {', '.join(odd)}; transcoding to {', '.join(sorted(wanted))} is not available"
            )
    svc = services(request)
    settings = svc.backend.settings
    url = packed_url(
        svc.retrieve.store, svc.retrieve.partition, rows[0].study_uid, rows, svc.retrieve.chunks,
        max_inline=settings.max_inline_response, expires=settings.presign_expires,
    )
    if url is not None:  # the presigned URL expires: never cache the redirect
        return Response(status_code=303, headers={"Location": url, "Cache-Control": "no-store"})
    boundary = new_boundary()
    parts: Iterator[Iterator[bytes]] = (svc.retrieve.chunks(r) for r in rows)
    return StreamingResponse(
        multipart_stream(parts, boundary, "application/dicom"),
        media_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


@router.get("/studies/{study}")
def retrieve_study(request: Request, study: str) -> Response:
    check_uid(study, "StudyInstanceUID")
    return _respond(request, services(request).retrieve.instances(study))


@router.get("/studies/{study}/series/{series}")
def retrieve_series(request: Request, study: str, series: str) -> Response:
    check_uid(study, "StudyInstanceUID")
    check_uid(series, "SeriesInstanceUID")
    return _respond(request, services(request).retrieve.instances(study, series))


@router.get("/studies/{study}/series/{series}/instances/{instance}")
def retrieve_instance(request: Request, study: str, series: str, instance: str) -> Response:
    check_uid(study, "StudyInstanceUID")
    check_uid(series, "SeriesInstanceUID")
    check_uid(instance, "SOPInstanceUID")
    return _respond(request, services(request).retrieve.instances(study, series, instance))
