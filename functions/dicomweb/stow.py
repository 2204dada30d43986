"""STOW-RS (PS3.18 10.5): `POST /studies[/{study}]` with a multipart/related body of Part 10 instances
(`type="application/dicom"`) or of DICOM JSON metadata with bulk data (`type="application/dicom+json"`).

The body is streamed: each part goes through the push parser into its own spool file (beside the
objects when embedded). Part 10 parts go through the same ingest path as the C-STORE gateway (a few
at once while the next parts arrive), and a part is stored only once its closing delimiter has
arrived, so a truncated body never half-stores its last part. Every stored instance is indexed
before the answer lists it (read-your-writes: its RetrieveURL, QIDO-RS and DELETE work at once).
With JSON metadata the JSON parts are kept in memory (at most `MAX_METADATA_BYTES`, else 413) and
the bulk data parts spooled by Content-Location; once the whole body has arrived, every instance is
rebuilt as a Part 10 file (`pacs.services.stow_json`) and goes through the same ingest path; a
malformed body stores nothing. The answer is the store response data
set of PS3.18 Table 10.5.3-1: 200 all stored, 202 some failed, 409 none stored, 400 malformed body,
413 metadata too large, 415 unsupported media type (application/dicom+xml among them).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeAlias

import orjson
from fastapi import APIRouter, Request, Response
from pacs.backends import ingest_service
from pacs.dicom.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartHeaders,
    parse_content_type,
)
from pacs.dicom.part10 import Part10Header
from pacs.dicom.uids import check_uid
from pacs.errors import PacsError, StorageFailure
from pacs.services.ingest import IngestService
from pacs.services.stow_json import (
    JSON_TYPES,
    MAX_METADATA_BYTES,
    BulkData,
    BulkPart,
    MetadataTooLarge,
    instance_uids,
    parse_metadata,
    rebuild_part10,
)
from starlette.concurrency import run_in_threadpool

from functions.dicomweb.context import DICOM_JSON, BadRequest, dicomweb_url, services

router = APIRouter()
log = logging.getLogger(__name__)

DICOM = "application/dicom"
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
_HEADER_UNSAFE = str.maketrans({'"': "'", "\r": " ", "\n": " ", "\\": "/"})


class UnsupportedMediaType(PacsError):
    """The request body is not multipart/related of application/dicom or application/dicom+json (415)."""

    http_status = 415


@dataclass(slots=True)
class _Failure:
    reason: int
    text: str
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None


@dataclass(slots=True)
class _Report:
    stored: list[Part10Header] = field(default_factory=list)
    failed: list[_Failure] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.stored) + len(self.failed)


def _ingest(ingest: IngestService, study: str | None, path: Path) -> Part10Header | _Failure:
    """Ingest one spooled part (in a worker thread): its header, or why it was not stored."""
    try:
        return ingest.ingest_file(path, study_uid=study).header
    except PacsError as exc:
        return _Failure(exc.dimse_status, exc.reason, exc.sop_class_uid, exc.sop_instance_uid)
    except Exception as exc:  # a fault of ours or of the store: report it, keep the other parts
        log.exception("STOW-RS: could not ingest a part")
        return _Failure(PROCESSING_FAILURE, f"processing failure: {exc}")


class _Spool:
    """The spool file of the part being received."""

    def __init__(self, directory: Path | None, suffix: str = ".dcm") -> None:
        try:
            fd, name = tempfile.mkstemp(prefix="stow-", suffix=suffix, dir=directory)
        except OSError as exc:
            raise StorageFailure(f"cannot spool the request: {exc.strerror or exc}") from exc
        self.path = Path(name)
        self.file: IO[bytes] = os.fdopen(fd, "wb")

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


def _request_type(content_type: str) -> tuple[str, str]:
    """(boundary, type of the root parts) of the request's content type."""
    media, params = parse_content_type(content_type)
    if media != "multipart/related":
        raise UnsupportedMediaType(
            f"STOW-RS takes multipart/related; type=\"{DICOM}\", not {media or 'no content type'}"
        )
    part_type = parse_content_type(params.get("type", DICOM))[0]
    if part_type == "application/dicom+xml":
        raise UnsupportedMediaType("STOW-RS of application/dicom+xml metadata is not supported "
                                   "(application/dicom+json metadata with bulk data is)")
    if part_type != DICOM and part_type not in JSON_TYPES:
        raise UnsupportedMediaType(
            f"STOW-RS takes multipart/related parts of {DICOM} or application/dicom+json, not {part_type}")
    boundary = params.get("boundary", "")
    if not boundary:
        raise BadRequest("the multipart/related content type has no boundary parameter")
    return boundary, part_type


