"""DELETE: objects, catalog rows and aggregates, replaced versions; the late event is a no-op."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pacs.backends import Backend
from pacs.services import index_worker
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService

from functions.dicomweb import delete
from functions.dicomweb.app import create_app
from tests.unit.conftest import MakePart10

S = "1.2.826.0.1.3680043.8.498.7"


def drain(backend: Backend) -> None:
    assert backend.queue is not None
    indexer = IndexerService(backend.store, backend.catalog)
    while index_worker.drain_once(backend.queue, indexer):
        pass


@pytest.fixture
def client(embedded: Backend, make_part10: MakePart10) -> Iterator[TestClient]:
    ingest = IngestService(embedded.store)
    for series in (1, 2):
        for n in (1, 2):
            ingest.ingest(make_part10(StudyInstanceUID=S, SeriesInstanceUID=f"{S}.{series}",
                                      SOPInstanceUID=f"{S}.{series}.{n}", InstanceNumber=n,
                                      Modality="CT" if series == 1 else "MR"))
    # a re-send with other content: the first version goes to history
    ingest.ingest(make_part10(StudyInstanceUID=S, SeriesInstanceUID=f"{S}.2", SOPInstanceUID=f"{S}.2.2",
                              InstanceNumber=2, Modality="MR", StudyDescription="v2"))
    drain(embedded)
    app = create_app(embedded)
    if not any(getattr(r, "path", "") == "/dicomweb/studies/{study}" and "DELETE" in getattr(r, "methods", ())
               for r in app.routes):
        app.include_router(delete.router, prefix="/dicomweb")
    with TestClient(app) as c:
        yield c


def objects(backend: Backend) -> list[str]:
    root = Path(backend.settings.data_dir) / "objects"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.dcm"))


def test_delete_instance_then_series_then_study(client: TestClient, embedded: Backend) -> None:
    assert client.delete(f"/dicomweb/studies/{S}/series/{S}.1/instances/{S}.1.1").status_code == 204
    study = client.get(f"/dicomweb/studies?StudyInstanceUID={S}").json()[0]
    assert study["00201208"]["Value"] == [3] and study["00201206"]["Value"] == [2]
    assert client.delete(f"/dicomweb/studies/{S}/series/{S}.2").status_code == 204
    study = client.get(f"/dicomweb/studies?StudyInstanceUID={S}").json()[0]
    assert study["00201208"]["Value"] == [1] and study["00080061"]["Value"] == ["CT"]
    assert not [k for k in objects(embedded) if "/history/" in k]  # replaced versions went with it
    derived = Path(embedded.settings.data_dir) / "objects" / "default" / "derived" / S
    packed = derived / "packed" / "x.multipart"  # a cached response body (the Lambda path)
    packed.parent.mkdir(parents=True, exist_ok=True)
    packed.write_bytes(b"a cached response body")
    assert client.delete(f"/dicomweb/studies/{S}").status_code == 204
    assert client.get("/dicomweb/studies").status_code == 204
    assert objects(embedded) == []
    assert not [p for p in derived.rglob("*") if p.is_file()]  # metadata and packed bodies gone too
    drain(embedded)  # the late ObjectRemoved events change nothing
    assert client.get("/dicomweb/studies").status_code == 204
    assert embedded.catalog.get_study("default", S) is None


def test_retrieve_after_delete_is_404(client: TestClient) -> None:
    client.delete(f"/dicomweb/studies/{S}/series/{S}.1")
    assert client.get(f"/dicomweb/studies/{S}/series/{S}.1").status_code == 404
    assert client.get(f"/dicomweb/studies/{S}/series/{S}.2").status_code == 200


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"/dicomweb/studies/{S}.9", 404),
        (f"/dicomweb/studies/{S}/series/{S}.9", 404),
        (f"/dicomweb/studies/{S}/series/{S}.1/instances/{S}.1.9", 404),
        ("/dicomweb/studies/1.2_x", 400),
    ],
)
def test_nothing_there(client: TestClient, embedded: Backend, path: str, status: int) -> None:
    before = objects(embedded)
    r = client.delete(path)
    assert r.status_code == status and r.json()["error"]
    assert objects(embedded) == before
