"""WADO-RS bodies too large for a buffered Lambda response (issue 4 item 8), on moto in-process:

above `PACS_MAX_INLINE_RESPONSE` the Mangum handler answers 303 to a presigned GET of the body,
pre-packed once under `{partition}/derived/{study}/packed/`; below it, or on the filesystem, the
body is inline as before. Never truncated either way.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import requests
from fastapi.testclient import TestClient
from pacs.backends import open_backend
from pacs.config import Settings
from pacs.services import index_worker
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService
from pacs.services.packed import body_size, packing

from functions.dicomweb.app import create_app
from tests.integration import test_moto_pipeline as pipeline
from tests.integration.test_moto_pipeline import (
    BUCKET,
    WADO_ACCEPT,
    MotoPacs,
    P,
    files,
    header,
    lambda_body,
    lambda_context,
    multipart_parts,
    rest_api_event,
    uids,
)

aws = pipeline.aws  # the moto world fixture
LIMIT = 50_000
Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@pytest.fixture
def load_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int | None], Any]]:
    """Import `functions.dicomweb.handler` fresh (it builds its app from the environment)."""

    def load(limit: int | None) -> Any:
        if limit is None:
            monkeypatch.delenv("PACS_MAX_INLINE_RESPONSE", raising=False)
        else:
            monkeypatch.setenv("PACS_MAX_INLINE_RESPONSE", str(limit))
        sys.modules.pop("functions.dicomweb.handler", None)
        return importlib.import_module("functions.dicomweb.handler")

    try:
        yield load
    finally:  # its backend belongs to this test's moto state
        sys.modules.pop("functions.dicomweb.handler", None)


@pytest.fixture
def stored(aws: MotoPacs) -> MotoPacs:
    """Study A: series A1 (ct, ct2) and A2 (ct3), about 39 KB each; study B: mr, mr2 (10 KB each)."""
    f = files()
    for data in (f.ct, f.ct2, f.ct3, f.mr, f.mr2):
        aws.ingest(data)
    assert aws.deliver(aws.receive()) == []
    return aws


def get(handler: Handler, path: str) -> dict[str, Any]:
    return handler(rest_api_event(path, headers={"Accept": WADO_ACCEPT}), lambda_context())


def packed_keys(aws: MotoPacs) -> list[str]:
    return sorted(i.key for i in aws.store.list(f"{P}/derived/") if "/packed/" in i.key)


def follow(aws: MotoPacs, location: str) -> tuple[str, bytes]:
    """GET the presigned URL (moto intercepts `requests` in-process); also check it names the object."""
    key = unquote(urlsplit(location).path).removeprefix(f"/{BUCKET}/")
    if key == unquote(urlsplit(location).path):  # virtual-hosted style: the bucket is in the host
        key = key.removeprefix("/")
    assert key in packed_keys(aws), location
    r = requests.get(location, timeout=10)
    assert r.status_code == 200, r.text
    obj = aws.s3.get_object(Bucket=BUCKET, Key=key)
    assert obj["ContentType"] == r.headers["content-type"]
    assert obj["Body"].read() == r.content
    return r.headers["content-type"], r.content


def redirected(resp: dict[str, Any]) -> str:
    assert resp["statusCode"] == 303, resp
    assert not lambda_body(resp)
    assert header(resp, "cache-control") == "no-store"
    return header(resp, "location")


def test_series_above_the_limit_is_a_redirect_to_the_packed_body(stored: MotoPacs, load_handler: Any) -> None:
    f = files()
    handler = load_handler(LIMIT).handler
    study, series, _ = uids(f.ct)
    path = f"/dicomweb/studies/{study}/series/{series}"
    location = redirected(get(handler, path))
    assert location.startswith(("http://", "https://")) and "Signature" in location
    [key] = packed_keys(stored)
    assert key.startswith(f"{P}/derived/{study}/packed/") and key.endswith(".multipart")

    content_type, body = follow(stored, location)
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    assert multipart_parts(content_type, body) == [f.ct, f.ct2]
    boundary = content_type.rsplit("boundary=", 1)[1]
    assert len(body) == body_size([len(f.ct), len(f.ct2)], boundary, "application/dicom")
    assert not any(i.key.startswith(f"{P}/derived/") for i in stored.catalog.query_instances(
        P, study, None, []).rows), "packed bodies are never indexed"

    # Again: the packed object is reused (no upload), at the same key.
    s3 = handler.app.state.services.backend.store.client
    uploads: list[str] = []
    s3.meta.events.register("before-call.s3.CreateMultipartUpload", lambda **kw: uploads.append("mpu"))
    s3.meta.events.register("before-call.s3.PutObject", lambda **kw: uploads.append("put"))
    again = redirected(get(handler, path))
    assert urlsplit(again).path == urlsplit(location).path
    assert uploads == [] and packed_keys(stored) == [key]
    assert follow(stored, again) == (content_type, body)


def test_study_and_instance_above_the_limit(stored: MotoPacs, load_handler: Any) -> None:
    f = files()
    handler = load_handler(30_000).handler
    study, series, sop = uids(f.ct)
    content_type, body = follow(stored, redirected(get(handler, f"/dicomweb/studies/{study}")))
    assert multipart_parts(content_type, body) == [f.ct, f.ct2, f.ct3]
    path = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    content_type, body = follow(stored, redirected(get(handler, path)))
    assert multipart_parts(content_type, body) == [f.ct]
    assert len(packed_keys(stored)) == 2


def test_below_the_limit_is_inline(stored: MotoPacs, load_handler: Any) -> None:
    f = files()
    handler = load_handler(LIMIT).handler
    study, series, sop = uids(f.ct)
    for path, expected in [
        (f"/dicomweb/studies/{study}/series/{series}/instances/{sop}", [f.ct]),
        (f"/dicomweb/studies/{uids(f.mr)[0]}", [f.mr, f.mr2]),
    ]:
        resp = get(handler, path)
        assert resp["statusCode"] == 200 and resp["isBase64Encoded"] is True, path
        assert multipart_parts(header(resp, "content-type"), lambda_body(resp)) == expected
    assert packed_keys(stored) == []


def test_no_limit_by_default_and_four_megabytes_under_lambda(
    stored: MotoPacs, load_handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = files()
    module = load_handler(None)
    assert module.handler.app.state.services.backend.settings.max_inline_response == 0
    resp = get(module.handler, f"/dicomweb/studies/{uids(f.ct)[0]}")
    assert resp["statusCode"] == 200
    assert multipart_parts(header(resp, "content-type"), lambda_body(resp)) == [f.ct, f.ct2, f.ct3]
    assert packed_keys(stored) == []

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "pacs-dicomweb")
    lam = load_handler(None)
    assert lam.handler.app.state.services.backend.settings.max_inline_response == lam.LAMBDA_MAX_INLINE
    assert lam.lambda_settings({"AWS_LAMBDA_FUNCTION_NAME": "x", "PACS_MAX_INLINE_RESPONSE": "7"}
                               ).max_inline_response == 7


def test_a_changed_instance_gets_a_new_packed_body(stored: MotoPacs, load_handler: Any) -> None:
    """The digest covers the ETags: a re-sent instance is never served from the old packed body."""
    f = files()
    handler = load_handler(LIMIT).handler
    study, series, _ = uids(f.ct)
    first = packing(P, study, stored.catalog.query_instances(P, study, series, []).rows)
    redirected(get(handler, f"/dicomweb/studies/{study}/series/{series}"))
    assert packed_keys(stored) == [first.key]
    stored.ingest(pipeline._variant(f.ct2, "", comment="changed"), pipeline.Outcome.REPLACED)
    assert stored.deliver(stored.receive()) == []
    rows = stored.catalog.query_instances(P, study, series, []).rows
    second = packing(P, study, rows)
    assert second.key != first.key and second.boundary != first.boundary
    content_type, body = follow(stored, redirected(get(handler, f"/dicomweb/studies/{study}/series/{series}")))
    assert content_type == second.content_type
    assert multipart_parts(content_type, body)[1] == stored.store.get(rows[1].key)


def test_the_filesystem_backend_ignores_the_limit(tmp_path: Path) -> None:
    f = files()
    backend = open_backend(Settings(data_dir=tmp_path, max_inline_response=LIMIT))
    ingest = IngestService(backend.store)
    for data in (f.ct, f.ct2):
        ingest.ingest(data)
    assert backend.queue is not None
    while index_worker.drain_once(backend.queue, IndexerService(backend.store, backend.catalog)):
        pass
    study, series, _ = uids(f.ct)
    with TestClient(create_app(backend)) as client:
        r = client.get(f"/dicomweb/studies/{study}/series/{series}", headers={"Accept": WADO_ACCEPT},
                       follow_redirects=False)
    assert r.status_code == 200
    assert multipart_parts(r.headers["content-type"], r.content) == [f.ct, f.ct2]
    assert not list((tmp_path / "objects").rglob("packed"))
    backend.close()


def test_packing_streams_in_parts(stored: MotoPacs, load_handler: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body larger than a part goes up as several parts of an S3 multipart upload, reassembled exact."""
    import moto.s3.models
    from pacs.services import packed, s3_stream

    monkeypatch.setattr(packed, "PART_SIZE", 16 * 1024)
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 1024)
    f = files()
    handler = load_handler(LIMIT).handler
    s3 = handler.app.state.services.backend.store.client
    parts: list[int] = []
    s3.meta.events.register("before-parameter-build.s3.UploadPart", lambda params, **kw: parts.append(len(params["Body"])))
    content_type, body = follow(stored, redirected(get(handler, f"/dicomweb/studies/{uids(f.ct)[0]}")))
    assert multipart_parts(content_type, body) == [f.ct, f.ct2, f.ct3]
    assert len(parts) == -(-len(body) // (16 * 1024)) > 1 and set(parts[:-1]) == {16 * 1024}
    assert list(s3_stream.pieces([b"ab", b"cde", b"f"], 4)) == [b"abcd", b"ef"]
