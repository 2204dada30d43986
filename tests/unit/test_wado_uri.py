"""WADO-URI: the stored object for contentType=application/dicom; clear errors otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pacs.backends import Backend
from pacs.services import index_worker
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService

from functions.dicomweb import wado_uri
from functions.dicomweb.app import create_app
from tests.unit.conftest import MakePart10

STUDY, SERIES, SOP = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.1.1", "1.2.826.0.1.3680043.8.498.1.1.1"
URL = f"/wado?requestType=WADO&studyUID={STUDY}&seriesUID={SERIES}&objectUID={SOP}"


@pytest.fixture
def stored(embedded: Backend, make_part10: MakePart10) -> bytes:
    data = make_part10()
    IngestService(embedded.store).ingest(data)
    assert embedded.queue is not None
    index_worker.drain_once(embedded.queue, IndexerService(embedded.store, embedded.catalog))
    return data


@pytest.fixture
def client(embedded: Backend, stored: bytes) -> Iterator[TestClient]:
    app = create_app(embedded)
    if not any(getattr(r, "path", "") == "/wado" for r in app.routes):
        app.include_router(wado_uri.router)
    with TestClient(app) as c:
        yield c


@pytest.mark.parametrize("extra", ["&contentType=application/dicom", "&contentType=application%2Fdicom%2C*%2F*",
                                   "&contentType=application/dicom&transferSyntax=1.2.840.10008.1.2.1"])
def test_returns_the_stored_object(client: TestClient, stored: bytes, extra: str) -> None:
    r = client.get(URL + extra)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/dicom"
    assert r.content == stored
    assert r.headers["content-length"] == str(len(stored))


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [
        (URL + "&contentType=image/gif", 406, "not available"),
        (URL + "&windowCenter=40", 400, "windowWidth"),
        (URL + "&rows=0", 400, "rows"),
        (URL + "&frameNumber=2", 400, "frame"),
        (URL + "&contentType=application/dicom&transferSyntax=1.2.840.10008.1.2.4.110", 406, "not one this server knows"),
        (URL + "&contentType=application/dicom&anonymize=yes", 406, "anonymize"),
        (URL.replace("requestType=WADO", "requestType=RSS") + "&contentType=application/dicom", 400, "requestType"),
        (f"/wado?requestType=WADO&studyUID={STUDY}&contentType=application/dicom", 400, "seriesUID"),
        (URL.replace(SOP, "1.2.3.4") + "&contentType=application/dicom", 404, "instance"),
        (URL.replace(SOP, "1.2.x_y") + "&contentType=application/dicom", 400, "objectUID"),
    ],
)
def test_errors_have_reasons(client: TestClient, url: str, status: int, words: str) -> None:
    r = client.get(url)
    assert r.status_code == status
    assert words in r.json()["error"]


@pytest.mark.parametrize(
    ("extra", "media", "magic"),
    [("", "image/jpeg", b"\xff\xd8"), ("&contentType=image/png", "image/png", b"\x89PNG"),
     ("&contentType=image/jpeg&windowCenter=40&windowWidth=400&rows=4&imageQuality=50", "image/jpeg", b"\xff\xd8")],
)
def test_rendered_images(client: TestClient, extra: str, media: str, magic: bytes) -> None:
    r = client.get(URL + extra)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == media and r.content.startswith(magic)


def test_rows_scale_the_image(client: TestClient) -> None:
    from io import BytesIO

    from PIL import Image

    big = Image.open(BytesIO(client.get(URL + "&contentType=image/png").content))
    small = Image.open(BytesIO(client.get(URL + "&contentType=image/png&rows=4").content))
    assert big.size == (8, 8) and small.size == (4, 4)
