"""WADO-RS rendered and thumbnail resources (PS3.18 10.4.1.1.3, 8.3.5.1): one image per request.

`…/rendered` and `…/thumbnail` of a study, series, instance or frame (one frame number) answer
`image/jpeg` (the default, also for `*/*` and `image/*`) or `image/png`, chosen by Accept with
q-values or the `accept` query parameter; anything else is 406. Parameters: `window=c,w[,function]`,
`viewport=vw,vh[,sx,sy,sw,sh]`, `quality=1..100` (JPEG), `annotation` (ignored). A thumbnail fits
in 128×128 unless a viewport is given. A study or series renders its representative instance
(`pacs.services.rendered`); a multi-frame instance its first frame.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from pacs.dicom.render import (
    DEFAULT_QUALITY,
    JPEG,
    PNG,
    THUMBNAIL_SIZE,
    RenderOptions,
    Viewport,
    parse_quality,
    parse_viewport,
    parse_window,
)
from pacs.dicom.uids import check_uid
from pacs.services.frames import BadFrameList, parse_frame_list
from pacs.services.rendered import RenderService

from functions.dicomweb.context import services
from functions.dicomweb.wado import NotAcceptable, media_ranges

router = APIRouter()


def rendered_type(accept: str | None) -> str:
    """image/jpeg or image/png, the first acceptable by an Accept value; NotAcceptable otherwise."""
    if not accept:
        return JPEG
    for media, _ in media_ranges(accept):
        if media in (JPEG, PNG):
            return media
        if media in ("*/*", "image/*"):
            return JPEG
    raise NotAcceptable(f"cannot answer {accept!r}: rendered images are image/jpeg or image/png")


def options(request: Request, thumbnail: bool) -> RenderOptions:
    """The rendering options of a request: media type and the query parameters."""
    q = request.query_params
    accept = q.get("accept") or request.headers.get("accept")
    window = q.get("window")
    viewport = q.get("viewport")
    quality = q.get("quality")
    return RenderOptions(
        media_type=rendered_type(accept),
        window=parse_window(window) if window is not None else None,
        viewport=parse_viewport(viewport) if viewport is not None
        else Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE) if thumbnail else None,
        quality=parse_quality(quality) if quality is not None else DEFAULT_QUALITY,
    )


Make = Callable[[RenderService, RenderOptions], bytes]


def _image(request: Request, make: Make, thumbnail: bool) -> Response:
    opts = options(request, thumbnail)
    body = make(RenderService(services(request).retrieve), opts)
    return Response(body, media_type=opts.media_type)  # Content-Length from the body


def _study(request: Request, study: str, thumbnail: bool) -> Response:
    check_uid(study, "StudyInstanceUID")
    return _image(request, lambda svc, o: svc.study(study, o), thumbnail)


def _series(request: Request, study: str, series: str, thumbnail: bool) -> Response:
    check_uid(study, "StudyInstanceUID")
    check_uid(series, "SeriesInstanceUID")
    return _image(request, lambda svc, o: svc.series(study, series, o), thumbnail)


def _instance(
    request: Request, study: str, series: str, instance: str, thumbnail: bool, frame_list: str = "1"
) -> Response:
    check_uid(study, "StudyInstanceUID")
    check_uid(series, "SeriesInstanceUID")
    check_uid(instance, "SOPInstanceUID")
    numbers = parse_frame_list(frame_list)
    if len(numbers) != 1:
        raise BadFrameList(f"a rendered frame takes one frame number, not {len(numbers)} ({frame_list!r})")
    return _image(request, lambda svc, o: svc.instance(study, series, instance, o, numbers[0]), thumbnail)


@router.get("/studies/{study}/rendered")
def study_rendered(request: Request, study: str) -> Response:
    return _study(request, study, thumbnail=False)


@router.get("/studies/{study}/thumbnail")
def study_thumbnail(request: Request, study: str) -> Response:
    return _study(request, study, thumbnail=True)


@router.get("/studies/{study}/series/{series}/rendered")
def series_rendered(request: Request, study: str, series: str) -> Response:
    return _series(request, study, series, thumbnail=False)


@router.get("/studies/{study}/series/{series}/thumbnail")
def series_thumbnail(request: Request, study: str, series: str) -> Response:
    return _series(request, study, series, thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{instance}/rendered")
def instance_rendered(request: Request, study: str, series: str, instance: str) -> Response:
    return _instance(request, study, series, instance, thumbnail=False)


@router.get("/studies/{study}/series/{series}/instances/{instance}/thumbnail")
def instance_thumbnail(request: Request, study: str, series: str, instance: str) -> Response:
    return _instance(request, study, series, instance, thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame_list}/rendered")
def frame_rendered(request: Request, study: str, series: str, instance: str, frame_list: str) -> Response:
    return _instance(request, study, series, instance, False, frame_list)


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame_list}/thumbnail")
def frame_thumbnail(request: Request, study: str, series: str, instance: str, frame_list: str) -> Response:
    return _instance(request, study, series, instance, True, frame_list)
