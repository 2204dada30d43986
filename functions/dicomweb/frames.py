"""WADO-RS frames (PS3.18 10.4.1.1.4): `.../instances/{sop}/frames/1,3,5` as multipart/related.

Native frames are application/octet-stream (little endian); compressed frames go as stored with
their media type (image/jls, image/jp2, …) unless only octet-stream is accepted, when they are
decoded. Every part names its `transfer-syntax`. The body is built whole (frames are small), with a
Content-Length and never compressed.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pacs.dicom.multipart import new_boundary
from pacs.dicom.uids import check_uid
from pacs.services.frames import OCTET_STREAM, FrameService, Wanted, parse_frame_list

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


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame_list}")
def retrieve_frames(request: Request, study: str, series: str, instance: str, frame_list: str) -> Response:
    check_uid(study, "StudyInstanceUID")
    check_uid(series, "SeriesInstanceUID")
    check_uid(instance, "SOPInstanceUID")
    numbers = parse_frame_list(frame_list)
    wanted = wanted_forms(request.headers.get("accept"))
    result = FrameService(services(request).retrieve).frames(study, series, instance, numbers, wanted)
    boundary = new_boundary()
    head = f"--{boundary}\r\nContent-Type: {result.content_type}\r\n\r\n".encode()
    body = b"".join(head + frame + b"\r\n" for frame in result.frames) + f"--{boundary}--\r\n".encode()
    return Response(
        body,
        media_type=f'multipart/related; type="{result.media_type}"; boundary={boundary}',
    )
