"""Browser concerns of the DICOMweb app: CORS, CORP, Cache-Control, JSON-only gzip, streaming."""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from pacs.backends import Backend
from pacs.services import index_worker
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService
from starlette.types import Message

from functions.dicomweb.app import create_app
from functions.dicomweb.browser import accepts_gzip, cache_control, parse_origins
from tests.unit.conftest import MakePart10

S1 = "1.2.826.0.1.3680043.8.498.30"
EXPOSED = "ETag, Content-Length, Content-Range, Warning, Location"
MULTIPART = 'multipart/related; type="application/dicom"'
STUDY_JSON_MIN = 1024  # the QIDO study list below is well over 1 KiB


@pytest.fixture
def sent(embedded: Backend, make_part10: MakePart10) -> dict[str, bytes]:
    """One study, one series of 3 instances; long descriptions keep the QIDO answers over 1 KiB."""
    objects = {}
    ingest = IngestService(embedded.store)
    for n in (1, 2, 3):
        data = make_part10(
            StudyInstanceUID=S1, SeriesInstanceUID=f"{S1}.1", SOPInstanceUID=f"{S1}.1.{n}", InstanceNumber=n,
            StudyDescription="CT chest " + "x" * 40, SeriesDescription="axial " + "y" * 40,
        )
        objects[f"{S1}.1.{n}"] = data
        ingest.ingest(data)
    assert embedded.queue is not None
    while index_worker.drain_once(embedded.queue, IndexerService(embedded.store, embedded.catalog)):
        pass
    return objects


def with_boom(app: FastAPI) -> FastAPI:
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    return app


