"""The DICOMweb application: QIDO-RS and WADO-RS under /dicomweb, /health and /metrics.

/metrics: every process's metrics in Prometheus text format (under `pacs up`, the gateway workers'
and the indexer's too: `pacs.monitoring.multiprocess`) and the backend's figures read at the scrape.
/health (= /health/ready): each component's status, 503 when one is down; /health/live: 200.

`create_app()` opens the backend named by the environment (`PACS_*`); `pacs up` runs it under
uvicorn, the Lambda handler under Mangum: the same routes and services either way.
"""

from __future__ import annotations

import time

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pacs.backends import Backend, open_backend
from pacs.config import Settings
from pacs.errors import PacsError
from pacs.monitoring import health as health_check
from pacs.monitoring import metrics as pacs_metrics
from pacs.monitoring import multiprocess
from pacs.monitoring.state import BackendCollector
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions.dicomweb import delete, exports, frames, metadata, qido, rendered, stow, wado, wado_uri
from functions.dicomweb.browser import BrowserHeaders, JsonGzip
from functions.dicomweb.context import Services
from functions.dicomweb.viewer import default_viewer_dir, mount_viewer

DICOMWEB = "/dicomweb"


class Measure:
    """Pure-ASGI request metrics: count by method, route and status; latency to the response start."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: int | None = None

        def observe(code: int) -> None:
            route = getattr(scope.get("route"), "path", "unmatched")
            if scope["path"].startswith(DICOMWEB + "/"):  # included routers report their own path
                route = DICOMWEB + route
            self.requests.labels(scope["method"], route, str(code)).inc()
            self.latency.labels(route).observe(time.perf_counter() - start)

        async def send_measured(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start" and status is None:
                status = message["status"]
                observe(status)
            await send(message)

        try:
            await self.app(scope, receive, send_measured)
        finally:
            if status is None:  # failed before any response: the server answers 500
                observe(500)


def create_app(backend: Backend | None = None) -> FastAPI:
    backend = backend or open_backend(Settings.from_env())
    app = FastAPI(title="pacs DICOMweb", docs_url=None, redoc_url=None)
    app.state.services = Services.of(backend)
    measured = pacs_metrics.get()
    requests, latency = measured.http_requests, measured.http_seconds
    gateway_beside = multiprocess.enabled()  # under `pacs up`: its gateway workers are checked too
    figures = CollectorRegistry(auto_describe=False)
    figures.register(BackendCollector(backend, gateway=gateway_beside))

    # Added last = outermost: Measure, then BrowserHeaders (CORS/CORP/cache, 500s), then JsonGzip.
    app.add_middleware(JsonGzip)
    app.add_middleware(BrowserHeaders, origins=backend.settings.cors_origins)
    app.add_middleware(Measure, requests=requests, latency=latency)

    @app.exception_handler(PacsError)
    async def pacs_error(request: Request, exc: PacsError) -> JSONResponse:
        return JSONResponse({"error": exc.reason}, status_code=exc.http_status)

    @app.get("/health")
    @app.get("/health/ready")
    def health() -> Response:
        report = health_check.check(backend, gateway=gateway_beside)
        return Response(orjson.dumps(report.to_json()), 200 if report.ready else 503,
                        media_type="application/json")

    @app.get("/health/live")
    def live() -> Response:
        return Response(orjson.dumps({"status": "ok"}), media_type="application/json")

    @app.get("/metrics")
    def metrics() -> Response:
        body = generate_latest(multiprocess.registry()) + generate_latest(figures)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(qido.router, prefix=DICOMWEB)
    app.include_router(wado.router, prefix=DICOMWEB)
    app.include_router(frames.router, prefix=DICOMWEB)
    app.include_router(metadata.router, prefix=DICOMWEB)
    app.include_router(rendered.router, prefix=DICOMWEB)
    app.include_router(stow.router, prefix=DICOMWEB)
    app.include_router(delete.router, prefix=DICOMWEB)
    app.include_router(wado_uri.router)
    app.include_router(exports.router)  # /exports: de-identified export jobs
    mount_viewer(app, default_viewer_dir())  # OHIF at /viewer when installed (not on Lambda)
    return app
