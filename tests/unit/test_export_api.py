"""The /exports routes: status codes, reasons, progress, download (streamed or redirected)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pacs.backends import Backend, ingest_service
from pacs.events.tasks import SqliteTaskQueue
from pacs.services.export_worker import drain

from functions.dicomweb.app import create_app
from tests.unit.conftest import MakePart10

STUDY = "1.2.826.0.1.3680043.8.498.88"


@pytest.fixture
def client(embedded: Backend, make_part10: MakePart10) -> Iterator[TestClient]:
    ingest = ingest_service(embedded, index=True)
    for n in range(3):
        ingest.ingest(make_part10(StudyInstanceUID=STUDY, SeriesInstanceUID=f"{STUDY}.1",
                                  SOPInstanceUID=f"{STUDY}.1.{n}"))
    with TestClient(create_app(embedded)) as c:
        yield c


def run_tasks(client: TestClient) -> None:
    svc = client.app.state.exports  # type: ignore[attr-defined]
    assert isinstance(svc.queue, SqliteTaskQueue)
    drain(svc, svc.queue)


def test_post_get_list_and_download_a_zip(client: TestClient) -> None:
    r = client.post("/exports", json={"studies": [STUDY], "destination": {"type": "zip"}, "project": "p"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/exports/{job['id']}" and job["status"] == "queued"
    early = client.get(f"/exports/{job['id']}/download")
    assert early.status_code == 409 and "queued" in early.json()["error"]
    run_tasks(client)
    got = client.get(f"/exports/{job['id']}").json()
    assert got["status"] == "done" and got["progress"]["done"] == 3 and got["totals"]["instances"] == 3
    assert got["output"]["download"] == f"/exports/{job['id']}/download"
    assert [j["id"] for j in client.get("/exports").json()["jobs"]] == [job["id"]]
    dl = client.get(f"/exports/{job['id']}/download")
    assert dl.status_code == 200 and dl.headers["content-type"] == "application/zip"
    assert f"export-{job['id']}.zip" in dl.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(dl.content)) as zf:
        assert len(zf.namelist()) == 3 and zf.testzip() is None


def test_download_redirects_where_the_store_presigns(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    job = client.post("/exports", json={"studies": [STUDY], "destination": {"type": "zip"}}).json()
    run_tasks(client)
    store = client.app.state.exports.backend.exports_store  # type: ignore[attr-defined]
    monkeypatch.setattr(store, "presigned_get", lambda key, expires=900: f"https://s3.example/{key}?sig")
    r = client.get(f"/exports/{job['id']}/download", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith(
        f"https://s3.example/default/export/{job['id']}/export-{job['id']}-")
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", "the body is not JSON"),
    (b'{"studies": ["1.2.3"], "destination": {"type": "zip"}}', "study 1.2.3 is not in the archive"),
    (b'{"studies": [], "destination": {"type": "zip"}}', "nothing selected"),
    (b'{"studies": ["' + STUDY.encode() + b'"], "destination": {"node": "X"}}', "no registered node 'X'"),
])
def test_bad_requests_are_400_with_the_reason(client: TestClient, body: bytes, reason: str) -> None:
    r = client.post("/exports", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and reason in r.json()["error"]


def test_unknown_job_files_download_and_cancel(client: TestClient) -> None:
    assert client.get("/exports/nope").status_code == 404
    assert client.get("/exports/nope/download").json()["error"] == "no export job 'nope'"
    assert client.get("/exports?limit=0").status_code == 400
    job = client.post("/exports", json={"studies": [STUDY], "destination": {"type": "files"}}).json()
    cancelled = client.delete(f"/exports/{job['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.delete(f"/exports/{job['id']}").status_code == 409
    files = client.post("/exports", json={"studies": [STUDY], "destination": {"type": "files"}}).json()
    run_tasks(client)
    r = client.get(f"/exports/{files['id']}/download")
    assert r.status_code == 409 and "made no ZIP" in r.json()["error"]
    assert client.get(f"/exports/{files['id']}").json()["output"]["prefix"].endswith(f"/{files['id']}/files/")