Outcome: TypeAlias = Part10Header | _Failure
Ingest = Callable[[Path], Outcome]


#: Complete parts stored (and indexed, one at a time) while the body is still being received: the
#: in-request indexing (read-your-writes) overlaps the reading, spooling and storing of other parts.
IN_FLIGHT = 2



async def _receive(request: Request, boundary: str, ingest: Ingest, spool_dir: Path | None) -> _Report:
    """Stream the body part by part into spool files; ingest each complete part (up to IN_FLIGHT at
    once, in worker threads) while the next ones arrive. The report keeps the order of the parts."""
    parser = MultipartParser(boundary)
    outcomes: list[_Failure | asyncio.Task[Outcome]] = []
    slots = asyncio.Semaphore(IN_FLIGHT)
    spool: _Spool | None = None
    refused: str | None = None  # why the current part is not spooled (not application/dicom)
    malformed: str | None = None

    async def store(part: _Spool) -> Outcome:
        try:
            return await run_in_threadpool(ingest, part.path)
        finally:
            part.discard()
            slots.release()

    try:
        try:
            async for chunk in request.stream():
                for event in parser.feed(chunk):
                    if isinstance(event, PartData):
                        if spool is not None:
                            spool.file.write(event.data)
                    elif isinstance(event, PartHeaders):
                        media = parse_content_type(event.headers.get("content-type", DICOM))[0]
                        if media == DICOM:
                            spool, refused = _Spool(spool_dir), None
                        else:
                            refused = f"a part of type {media} is not {DICOM}"
                    elif isinstance(event, PartEnd):
                        if spool is None:
                            outcomes.append(_Failure(CANNOT_UNDERSTAND, refused or "no data"))
                            continue
                        spool.file.close()
                        await slots.acquire()
                        outcomes.append(asyncio.ensure_future(store(spool)))
                        spool = None
            parser.close()
        except MultipartError as exc:  # complete parts before it stand; the rest is not stored
            if not outcomes:
                raise BadRequest(f"malformed multipart body: {exc}") from None
            malformed = f"malformed multipart body: {exc}"
    finally:
        if spool is not None:
            spool.discard()
        # every complete part is stored (or refused) before the answer, whatever ended the body
        await asyncio.gather(*(o for o in outcomes if isinstance(o, asyncio.Task)), return_exceptions=True)
    report = _Report()
    for item in outcomes:
        outcome = item.result() if isinstance(item, asyncio.Task) else item
        if isinstance(outcome, _Failure):
            report.failed.append(outcome)
        else:
            report.stored.append(outcome)
    if malformed is not None:
        report.failed.append(_Failure(CANNOT_UNDERSTAND, malformed))
    if not report:
        raise BadRequest("the multipart body has no parts")
    return report


async def _receive_json(
    request: Request, boundary: str, root: str, ingest: Ingest, spool_dir: Path | None
) -> _Report:
    """Keep the JSON parts, spool the bulk data parts; once the body is complete, store every instance."""
    parser = MultipartParser(boundary)
    metadata: list[bytearray] = []
    size = 0
    bulk = BulkData(base=str(request.url))
    spools: list[_Spool] = []
    target: bytearray | _Spool | None = None
    part: tuple[str, BulkPart] | None = None  # (Content-Location, part) of the bulk part being received
    try:
        try:
            async for chunk in request.stream():
                for event in parser.feed(chunk):
                    if isinstance(event, PartData):
                        if isinstance(target, bytearray):
                            size += len(event.data)
                            if size > MAX_METADATA_BYTES:
                                raise MetadataTooLarge(
                                    f"the JSON metadata exceeds {MAX_METADATA_BYTES} bytes: send fewer "
                                    "instances per request")
                            target += event.data
                        elif target is not None:
                            target.file.write(event.data)
                    elif isinstance(event, PartHeaders):
                        media, params = parse_content_type(event.headers.get("content-type", root))
                        if media in JSON_TYPES:
                            target, part = bytearray(), None
                            metadata.append(target)
                        else:
                            target = _Spool(spool_dir, ".bulk")
                            spools.append(target)
                            location = event.headers.get("content-location", "")
                            part = (location, BulkPart(target.path, media, params.get("transfer-syntax")))
                    elif isinstance(event, PartEnd):
                        if isinstance(target, _Spool):
                            target.file.close()
                        if part is not None and part[0]:  # a part without a location cannot be named
                            bulk.add(*part)
                        target = part = None
            parser.close()
        except MultipartError as exc:  # nothing is stored before the body is complete
            raise BadRequest(f"malformed multipart body: {exc}") from None
        instances = parse_metadata(metadata)
        return await run_in_threadpool(_store_instances, instances, bulk, ingest, spool_dir)
    finally:
        for spool in spools:
            spool.discard()


