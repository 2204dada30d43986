"""STOW-RS through HTTP on the embedded backend: store, report, refuse, stream."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pacs.backends import Backend
from pacs.dicom.multipart import MultipartParser, PartData, PartHeaders, parse_content_type
from pacs.services import index_worker
from pacs.services.indexer import IndexerService
from pacs.storage.keys import instance_key
from pydicom.uid import CTImageStorage

from functions.dicomweb import stow
from functions.dicomweb.app import create_app
from tests.unit.conftest import MakePart10

S = "1.2.826.0.1.3680043.8.498.77"
OTHER = "1.2.826.0.1.3680043.8.498.88"
BOUNDARY = "0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1"
CT = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'
BASE = "http://testserver/dicomweb/studies"


def with_stow(backend: Backend) -> FastAPI:
    app = create_app(backend)
    if not any(getattr(r, "endpoint", None) is stow.store_instances for r in app.routes):
        app.include_router(stow.router, prefix="/dicomweb")
    return app


@pytest.fixture
def client(embedded: Backend) -> Iterator[TestClient]:
    with TestClient(with_stow(embedded)) as c:
        yield c


def body(*parts: bytes | tuple[str, bytes], close: bool = True) -> bytes:
    """A body as dicomweb-client builds it: CRLF before each delimiter, none after the last."""
    out = bytearray()
    for part in parts:
        ctype, data = part if isinstance(part, tuple) else ("application/dicom", part)
        out += f"\r\n--{BOUNDARY}\r\nContent-Type: {ctype}\r\n\r\n".encode() + data
    if close:
        out += f"\r\n--{BOUNDARY}--".encode()
    return bytes(out)


def instance(make_part10: MakePart10, n: int, study: str = S, **attrs: Any) -> bytes:
    uids = {"StudyInstanceUID": study, "SeriesInstanceUID": f"{study}.1", "SOPInstanceUID": f"{study}.1.{n}"}
    return make_part10(**{**uids, "InstanceNumber": n, **attrs})


def drain(backend: Backend) -> None:
    assert backend.queue is not None
    while index_worker.drain_once(backend.queue, IndexerService(backend.store, backend.catalog)):
        pass


def values(item: dict[str, Any], tag: str) -> list[Any]:
    return list(item[tag]["Value"])


def failures(r: Any) -> list[int]:
    return [values(i, "00081197")[0] for i in r.json()["00081198"]["Value"]]


def wado_parts(client: TestClient, url: str) -> list[bytes]:
    r = client.get(url)
    assert r.status_code == 200
    parser = MultipartParser(parse_content_type(r.headers["content-type"])[1]["boundary"])
    parts: list[bytes] = []
    for event in parser.feed(r.content):
        if isinstance(event, PartHeaders):
            parts.append(b"")
        elif isinstance(event, PartData):
            parts[-1] += event.data
    parser.close()
    return parts


def test_store_three_then_query_and_retrieve(client: TestClient, embedded: Backend, make_part10: MakePart10) -> None:
    sent = [instance(make_part10, n) for n in (1, 2, 3)]
    r = client.post("/dicomweb/studies", content=body(*sent), headers={"Content-Type": CT})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/dicom+json"
    doc = r.json()
    assert values(doc, "00081190") == [f"{BASE}/{S}"]
    assert "00081198" not in doc
    refs = doc["00081199"]["Value"]
    assert [values(i, "00081155")[0] for i in refs] == [f"{S}.1.{n}" for n in (1, 2, 3)]
    assert all(values(i, "00081150") == [CTImageStorage] for i in refs)
    assert [values(i, "00081190")[0] for i in refs] == [
        f"{BASE}/{S}/series/{S}.1/instances/{S}.1.{n}" for n in (1, 2, 3)]
    assert embedded.spool_dir is not None and not list(embedded.spool_dir.iterdir())  # spool cleaned

    drain(embedded)
    q = client.get(f"/dicomweb/studies/{S}/instances")
    assert sorted(i["00080018"]["Value"][0] for i in q.json()) == [f"{S}.1.{n}" for n in (1, 2, 3)]
    for n, data in enumerate(sent, 1):
        assert wado_parts(client, f"/dicomweb/studies/{S}/series/{S}.1/instances/{S}.1.{n}") == [data]


def test_store_into_a_study_url(client: TestClient, make_part10: MakePart10) -> None:
    r = client.post(f"/dicomweb/studies/{S}", content=body(instance(make_part10, 1)),
                    headers={"Content-Type": f"multipart/related; type=application/dicom; boundary={BOUNDARY}"})
    assert r.status_code == 200 and values(r.json(), "00081190") == [f"{BASE}/{S}"]


def test_duplicates(client: TestClient, embedded: Backend, make_part10: MakePart10) -> None:
    first = instance(make_part10, 1)
    for _ in range(2):  # the same bytes again: success, nothing changes
        r = client.post("/dicomweb/studies", content=body(first), headers={"Content-Type": CT})
        assert r.status_code == 200
    changed = instance(make_part10, 1, PatientName="Other^Name")
    r = client.post("/dicomweb/studies", content=body(changed), headers={"Content-Type": CT})
    assert r.status_code == 200  # default policy: keep the newest
    assert embedded.store.get(instance_key("default", S, f"{S}.1", f"{S}.1.1")) == changed


def test_mixed_parts_are_202_with_reasons(client: TestClient, embedded: Backend, make_part10: MakePart10) -> None:
    good = instance(make_part10, 1)
    truncated = instance(make_part10, 2)[:-40]
    bad_uid = instance(make_part10, 3, SOPInstanceUID="1.2.abc_d")
    cut_off = instance(make_part10, 4)
    content = body(good, b"not DICOM at all", truncated, bad_uid, ("text/plain", b"hello"), cut_off,
                   close=False)[:-100]
    r = client.post("/dicomweb/studies", content=content, headers={"Content-Type": CT})
    assert r.status_code == 202, r.text
    doc = r.json()
    assert [values(i, "00081155")[0] for i in doc["00081199"]["Value"]] == [f"{S}.1.1"]
    assert failures(r) == [0xC000, 0xC000, 0xA900, 0xC000, 0xC000]
    assert "Warning" in r.headers and "close delimiter" in r.headers["Warning"]
    assert [b.key for b in embedded.store.list("default/studies/")] == [instance_key("default", S, f"{S}.1", f"{S}.1.1")]
    drain(embedded)
    q = client.get(f"/dicomweb/studies/{S}/instances")
    assert [i["00080018"]["Value"][0] for i in q.json()] == [f"{S}.1.1"]
    assert embedded.spool_dir is not None and not list(embedded.spool_dir.iterdir())


def test_all_failed_is_409(client: TestClient) -> None:
    r = client.post("/dicomweb/studies", content=body(b"junk", b"more junk"), headers={"Content-Type": CT})
    assert r.status_code == 409 and failures(r) == [0xC000, 0xC000]
    assert "00081199" not in r.json()


def test_foreign_instance_in_a_study_url_is_not_stored(client: TestClient, embedded: Backend,
                                                       make_part10: MakePart10) -> None:
    mine, foreign = instance(make_part10, 1), instance(make_part10, 2, study=OTHER)
    r = client.post(f"/dicomweb/studies/{S}", content=body(mine, foreign), headers={"Content-Type": CT})
    assert r.status_code == 202
    (failed,) = r.json()["00081198"]["Value"]
    assert values(failed, "00081197") == [0xA900]
    assert values(failed, "00081155") == [f"{OTHER}.1.2"] and values(failed, "00081150") == [CTImageStorage]
    assert embedded.store.head(instance_key("default", OTHER, f"{OTHER}.1", f"{OTHER}.1.2")) is None
    r = client.post(f"/dicomweb/studies/{S}", content=body(foreign), headers={"Content-Type": CT})
    assert r.status_code == 409 and failures(r) == [0xA900]


@pytest.mark.parametrize(
    "content_type",
    ["application/dicom", "multipart/mixed; boundary=x", "multipart/related; type=image/jpeg; boundary=x",
     'multipart/related; type="application/dicom+xml"; boundary=x', ""],
)
def test_unsupported_media_types_are_415(client: TestClient, content_type: str) -> None:
    r = client.post("/dicomweb/studies", content=b"x", headers={"Content-Type": content_type})
    assert r.status_code == 415 and r.json()["error"]


def test_dicom_xml_stow_says_not_supported(client: TestClient) -> None:
    r = client.post("/dicomweb/studies", content=b"x",
                    headers={"Content-Type": 'multipart/related; type="application/dicom+xml"; boundary=x'})
    assert "dicom+xml metadata is not supported" in r.json()["error"]


@pytest.mark.parametrize(
    ("content_type", "content", "reason"),
    [
        ('multipart/related; type="application/dicom"', b"--x\r\n\r\nx\r\n--x--", "no boundary"),
        ('multipart/related; type="application/dicom"; boundary=wrong', None, "no delimiter"),
        (CT, "unclosed", "close delimiter"),
        (CT, f"\r\n--{BOUNDARY}--".encode(), "no parts"),
    ],
)
def test_malformed_bodies_are_400(client: TestClient, make_part10: MakePart10, content_type: str,
                                   content: bytes | str | None, reason: str) -> None:
    data = instance(make_part10, 1)
    if content is None:
        content = body(data)
    elif content == "unclosed":
        content = body(data, close=False)
    assert isinstance(content, bytes)
    r = client.post("/dicomweb/studies", content=content, headers={"Content-Type": content_type})
    assert r.status_code == 400 and reason in r.json()["error"], r.text


def test_invalid_study_uid_in_the_url(client: TestClient) -> None:
    r = client.post("/dicomweb/studies/not-a-uid", content=b"", headers={"Content-Type": CT})
    assert r.status_code == 400


class _Adapter(requests.adapters.BaseAdapter):
    """A requests transport that sends through a Starlette TestClient (for dicomweb-client)."""

    def __init__(self, client: TestClient) -> None:
        super().__init__()
        self.client = client

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        r = self.client.request(request.method or "GET", request.url or "", content=request.body,  # type: ignore[arg-type]
                                headers=dict(request.headers))
        response = requests.Response()
        response.status_code, response._content = r.status_code, r.content
        response.headers = requests.structures.CaseInsensitiveDict(r.headers)
        response.url, response.request, response.encoding = request.url or "", request, "utf-8"
        return response

    def close(self) -> None:
        pass


def test_dicomweb_client_store_and_retrieve(client: TestClient, embedded: Backend, make_part10: MakePart10) -> None:
    from dicomweb_client.api import DICOMwebClient
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO

    session = requests.Session()
    session.mount("http://testserver", _Adapter(client))
    dw = DICOMwebClient(url="http://testserver/dicomweb", session=session)
    datasets = [dcmread(DicomBytesIO(instance(make_part10, n))) for n in (1, 2)]
    result = dw.store_instances(datasets)
    assert [i.ReferencedSOPInstanceUID for i in result.ReferencedSOPSequence] == [f"{S}.1.1", f"{S}.1.2"]
    assert "FailedSOPSequence" not in result
    drain(embedded)
    assert len(dw.search_for_instances(study_instance_uid=S)) == 2
    got = dw.retrieve_instance(S, f"{S}.1", f"{S}.1.2")
    assert got.SOPInstanceUID == f"{S}.1.2" and got.PixelData == datasets[1].PixelData


def _asgi_post(app: FastAPI, path: str, headers: dict[str, str], chunks: Iterator[bytes]) -> tuple[int, bytes]:
    """POST a body chunk by chunk straight to the ASGI app (TestClient would read it whole)."""
    status, out = 0, bytearray()

    async def receive() -> dict[str, Any]:
        chunk = next(chunks, None)
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            out.extend(message.get("body", b""))

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234), "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    return status, bytes(out)


def post_streamed(app: FastAPI, content_type: str, content: memoryview) -> tuple[int, bytes, int]:
    """POST `content` to /dicomweb/studies in 64 KiB chunks: (status, body, peak traced memory)."""

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(content), 65536):
            yield bytes(content[start:start + 65536])

    tracemalloc.start()
    try:
        status, out = _asgi_post(app, "/dicomweb/studies", {"content-type": content_type}, chunks())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return status, out, peak


def test_a_large_body_is_streamed_not_held(embedded: Backend, make_part10: MakePart10) -> None:
    size = 50 * 1024 * 1024
    data = instance(make_part10, 1, Rows=size // 2 // 1024, Columns=1024, PixelData=bytes(size))
    content = memoryview(body(data))
    status, out, peak = post_streamed(with_stow(embedded), CT, content)
    assert status == 200, out
    assert peak < 10 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while streaming {len(content) / 2**20:.0f} MiB"
    with embedded.store.open(instance_key("default", S, f"{S}.1", f"{S}.1.1")) as fh:
        assert fh.read() == data
