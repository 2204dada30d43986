"""Pure-ASGI middleware for web viewers (OHIF…): CORS, CORP, Cache-Control and JSON-only gzip.

Pure ASGI (not `BaseHTTPMiddleware`) so that WADO-RS multipart bodies stay streamed. `BrowserHeaders`
also answers unhandled exceptions itself (a 500 with the same headers) before re-raising them:
Starlette's `ServerErrorMiddleware` sits outside every user middleware, so its own 500 would carry
no CORS header and a browser would report a CORS failure instead of the error.
"""

from __future__ import annotations

import gzip
import zlib

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOW_METHODS = "GET, HEAD, POST, DELETE, OPTIONS"
ALLOW_HEADERS = "Accept, Accept-Encoding, Content-Type, Authorization, If-None-Match, Range"
EXPOSE_HEADERS = "ETag, Content-Length, Content-Range, Warning, Location"
MAX_AGE = "600"
#: One instance's frames, bulk data, renditions: they change only if the instance is sent again.
IMMUTABLE = "private, max-age=3600"
#: Metadata (any level) and study- or series-level retrieves change as instances arrive (or are
#: replaced or deleted): the browser keeps them but asks again each time (their ETag gives a 304).
REVALIDATE = "private, no-cache"
SEARCH = "no-cache"
STUDIES = "/dicomweb/studies"
#: The last path segment of a QIDO-RS search (a retrieve ends in a UID, frame list, `metadata`…).
SEARCH_SEGMENTS = frozenset({"studies", "series", "instances"})
JSON_TYPES = frozenset({"application/dicom+json", "application/json"})
GZIP_MIN_SIZE = 1024
GZIP_LEVEL = 5
INTERNAL_ERROR = b'{"error":"internal server error"}'


def parse_origins(setting: str) -> frozenset[str] | None:
    """`*` (or empty) → None, meaning any origin; else the listed origins, without trailing slashes."""
    origins = {o.strip().rstrip("/") for o in setting.split(",") if o.strip()}
    return None if not origins or "*" in origins else frozenset(origins)


def cache_control(method: str, path: str, status: int) -> str | None:
    """The Cache-Control for a response to `method path`, or None to add none."""
    if method not in ("GET", "HEAD") or not (path == STUDIES or path.startswith(STUDIES + "/")):
        return None
    segments = path.rstrip("/").split("/")
    if segments[-1] in SEARCH_SEGMENTS:
        return SEARCH
    if not 200 <= status < 300:
        return None
    one_instance = "instances" in segments[:-1]  # …/instances/{uid}[/frames/…, /rendered, …]
    return IMMUTABLE if one_instance and segments[-1] != "metadata" else REVALIDATE


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value allows gzip (`gzip` or `*` with a non-zero q)."""
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                if float(q[2:]) == 0:
                    continue
            except ValueError:
                continue
        return True
    return False


class BrowserHeaders:
    """CORS (preflight and every response, errors included), CORP and Cache-Control."""

    def __init__(self, app: ASGIApp, origins: str = "*") -> None:
        self.app = app
        self.origins = parse_origins(origins)

    def _cors(self, headers: MutableHeaders, origin: str | None) -> None:
        headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        if self.origins is None:
            headers["Access-Control-Allow-Origin"] = "*"
            return
        headers.add_vary_header("Origin")
        if origin is not None and origin.rstrip("/") in self.origins:
            headers["Access-Control-Allow-Origin"] = origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_headers = Headers(scope=scope)
        origin = request_headers.get("origin")
        method: str = scope["method"]
        if method == "OPTIONS":
            await self._preflight(send, origin, request_headers.get("access-control-request-headers"))
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                self._cors(headers, origin)
                headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
                cc = cache_control(method, scope["path"], message["status"])
                if cc is not None and "cache-control" not in headers:
                    headers["Cache-Control"] = cc
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if not started:  # answer the 500 here, with our headers; the server still logs it
                await send_with_headers({
                    "type": "http.response.start", "status": 500,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(INTERNAL_ERROR)).encode())],
                })
                await send({"type": "http.response.body", "body": INTERNAL_ERROR})
            raise

    async def _preflight(self, send: Send, origin: str | None, requested: str | None) -> None:
        headers = MutableHeaders()
        self._cors(headers, origin)
        headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        headers["Access-Control-Allow-Headers"] = requested or ALLOW_HEADERS
        if requested:
            headers.add_vary_header("Access-Control-Request-Headers")
        headers["Access-Control-Max-Age"] = MAX_AGE
        await send({"type": "http.response.start", "status": 204, "headers": headers.raw})
        await send({"type": "http.response.body", "body": b""})


def _media_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


class JsonGzip:
    """Gzip JSON responses (≥ 1 KiB, or streamed) for clients that accept it; pass the rest through.

    Only `application/dicom+json` and `application/json` bodies are touched: a complete JSON body
    is compressed whole (exact Content-Length); a streamed one chunk by chunk (no Content-Length).
    Everything else (multipart, Part 10, pixel data, images) goes through untouched and streamed.
    """

    def __init__(self, app: ASGIApp, minimum_size: int = GZIP_MIN_SIZE, level: int = GZIP_LEVEL) -> None:
        self.app = app
        self.minimum_size = minimum_size
        self.level = level

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "HEAD":
            await self.app(scope, receive, send)
            return
        wanted = accepts_gzip(Headers(scope=scope).get("accept-encoding", ""))
        start: Message | None = None  # held back until the first body chunk decides
        compressor: zlib._Compress | None = None
        passthrough = False

        async def send_gzip(message: Message) -> None:
            nonlocal start, compressor, passthrough
            if passthrough:
                await send(message)
                return
            if message["type"] == "http.response.start":
                headers = Headers(raw=message.get("headers", []))
                if _media_type(headers) not in JSON_TYPES or message["status"] in (204, 304):
                    passthrough = True
                    await send(message)
                    return
                MutableHeaders(scope=message).add_vary_header("Accept-Encoding")
                if not wanted or "content-encoding" in headers or "content-range" in headers:
                    passthrough = True
                    await send(message)
                    return
                start = message
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body: bytes = message.get("body", b"")
            more: bool = message.get("more_body", False)
            if start is not None:  # first body message
                first, start = start, None
                headers = MutableHeaders(scope=first)
                if not more and len(body) < self.minimum_size:
                    passthrough = True
                    await send(first)
                    await send(message)
                    return
                headers["Content-Encoding"] = "gzip"
                if not more:
                    body = gzip.compress(body, compresslevel=self.level, mtime=0)
                    headers["Content-Length"] = str(len(body))
                    passthrough = True
                    await send(first)
                    await send({"type": "http.response.body", "body": body})
                    return
                del headers["Content-Length"]
                compressor = zlib.compressobj(self.level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
                await send(first)
            assert compressor is not None
            out = compressor.compress(body)
            if not more:
                out += compressor.flush()
            await send({"type": "http.response.body", "body": out, "more_body": more})

        await self.app(scope, receive, send_gzip)

