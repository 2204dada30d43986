"""WADO-URI (PS3.18 §9): `GET /wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…`.

For the older viewers and reporting systems that still use it. `contentType=application/dicom` returns
the stored object as is; rendered media types (`image/jpeg`, the default for images) are not produced
yet and get 406 with a reason, as does a `transferSyntax` other than the stored one.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pacs.dicom.uids import check_uid

from functions.dicomweb.context import BadRequest, services
from functions.dicomweb.wado import NotAcceptable

router = APIRouter()
DICOM = "application/dicom"


@router.get("/wado")
def wado_uri(request: Request) -> StreamingResponse:
    q = request.query_params
    if q.get("requestType") != "WADO":
        raise BadRequest("requestType must be WADO")
    missing = [k for k in ("studyUID", "seriesUID", "objectUID") if not q.get(k)]
    if missing:
        raise BadRequest(f"missing {', '.join(missing)}")
    study = check_uid(q["studyUID"], "studyUID")
    series = check_uid(q["seriesUID"], "seriesUID")
    sop = check_uid(q["objectUID"], "objectUID")
    wanted = [t.split(";")[0].strip().lower() for t in q.get("contentType", "image/jpeg").split(",")]
    if DICOM not in wanted and "*/*" not in wanted:
        raise NotAcceptable(
            f"contentType {q.get('contentType', 'image/jpeg (the default)')} is not available yet: "
            "ask for contentType=application/dicom"
        )
    if q.get("anonymize") == "yes":
        raise NotAcceptable("anonymize=yes is not supported")
    svc = services(request)
    (row,) = svc.retrieve.instances(study, series, sop)
    ts = q.get("transferSyntax")
    if ts and ts != row.transfer_syntax_uid:
        raise NotAcceptable(f"stored as {row.transfer_syntax_uid}; transcoding to {ts} is not available")
    return StreamingResponse(
        svc.retrieve.chunks(row), media_type=DICOM, headers={"Content-Length": str(row.size)}
    )
