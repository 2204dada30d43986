"""WADO-RS frames (PS3.18 10.4.1.1.4): `.../instances/{sop}/frames/1,3,5` as multipart/related.

Native frames are application/octet-stream (little endian); compressed frames go as stored with
their media type (image/jls, image/jp2, …) unless only octet-stream is accepted, when they are
decoded. Every part names its `transfer-syntax`. The body is streamed frame by frame (one frame in
memory at a time) and never compressed; a frame list names each frame once (else 400). One
`FrameService` per app keeps the parsed pixel layouts, so
that the next frame of an object skips the header parse.
"""

from __future__ import annotations

import threading
import weakref

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pacs.dicom.multipart import multipart_stream, new_boundary
from pacs.dicom.uids import check_uid
from pacs.services.frames import OCTET_STREAM, FrameService, Wanted, parse_frame_list
from pacs.services.retrieve import RetrieveService

from functions.dicomweb.context import services
from functions.dicomweb.wado import NotAcceptable, media_ranges

router = APIRouter()

_IMAGE_TYPES = {OCTET_STREAM, "image/jpeg", "image/jls", "image/jp2", "image/jpx", "image/jphc",
                "image/jxl", "image/dicom-rle", "image/x-dicom-rle", "image/x-jls", "*/*"}


def wanted_forms(accept: str | None) -> list[Wanted] | None:
    """The acceptable part forms of an Accept header, best first; None means any (as stored)."""
    if not accept:
        return None
    wanted = []
    for media, params in media_ranges(accept):
        if media in ("*/*", "multipart/*"):
            part = "*/*"
        elif media == "multipart/related":
            part = params.get("type", "*/*").lower()
        else:  # a bare part type: not in PS3.18 for frames, tolerated
            part = media
        if part not in _IMAGE_TYPES:
            continue
        part = {"*/*": "*", "image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}.get(
            part, part)
        default = "1.2.840.10008.1.2.1" if part == OCTET_STREAM else "*"
        wanted.append(Wanted(part, params.get("transfer-syntax", default)))
    if not wanted:
        raise NotAcceptable(
            f'cannot answer {accept!r}: frames are multipart/related; type="application/octet-stream" '
            "or an image media type"
        )
    return wanted


_frame_services: weakref.WeakKeyDictionary[RetrieveService, FrameService] = weakref.WeakKeyDictionary()
_frame_services_lock = threading.Lock()


def frame_service(retrieve: RetrieveService) -> FrameService:
    """The FrameService (and so the layout cache) of an app's retrieve service, made once."""
    found = _frame_services.get(retrieve)
    if found is None:
        with _frame_services_lock:
            found = _frame_services.get(retrieve)
            if found is None:
                found = _frame_services[retrieve] = FrameService(retrieve)
    return found


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame_list}")
def retrieve_frames(
    request: Request, study: str, series: str, instance: str, frame_list: str
) -> StreamingResponse:
    check_uid(study, "StudyInstanceUID")
    check_uid(series, "SeriesInstanceUID")
    check_uid(instance, "SOPInstanceUID")
    numbers = parse_frame_list(frame_list)
    wanted = wanted_forms(request.headers.get("accept"))
    result = frame_service(services(request).retrieve).frames(study, series, instance, numbers, wanted)
    boundary = new_boundary()
    return StreamingResponse(
        multipart_stream(([frame] for frame in result.frames), boundary, result.content_type),
        media_type=f'multipart/related; type="{result.media_type}"; boundary={boundary}',
    )
