"""The OHIF viewer, served as static files under `/viewer/` beside DICOMweb (same origin, no CORS).

`tools/install_viewer.py` installs the prebuilt, relocated OHIF build (default `.build/viewer`,
or `PACS_VIEWER_DIR`). `mount_viewer` adds the routes only when it is installed:

* `/` and `/viewer` redirect to `/viewer/`;
* `/viewer/<file>` is the file, with its MIME type (`.wasm` → application/wasm, `.js` → text/javascript);
* any other `/viewer/...` path is `index.html` (the SPA's client-side routes: `/viewer/viewer?...`),
  except a missing file with a static-asset suffix (`.js`, `.wasm`, ...), which is a 404: HTML in
  place of a script would only hide the error;
* content-hashed bundles are cached for a year, `index.html` and `app-config.js` never without revalidation.
"""

from __future__ import annotations

import mimetypes
import os
import re
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

PREFIX = "/viewer"
ENV_DIR = "PACS_VIEWER_DIR"
REPO = Path(__file__).resolve().parents[2]

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
    ".onnx": "application/octet-stream",
}
#: Suffixes of static assets: a missing one is a 404, not the SPA's index.html.
ASSET_SUFFIXES = frozenset(MEDIA_TYPES) - {".html"} | {".gz", ".br", ".jpg", ".jpeg", ".gif", ".webp"}
#: Entry points that name no hash and must be revalidated so that an update is seen at once.
ENTRY_POINTS = frozenset({"index.html", "app-config.js", "init-service-worker.js", "manifest.json"})
HASHED = re.compile(r"(^|[.-])[0-9a-f]{16,}([.-]|$)")
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
SHORT = "public, max-age=3600"


def default_viewer_dir() -> Path:
    """`PACS_VIEWER_DIR`, else `<repo>/.build/viewer` (where `tools/install_viewer.py` installs)."""
    configured = os.environ.get(ENV_DIR, "").strip()
    return Path(configured) if configured else REPO / ".build" / "viewer"


def media_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in MEDIA_TYPES:
        return MEDIA_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def cache_control(path: Path) -> str:
    if path.name in ENTRY_POINTS:
        return NO_CACHE
    return IMMUTABLE if HASHED.search(path.name) else SHORT


def resolve(root: Path, relative: str) -> Path | None:
    """The regular file `relative` names inside `root`, or None (missing, a directory, or outside)."""
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if any(p == ".." or "\\" in p or "\x00" in p for p in parts):
        return None
    if not parts:
        return None
    candidate = root.joinpath(*parts)
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_relative_to(root) or not resolved.is_file():
        return None
    return resolved


def mount_viewer(app: FastAPI, dist: Path | None = None) -> bool:
    """Serve the OHIF build in `dist` (default: `default_viewer_dir()`) under `/viewer/`.

    False, and nothing is served, when `dist/index.html` does not exist (viewer not installed)."""
    root = (dist if dist is not None else default_viewer_dir()).resolve()
    index = root / "index.html"
    if not index.is_file():
        return False

    def file_response(path: Path) -> FileResponse:
        return FileResponse(path, media_type=media_type(path),
                            headers={"Cache-Control": cache_control(path)})

    @app.api_route(PREFIX, methods=["GET", "HEAD"], include_in_schema=False)
    def viewer_root(request: Request) -> Response:
        query = request.url.query
        return RedirectResponse(PREFIX + "/" + (f"?{query}" if query else ""), status_code=308)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def site_root() -> Response:
        return RedirectResponse(PREFIX + "/", status_code=307)  # the server's address opens the viewer

    @app.api_route(PREFIX + "/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
    def viewer_file(path: str) -> Response:
        found = resolve(root, path)
        if found is not None:
            return file_response(found)
        if Path(path).suffix.lower() in ASSET_SUFFIXES:
            return Response(b"not found", status_code=404, media_type="text/plain",
                            headers={"Cache-Control": NO_CACHE})
        return file_response(index)  # a client-side route of the SPA

    app.state.viewer_dir = root
    return True