@pytest.fixture
def client(embedded: Backend, sent: dict[str, bytes]) -> Iterator[TestClient]:
    with TestClient(with_boom(create_app(embedded)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def listed(embedded: Backend, sent: dict[str, bytes]) -> Iterator[TestClient]:
    settings = replace(embedded.settings, cors_origins="https://viewer.example, http://localhost:3000/")
    backend = replace(embedded, settings=settings)
    with TestClient(with_boom(create_app(backend)), raise_server_exceptions=False) as c:
        yield c


def vary(r: Response) -> list[str]:
    return [t.strip().lower() for v in r.headers.get_list("vary") for t in v.split(",")]


def raw_get(client: TestClient, url: str, **headers: str) -> tuple[Response, bytes]:
    """The response and its body exactly as sent (httpx would otherwise gunzip it)."""
    with client.stream("GET", url, headers=headers) as r:
        return r, b"".join(r.iter_raw())


# --- CORS and CORP -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("url", "headers", "status"),
    [
        ("/dicomweb/studies", {}, 200),
        ("/dicomweb/studies?PatientID=nobody", {}, 204),
        ("/dicomweb/studies?limit=-1", {}, 400),
        ("/dicomweb/studies/1.2.3", {}, 404),
        (f"/dicomweb/studies/{S1}", {"Accept": MULTIPART + "; transfer-syntax=1.2.840.10008.1.2.4.110"}, 406),
        ("/nowhere", {}, 404),
        ("/boom", {}, 500),
        ("/health", {}, 200),
    ],
)
def test_every_response_has_cors_and_corp(client: TestClient, url: str, headers: dict[str, str],
                                          status: int) -> None:
    r = client.get(url, headers={"Origin": "https://anywhere.example", **headers})
    assert r.status_code == status
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["cross-origin-resource-policy"] == "cross-origin"
    assert r.headers["access-control-expose-headers"] == EXPOSED
    if status == 500:
        assert r.json() == {"error": "internal server error"}


def test_unhandled_error_is_counted_as_500(client: TestClient) -> None:
    def counted() -> float:  # the process's counter: other apps of this test session count too
        sample = 'pacs_http_requests_total{method="GET",route="/boom",status="500"} '
        lines = [ln for ln in client.get("/metrics").text.splitlines() if ln.startswith(sample)]
        return float(lines[0].split()[-1]) if lines else 0.0

    before = counted()
    assert client.get("/boom").status_code == 500
    assert counted() == before + 1


def test_preflight(client: TestClient) -> None:
    r = client.options("/dicomweb/studies/1.2.3/series/4.5/instances/6.7/frames/1", headers={
        "Origin": "https://anywhere.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, accept",
    })
    assert r.status_code == 204 and r.content == b""
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-methods"] == "GET, HEAD, POST, DELETE, OPTIONS"
    assert r.headers["access-control-allow-headers"] == "authorization, accept"
    assert r.headers["access-control-max-age"] == "600"
    assert r.headers["cross-origin-resource-policy"] == "cross-origin"
    r = client.options("/anything", headers={"Origin": "https://anywhere.example",
                                             "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"accept", "content-type", "authorization", "if-none-match", "range"} <= allowed


def test_listed_origins(listed: TestClient) -> None:
    for origin in ("https://viewer.example", "http://localhost:3000"):
        for url in ("/dicomweb/studies", "/dicomweb/studies/1.2.3", "/boom"):
            r = listed.get(url, headers={"Origin": origin})
            assert r.headers["access-control-allow-origin"] == origin and "origin" in vary(r)
        r = listed.options("/dicomweb/studies", headers={"Origin": origin, "Access-Control-Request-Method": "GET"})
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == origin
    for headers in ({"Origin": "https://evil.example"}, {}):
        r = listed.get("/dicomweb/studies", headers=headers)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        assert r.headers["cross-origin-resource-policy"] == "cross-origin"
    r = listed.options("/dicomweb/studies", headers={"Origin": "https://evil.example",
                                                     "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in r.headers


def test_origin_setting() -> None:
    assert parse_origins("*") is None and parse_origins("") is None and parse_origins("a, *") is None
    assert parse_origins(" https://a.example/ ,http://b:3000") == {"https://a.example", "http://b:3000"}


# --- Cache-Control -----------------------------------------------------------------------------

def test_cache_control(client: TestClient) -> None:
    for url in ("/dicomweb/studies", f"/dicomweb/studies/{S1}/series", f"/dicomweb/studies/{S1}/instances",
                f"/dicomweb/studies/{S1}/series/{S1}.1/instances", "/dicomweb/studies?PatientID=nobody"):
        assert client.get(url).headers["cache-control"] == "no-cache", url
    # a study's or series' content and any metadata change as instances arrive: kept, but revalidated
    for url in (f"/dicomweb/studies/{S1}", f"/dicomweb/studies/{S1}/series/{S1}.1",
                f"/dicomweb/studies/{S1}/metadata", f"/dicomweb/studies/{S1}/series/{S1}.1/metadata",
                f"/dicomweb/studies/{S1}/series/{S1}.1/instances/{S1}.1.2/metadata"):
        assert client.get(url).headers["cache-control"] == "private, no-cache", url
    url = f"/dicomweb/studies/{S1}/series/{S1}.1/instances/{S1}.1.2"  # changes only when sent again
    assert client.get(url).headers["cache-control"] == "private, max-age=3600", url
    assert "cache-control" not in client.get("/dicomweb/studies/1.2.3").headers  # errors: not cached
    assert "cache-control" not in client.get("/health").headers


@pytest.mark.parametrize(
    ("method", "path", "status", "expected"),
    [
        ("GET", "/dicomweb/studies/1/series/2/instances/3/frames/1,2", 200, "private, max-age=3600"),
        ("GET", "/dicomweb/studies/1/series/2/instances/3/bulkdata/7FE00010", 200, "private, max-age=3600"),
        ("GET", "/dicomweb/studies/1/metadata", 200, "private, no-cache"),
        ("GET", "/dicomweb/studies/1/series/2/metadata", 200, "private, no-cache"),
        ("GET", "/dicomweb/studies/1/series/2/instances/3/metadata", 200, "private, no-cache"),
        ("GET", "/dicomweb/studies/1/series/2/instances/3/rendered", 200, "private, max-age=3600"),
        ("GET", "/dicomweb/studies/1/rendered", 206, "private, no-cache"),
        ("HEAD", "/dicomweb/studies/1", 200, "private, no-cache"),
        ("GET", "/dicomweb/studies/1/series/", 200, "no-cache"),
        ("GET", "/dicomweb/studies/1", 404, None),
        ("POST", "/dicomweb/studies", 200, None),
        ("DELETE", "/dicomweb/studies/1", 200, None),
        ("GET", "/metrics", 200, None),
    ],
)
def test_cache_control_rules(method: str, path: str, status: int, expected: str | None) -> None:
    assert cache_control(method, path, status) == expected


def test_route_cache_control_is_kept(embedded: Backend, sent: dict[str, bytes]) -> None:
    app = create_app(embedded)

    @app.get("/dicomweb/studies/{study}/own")
    def own(study: str) -> Any:
        from fastapi import Response as FastAPIResponse
        return FastAPIResponse(b"{}", media_type="application/json", headers={"Cache-Control": "no-store"})

    with TestClient(app) as c:
        assert c.get(f"/dicomweb/studies/{S1}/own").headers.get_list("cache-control") == ["no-store"]


# --- gzip --------------------------------------------------------------------------------------

def test_qido_json_is_gzipped(client: TestClient) -> None:
    plain, plain_body = raw_get(client, f"/dicomweb/studies/{S1}/series/{S1}.1/instances?includefield=all",
                                **{"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert len(plain_body) >= STUDY_JSON_MIN and int(plain.headers["content-length"]) == len(plain_body)
    assert "accept-encoding" in vary(plain)
    r, body = raw_get(client, f"/dicomweb/studies/{S1}/series/{S1}.1/instances?includefield=all",
                      **{"Accept-Encoding": "gzip, deflate"})
    assert r.headers["content-encoding"] == "gzip" and "accept-encoding" in vary(r)
    assert r.headers["content-type"] == "application/dicom+json"
    assert int(r.headers["content-length"]) == len(body) < len(plain_body)
    assert orjson.loads(gzip.decompress(body)) == orjson.loads(plain_body)
    assert r.headers["access-control-allow-origin"] == "*"


def test_small_json_is_not_gzipped(client: TestClient) -> None:
    r, body = raw_get(client, "/health", **{"Accept-Encoding": "gzip"})
    assert "content-encoding" not in r.headers and orjson.loads(body)["status"] == "ok"
    assert int(r.headers["content-length"]) == len(body)


def test_wado_is_never_gzipped_and_stays_exact(client: TestClient, sent: dict[str, bytes]) -> None:
    r, body = raw_get(client, f"/dicomweb/studies/{S1}/series/{S1}.1/instances/{S1}.1.1",
                      **{"Accept-Encoding": "gzip", "Accept": MULTIPART})
    assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/related")
    assert "content-encoding" not in r.headers and "accept-encoding" not in vary(r)
    boundary = re.search(r"boundary=([^;]+)", r.headers["content-type"])[1]  # type: ignore[index]
    part = body.split(b"--" + boundary.encode())[1]
    assert part.partition(b"\r\n\r\n")[2].removesuffix(b"\r\n") == sent[f"{S1}.1.1"]
    if "content-length" in r.headers:
        assert int(r.headers["content-length"]) == len(body)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("gzip", True), ("deflate, gzip;q=0.5", True), ("*", True), ("br", False), ("gzip;q=0", False),
     ("", False), ("identity", False)],
)
def test_accepts_gzip(value: str, expected: bool) -> None:
    assert accepts_gzip(value) is expected


# --- streaming -------------------------------------------------------------------------------

def asgi_get(app: FastAPI, path: str, headers: dict[str, str]) -> list[Message]:
    """Every message the app sends for GET `path`, through the whole middleware stack."""
    messages: list[Message] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:  # the client stays connected until the response ends
            await asyncio.Event().wait()
        received = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234), "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    return messages


def test_wado_study_stays_streamed(embedded: Backend, sent: dict[str, bytes]) -> None:
    messages = asgi_get(create_app(embedded), f"/dicomweb/studies/{S1}",
                        {"Accept": MULTIPART, "Accept-Encoding": "gzip", "Origin": "https://x.example"})
    start, *bodies = messages
    assert start["status"] == 200 and (b"access-control-allow-origin", b"*") in start["headers"]
    assert len(bodies) > 1 and all(m.get("more_body") for m in bodies[:-1])
    body = b"".join(m["body"] for m in bodies)
    assert all(data in body for data in sent.values())