def _store_instances(
    instances: list[object], bulk: BulkData, ingest: Ingest, spool_dir: Path | None
) -> _Report:
    """Rebuild each JSON instance as a Part 10 spool file and ingest it (in a worker thread)."""
    report = _Report()
    for obj in instances:
        spool: _Spool | None = None
        try:
            spool = _Spool(spool_dir)
            rebuild_part10(obj, bulk, spool.file)
            spool.file.close()
            outcome = ingest(spool.path)
        except PacsError as exc:
            outcome = _Failure(exc.dimse_status, exc.reason, exc.sop_class_uid, exc.sop_instance_uid)
        except Exception as exc:  # a fault of ours: report it, keep the other instances
            log.exception("STOW-RS: could not rebuild an instance from its JSON metadata")
            outcome = _Failure(PROCESSING_FAILURE, f"processing failure: {exc}", *instance_uids(obj))
        finally:
            if spool is not None:
                spool.discard()
        if isinstance(outcome, _Failure):
            report.failed.append(outcome)
        else:
            report.stored.append(outcome)
    return report


def _response(request: Request, report: _Report, study: str | None) -> Response:
    base = dicomweb_url(request) + "/studies"

    def ui(value: str) -> dict[str, object]:
        return {"vr": "UI", "Value": [value]}

    def url(value: str) -> dict[str, object]:
        return {"vr": "UR", "Value": [value]}

    body: dict[str, object] = {}
    studies = {h.study_uid for h in report.stored}
    target = study or (studies.pop() if len(studies) == 1 else None)
    if target is not None:
        body["00081190"] = url(f"{base}/{target}")
    if report.stored:
        body["00081199"] = {"vr": "SQ", "Value": [
            {"00081150": ui(h.sop_class_uid), "00081155": ui(h.sop_instance_uid),
             "00081190": url(f"{base}/{h.study_uid}/series/{h.series_uid}/instances/{h.sop_instance_uid}")}
            for h in report.stored
        ]}
    headers: dict[str, str] = {}
    if report.failed:
        items = []
        for f in report.failed:
            item: dict[str, object] = {"00081197": {"vr": "US", "Value": [f.reason]}}
            if f.sop_instance_uid is not None and f.sop_class_uid is not None:
                item["00081150"] = ui(f.sop_class_uid)
                item["00081155"] = ui(f.sop_instance_uid)
            items.append(item)
        body["00081198"] = {"vr": "SQ", "Value": items}
        host = request.url.hostname or "pacs"
        texts = "; ".join(dict.fromkeys(f.text for f in report.failed))
        safe = texts.encode("ascii", "replace").decode().translate(_HEADER_UNSAFE)
        headers["Warning"] = f'299 {host}: "{safe[:1000]}"'
    status = 200 if not report.failed else 202 if report.stored else 409
    return Response(orjson.dumps(body, option=orjson.OPT_SORT_KEYS), status_code=status,
                    media_type=DICOM_JSON, headers=headers)


async def _store(request: Request, study: str | None) -> Response:
    backend = services(request).backend
    # read-your-writes: indexed before it is listed; the parts stored in parallel, indexed in turn
    ingest = ingest_service(backend, index=True, serial_index=True)
    boundary, root = _request_type(request.headers.get("content-type", ""))
    one = functools.partial(_ingest, ingest, study)
    if root == DICOM:
        report = await _receive(request, boundary, one, backend.spool_dir)
    else:
        report = await _receive_json(request, boundary, root, one, backend.spool_dir)
    return _response(request, report, study)


@router.post("/studies")
async def store_instances(request: Request) -> Response:
    return await _store(request, None)


@router.post("/studies/{study}")
async def store_study_instances(request: Request, study: str) -> Response:
    check_uid(study, "StudyInstanceUID")
    return await _store(request, study)
