"""WADO-RS frames (PS3.18 10.4.1.1.4): `.../instances/{sop}/frames/1,3,5` as multipart/related.

Each media range of the Accept header (`multipart/related; type=…`, or a bare part type) names a part
media type (image/jls, image/jp2, image/jphc, image/jpeg, image/dicom-rle, application/octet-stream,
`*/*`) and an optional `transfer-syntax=` (else the default of PS3.18 Table 8.7.3-5), with a q-value.
The highest q that can be made wins; at equal q the stored frames, then a derived copy's, then a
per-frame decode to native, then a transcode (made once through the codec registry and kept as a
derived copy: `pacs.services.frames`). `application/octet-stream; transfer-syntax=*` (what OHIF asks)
sends the frames as stored, each part naming its own type. Every part names its `transfer-syntax`.
One frame asked with a bare image media type (`Accept: image/jls`) is answered single-part (PS3.18
8.6.1); everything else is multipart. The body is streamed frame by frame (one frame in memory at a
time) and never compressed; a frame list names each frame once (else 400). One `FrameService` per app
keeps the parsed pixel layouts, so that the next frame of an object skips the header parse.
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
from functions.dicomweb.wado import NotAcceptable, weighted_ranges

router = APIRouter()

_IMAGE_TYPES = {OCTET_STREAM, "image/jpeg", "image/jls", "image/jp2", "image/jpx", "image/jphc",
                "image/jxl", "image/dicom-rle", "image/x-dicom-rle", "image/x-jls", "*/*"}


def wanted_forms(accept: str | None) -> list[Wanted] | None:
    """The acceptable part forms of an Accept header, best first; None means any (as stored)."""
    return None if not accept else [w for w, _ in _forms(accept)]


def single_part(accept: str | None) -> set[str]:
    """The part media types an Accept header asks for bare (not inside multipart/related)."""
    return set() if not accept else {w.media_type for w, bare in _forms(accept) if bare}


def _forms(accept: str) -> list[tuple[Wanted, bool]]:
    wanted = []
    for media, params, q in weighted_ranges(accept):
        bare = False
        if media in ("*/*", "multipart/*"):
            part = "*/*"
        elif media == "multipart/related":
            part = params.get("type", "*/*").lower()
        else:  # a bare part type: a single-part answer when one frame is asked
            part, bare = media, True
        if part not in _IMAGE_TYPES:
            continue
        part = {"*/*": "*", "image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}.get(
            part, part)
        default = "1.2.840.10008.1.2.1" if part == OCTET_STREAM else "*"
        wanted.append((Wanted(part, params.get("transfer-syntax", default), q), bare and part != "*"))
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
    return _frames(request, study, series, instance, parse_frame_list(frame_list))


def all_frames(request: Request, study: str, series: str, instance: str) -> StreamingResponse:
    """Every frame of an instance (its Pixel Data bulk data asked in a syntax), one part each."""
    return _frames(request, study, series, instance, None)


def _frames(
    request: Request, study: str, series: str, instance: str, numbers: list[int] | None
) -> StreamingResponse:
    accept = request.headers.get("accept")
    wanted = wanted_forms(accept)
    result = frame_service(services(request).retrieve).frames(study, series, instance, numbers, wanted)
    if numbers is not None and len(numbers) == 1 and result.media_type in single_part(accept):
        return StreamingResponse(result.frames, media_type=result.content_type)
    boundary = new_boundary()
    return StreamingResponse(
        multipart_stream(([frame] for frame in result.frames), boundary, result.content_type),
        media_type=f'multipart/related; type="{result.media_type}"; boundary={boundary}',
    )
