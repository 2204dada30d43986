"""WADO-RS retrieve (PS3.18 10.4): study, series, instance as multipart/related application/dicom.

The Accept header says which transfer syntaxes are acceptable (`transfer-syntax=` on each media
range, with q-values): the highest q the server can produce wins; at equal q the stored syntax, then
an existing derived copy, then lossless before lossy (`pacs.services.syntax`). `transfer-syntax=*`,
`*/*` and no Accept header mean as stored; `application/dicom` without the parameter means Explicit VR
Little Endian (PS3.18 8.7.3.4), except that lossy pixels, and pixels no codec here decodes, go as
stored. An instance not stored in the chosen syntax is transcoded once and kept as a derived copy;
each part names its `transfer-syntax`; the copies of a series or study are made by a pool (one thread per
core) a few instances ahead of the one being sent. Objects are streamed from the store in 1 MiB pieces,
one at a time (never a whole study in memory). Instances of a series or study that cannot be produced are
left out: 206 with a `Warning: 299` naming them and why; none at all is 406 with the reason.

A body larger than `max_inline_response` (set on Lambda, whose buffered responses are limited to
6 MB) is never truncated: when the store can presign (S3) and every instance goes as stored, it is
pre-packed there once (`pacs.services.packed`) and answered with `303 See Other` to a presigned GET of
it. Otherwise (filesystem, no limit, or transcoded parts) it is streamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pacs.catalog.records import InstanceRow
from pacs.codecs import TranscodeError
from pacs.dicom.multipart import multipart_parts, new_boundary
from pacs.dicom.uids import check_uid
from pacs.errors import NotFound, PacsError
from pacs.services.packed import packed_url
from pacs.services.syntax import ANY, Acceptable, Ahead, Choice, Plan, SyntaxService, default_acceptable

from functions.dicomweb.context import services

router = APIRouter()
PartT = TypeVar("PartT")
DICOM = "application/dicom"


class NotAcceptable(PacsError):
    http_status = 406


def weighted_ranges(accept: str) -> list[tuple[str, dict[str, str], float]]:
    """Each media range of an Accept header as (media type, parameters, q), best q first (stable),
    q=0 dropped."""
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
            ranges.append((media.lower(), params, q))
    ranges.sort(key=lambda r: -r[2])
    return ranges


def media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """Each media range of an Accept header as (media type, parameters), best q first, q=0 dropped."""
    return [(m, p) for m, p, _ in weighted_ranges(accept)]


def acceptable_syntaxes(accept: str | None) -> list[Acceptable] | None:
    """The transfer syntaxes acceptable for application/dicom parts, with their q-values; None (no
    Accept) means as stored. `transfer-syntax=*` and wildcard ranges accept the stored syntax; no
    parameter means Explicit VR Little Endian (PS3.18 8.7.3.4, `default_acceptable`)."""
    if not accept:
        return None
    wanted: list[Acceptable] = []
    for media, params, q in weighted_ranges(accept):
        if media in ("*/*", "multipart/*"):
            wanted.append(Acceptable(ANY, q))
            continue
        if media == "multipart/related":
            if params.get("type", "application/dicom").lower() not in ("application/dicom", "*/*"):
                continue
        elif media != "application/dicom":
            continue
        ts = params.get("transfer-syntax")
        wanted.append(default_acceptable(q) if not ts else Acceptable(ANY if ts == "*" else ts, q))
    if not wanted:
        raise NotAcceptable(
            f'cannot answer {accept!r}: this resource is multipart/related; type="application/dicom"'
        )
    return wanted


def _warning(plan: Plan) -> dict[str, str]:
    """A Warning header (RFC 7234 299) naming the instances left out, and why."""
    if not plan.skipped:
        return {}
    reasons = "; ".join(dict.fromkeys(reason for _, reason in plan.skipped))
    text = f"{len(plan.skipped)} instance(s) not sent: {reasons}"
    safe = text.encode("ascii", "replace").decode()[:900].replace('"', "'")
    return {"Warning": f'299 pacs "{safe}"'}


def _respond(request: Request, rows: list[InstanceRow]) -> Response:
    svc = services(request)
    syntaxes = SyntaxService(svc.retrieve)
    plan = syntaxes.plan(rows, acceptable_syntaxes(request.headers.get("accept")))
    settings = svc.backend.settings
    store = svc.retrieve.store
    if settings.max_inline_response > 0 and (plan.as_stored or store.presigned_get(rows[0].key, 60)):
        # Where answers are size-limited (Lambda) and the store presigns: the copies are all made
        # first (one instance in memory at a time), then packed like stored objects.
        packed = [r for r, _ in plan.parts] if plan.as_stored else _copies(syntaxes, plan)
        url = packed_url(
            store, svc.retrieve.partition, rows[0].study_uid, packed, svc.retrieve.chunks,
            max_inline=settings.max_inline_response, expires=settings.presign_expires,
        )
        if url is not None:  # the presigned URL expires: never cache the redirect
            headers = {**_warning(plan), "Location": url, "Cache-Control": "no-store"}
            return Response(status_code=303, headers=headers)
    # The copies are made by a pool a few instances ahead of the one being sent, in order. The first
    # part to transcode is made before the answer starts: an instance a codec fails on there is left
    # out (or, when it is the last one left, a 406 with the reason), not a body cut short.
    ahead = syntaxes.ahead(plan.parts)
    offset = 0  # the parts left out so far: plan.parts[0] is part `offset` of `ahead`
    while plan.parts and plan.parts[0][1].source == "transcode":
        row, first = plan.parts[0]
        try:
            plan.parts[0] = (row, Choice(first.syntax, "derived", ahead.key(offset)))
        except TranscodeError as exc:
            plan.parts.pop(0)
            offset += 1
            plan.skipped.append((row, f"cannot make {row.sop_uid} in {first.syntax}: {exc}"))
    if not plan.parts:
        ahead.close()
        raise NotAcceptable("; ".join(dict.fromkeys(reason for _, reason in plan.skipped)))
    boundary = new_boundary()
    parts = (
        (f"{DICOM}; transfer-syntax={choice.syntax}", _chunks(syntaxes, ahead, index, row, choice))
        for index, (row, choice) in enumerate(plan.parts, offset)
    )
    return StreamingResponse(
        multipart_parts(_closing(parts, ahead), boundary), status_code=206 if plan.skipped else 200,
        headers=_warning(plan), media_type=f'multipart/related; type="{DICOM}"; boundary={boundary}',
    )


def _chunks(
    syntaxes: SyntaxService, ahead: Ahead, index: int, row: InstanceRow, choice: Choice
) -> Iterator[bytes]:
    """The bytes of one part, its copy taken from `ahead` (made there, or being made) when it is asked."""
    if choice.source == "transcode":
        choice = Choice(choice.syntax, "derived", ahead.key(index))
    yield from syntaxes.chunks(row, choice)


def _closing(parts: Iterator[PartT], ahead: Ahead) -> Iterator[PartT]:
    """`parts`, the copies not started cancelled when the stream ends (or the client goes)."""
    try:
        yield from parts
    finally:
        ahead.close()


def _copies(syntaxes: SyntaxService, plan: Plan) -> list[InstanceRow]:
    """The rows of the objects to send, derived copies made: each names its copy's key and size. An
    instance a codec fails on is moved to `plan.skipped`; none left is a 406 with the reasons."""
    out, kept = [], []
    ahead = syntaxes.ahead(plan.parts)
    for index, (row, choice) in enumerate(plan.parts):
        if choice.source == "stored":
            out.append(row)
            kept.append((row, choice))
            continue
        try:
            key = ahead.key(index)
        except TranscodeError as exc:
            plan.skipped.append((row, f"cannot make {row.sop_uid} in {choice.syntax}: {exc}"))
            continue
        info = syntaxes.retrieve.store.head(key)
        if info is None:
            raise NotFound(f"the derived copy {key} vanished; ask again")
        out.append(replace(row, key=key, etag=info.etag, size=info.size, version_id=info.version_id,
                           transfer_syntax_uid=choice.syntax))
        kept.append((row, Choice(choice.syntax, "derived", key)))
    if not out:
        raise NotAcceptable("; ".join(dict.fromkeys(reason for _, reason in plan.skipped)))
    plan.parts = kept
    return out


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
