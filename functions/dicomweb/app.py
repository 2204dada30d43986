"""The DICOMweb application: QIDO-RS and WADO-RS under /dicomweb, /health and /metrics.

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
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from functions.dicomweb import qido, wado
from functions.dicomweb.context import Services

DICOMWEB = "/dicomweb"


def create_app(backend: Backend | None = None) -> FastAPI:
    backend = backend or open_backend(Settings.from_env())
    app = FastAPI(title="pacs DICOMweb", docs_url=None, redoc_url=None)
    app.state.services = Services.of(backend)
    registry = CollectorRegistry()
    requests = Counter("pacs_http_requests", "HTTP requests", ["method", "route", "status"],
                       registry=registry)
    latency = Histogram("pacs_http_request_seconds", "HTTP request latency", ["route"],
                        registry=registry)

    class Measure(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            start = time.perf_counter()
            response = await call_next(request)
            route = getattr(request.scope.get("route"), "path", "unmatched")
            if request.url.path.startswith(DICOMWEB + "/"):  # included routers report their own path
                route = DICOMWEB + route
            requests.labels(request.method, route, str(response.status_code)).inc()
            latency.labels(route).observe(time.perf_counter() - start)
            return response

    app.add_middleware(Measure)

    @app.exception_handler(PacsError)
    async def pacs_error(request: Request, exc: PacsError) -> JSONResponse:
        return JSONResponse({"error": exc.reason}, status_code=exc.http_status)

    @app.get("/health")
    def health() -> Response:
        try:
            backend.catalog.query_studies(backend.settings.partition, (), limit=1)
        except Exception as exc:
            return Response(orjson.dumps({"status": "unavailable", "reason": str(exc)}), 503,
                            media_type="application/json")
        return Response(orjson.dumps({"status": "ok"}), media_type="application/json")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(qido.router, prefix=DICOMWEB)
    app.include_router(wado.router, prefix=DICOMWEB)
    return app
