"""WADO-URI (PS3.18 §9): `GET /wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…`.

For the older viewers and reporting systems that still use it. `contentType=application/dicom` returns
the stored object as is, or with `transferSyntax` in that syntax when a codec here can produce it (from
a derived copy, made once: `pacs.services.syntax`; 406 with the reason otherwise);
`image/jpeg` (the default) and `image/png` return the rendered image through the same service as
WADO-RS rendered, with `windowCenter`/`windowWidth`, `rows`/`columns`, `imageQuality`, `frameNumber`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pacs.codecs import TranscodeError
from pacs.dicom.render import (
    DEFAULT_QUALITY,
    JPEG,
    PNG,
    RenderOptions,
    Viewport,
    parse_quality,
    parse_window,
)
from pacs.dicom.uids import check_uid
from pacs.services.rendered import RenderService
from pacs.services.syntax import Acceptable, Choice, SyntaxService
from starlette.datastructures import QueryParams

from functions.dicomweb.context import BadRequest, services
from functions.dicomweb.wado import NotAcceptable

router = APIRouter()
DICOM = "application/dicom"
#: The free side of a rows-only or columns-only request (the rendered service caps sizes at 4096).
MAX_SIDE = 4096


def _int(q: QueryParams, name: str, default: int) -> int:
    raw = q.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a positive integer, not {raw!r}") from None
    if value < 1:
        raise BadRequest(f"{name} must be a positive integer, not {raw!r}")
    return value


def _render_options(q: QueryParams, media_type: str) -> RenderOptions:
    """WADO-URI's rendering parameters (PS3.18 9.1.2.x) as the rendered service's options."""
    center, width = q.get("windowCenter"), q.get("windowWidth")
    if (center is None) != (width is None):
        raise BadRequest("windowCenter and windowWidth go together")
    rows, columns = q.get("rows"), q.get("columns")
    viewport = None
    if rows is not None or columns is not None:  # the other dimension free: the aspect ratio decides
        viewport = Viewport(_int(q, "columns", MAX_SIDE), _int(q, "rows", MAX_SIDE))
    return RenderOptions(
        media_type=media_type,
        window=parse_window(f"{center},{width}") if center is not None else None,
        viewport=viewport,
        quality=parse_quality(q["imageQuality"]) if "imageQuality" in q else DEFAULT_QUALITY,
    )


@router.get("/wado", response_model=None)
def wado_uri(request: Request) -> StreamingResponse | Response:
    q = request.query_params
    if q.get("requestType") != "WADO":
        raise BadRequest("requestType must be WADO")
    missing = [k for k in ("studyUID", "seriesUID", "objectUID") if not q.get(k)]
    if missing:
        raise BadRequest(f"missing {', '.join(missing)}")
    study = check_uid(q["studyUID"], "studyUID")
    series = check_uid(q["seriesUID"], "seriesUID")
    sop = check_uid(q["objectUID"], "objectUID")
    wanted = [t.split(";")[0].strip().lower() for t in q.get("contentType", JPEG).split(",")]
    if q.get("anonymize") == "yes":
        raise NotAcceptable("anonymize=yes is not supported")
    svc = services(request)
    if DICOM not in wanted and "*/*" not in wanted:
        image = next((t for t in wanted if t in (JPEG, PNG)), None)
        if image is None:
            raise NotAcceptable(
                f"contentType {q['contentType']} is not available: use application/dicom, {JPEG} or {PNG}"
            )
        frame = _int(q, "frameNumber", 1)
        body = RenderService(svc.retrieve).instance(study, series, sop, _render_options(q, image), frame)
        return Response(body, media_type=image)
    (row,) = svc.retrieve.instances(study, series, sop)
    ts = q.get("transferSyntax")
    if not ts or ts == row.transfer_syntax_uid:
        return StreamingResponse(
            svc.retrieve.chunks(row), media_type=DICOM, headers={"Content-Length": str(row.size)}
        )
    syntaxes = SyntaxService(svc.retrieve)
    ((_, choice),) = syntaxes.plan([row], [Acceptable(check_uid(ts, "transferSyntax"))]).parts
    try:
        key = syntaxes.key(row, choice)
    except TranscodeError as exc:
        raise NotAcceptable(f"cannot send the instance in {ts}: {exc}") from exc
    info = svc.retrieve.store.head(key)
    headers = {"Content-Length": str(info.size)} if info is not None else {}
    chunks = syntaxes.chunks(row, Choice(ts, "derived", key))
    return StreamingResponse(chunks, media_type=DICOM, headers=headers)
