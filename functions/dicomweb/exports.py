"""Export jobs over HTTP (at the root, beside /dicomweb): de-identified copies of a selection.

    POST   /exports                 JSON request (`pacs.services.export_request`) → 202, the job,
                                    Location: /exports/{id}; 400 with the reason
    GET    /exports                 recent jobs (?limit=N, default 50)
    GET    /exports/{id}            status, totals, progress, failures, output; 404 when unknown
    GET    /exports/{id}/download   the ZIP: 303 to a presigned URL when the store presigns (S3), else
                                    streamed; 409 before the job is done or when it made no ZIP
    DELETE /exports/{id}            cancel a queued or running job; 409 when it has finished

The job is run by tasks on the task queue: `pacs up`'s export worker, or on AWS the anonymizer function.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pacs.catalog.exports import ExportJob
from pacs.errors import PacsError
from pacs.services.export_request import ExportRequestError

from functions.dicomweb.context import services

if TYPE_CHECKING:  # the service (de-identification, its keys, the task queue) is imported at first use
    from pacs.services.exports import ExportService

router = APIRouter()


class ExportsUnavailable(PacsError):
    """The export service cannot run in this deployment (HTTP 503 with the reason)."""

    http_status = 503


_lock = threading.Lock()
MAX_LIST = 500


def exports(request: Request) -> ExportService:
    """The app's export service, made on first use."""
    state = request.app.state
    svc: ExportService | None = getattr(state, "exports", None)
    if svc is None:
        with _lock:
            svc = getattr(state, "exports", None)
            if svc is None:
                from pacs.services.exports import ExportService

                try:
                    svc = state.exports = ExportService.from_backend(services(request).backend)
                except ValueError as exc:  # e.g. no task queue configured on AWS
                    raise ExportsUnavailable(f"export jobs are not available here: {exc}") from None
    return svc


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def _error(status: int, reason: str) -> Response:
    return _json({"error": reason}, status)


def _job(request: Request, job_id: str) -> ExportJob | Response:
    job = exports(request).get(job_id)
    return _error(404, f"no export job {job_id!r}") if job is None else job


@router.post("/exports")
async def create_export(request: Request) -> Response:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _error(400, f"the body is not JSON: {exc}")
    try:
        job = exports(request).create(body)
    except ExportRequestError as exc:
        return _error(400, str(exc))
    return _json(job.to_json(), 202, {"Location": f"/exports/{job.id}"})


@router.get("/exports")
def list_exports(request: Request, limit: int = 50) -> Response:
    if not 0 < limit <= MAX_LIST:
        return _error(400, f"limit must be 1-{MAX_LIST}")
    return _json({"jobs": [j.to_json() for j in exports(request).recent(limit)]})


@router.get("/exports/{job_id}")
def get_export(request: Request, job_id: str) -> Response:
    job = _job(request, job_id)
    return job if isinstance(job, Response) else _json(job.to_json())


@router.delete("/exports/{job_id}")
def cancel_export(request: Request, job_id: str) -> Response:
    job = _job(request, job_id)
    if isinstance(job, Response):
        return job
    if not exports(request).cancel(job.id):
        return _error(409, f"export job {job.id} has finished ({job.status})")
    again = exports(request).get(job.id)
    return _json((again or job).to_json())


@router.get("/exports/{job_id}/download")
def download_export(request: Request, job_id: str) -> Response:
    job = _job(request, job_id)
    if isinstance(job, Response):
        return job
    key = job.output.get("zip")
    if job.status != "done":
        return _error(409, f"export job {job.id} is {job.status}: no download")
    if not key:
        return _error(409, f"export job {job.id} made no ZIP (destination {job.request['destination']})")
    svc = exports(request)
    store = svc.backend.exports_store
    url = store.presigned_get(key, svc.settings.presign_expires)
    if url is not None:
        return Response(status_code=303, headers={"Location": url, "Cache-Control": "no-store"})
    info = store.head(key)
    headers = {"Content-Disposition": f'attachment; filename="export-{job.id}.zip"'}
    if info is not None:
        headers["Content-Length"] = str(info.size)
    return StreamingResponse(store.iter_chunks(key), media_type="application/zip", headers=headers)
