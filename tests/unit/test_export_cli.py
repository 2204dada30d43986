"""`pacs export` against a live server (uvicorn in a thread) whose tasks a thread runs."""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pacs.backends import Backend, ingest_service
from pacs.cli.main import main
from pacs.events.tasks import SqliteTaskQueue
from pacs.services.export_worker import drain

from functions.dicomweb.app import create_app
from tests.unit.conftest import MakePart10
from tests.unit.live_server import serve

STUDY = "1.2.826.0.1.3680043.8.498.99"


@pytest.fixture
def url(embedded: Backend, make_part10: MakePart10) -> Iterator[str]:
    ingest = ingest_service(embedded, index=True)
    for series in (1, 2):
        for n in range(2):
            ingest.ingest(make_part10(StudyInstanceUID=STUDY, SeriesInstanceUID=f"{STUDY}.{series}",
                                      SOPInstanceUID=f"{STUDY}.{series}.{n}", PatientID="P-CLI"))
    app = create_app(embedded)
    stop = threading.Event()

    def work() -> None:
        while not stop.wait(0.05):
            svc = getattr(app.state, "exports", None)
            if svc is not None:
                assert isinstance(svc.queue, SqliteTaskQueue)
                drain(svc, svc.queue)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        with serve(app) as port:
            yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        worker.join()


def test_export_zip_with_progress_and_download(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.zip"
    code = main(["export", "--url", url, "--study", STUDY, "--project", "cli", "--to", "zip", "--download", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "done export" in text and "4 of 4 instance(s) exported" in text and "0 failed, 0 held back" in text
    with zipfile.ZipFile(out) as zf:
        assert len(zf.namelist()) == 4
    job_id = text.split("export ", 1)[1].split()[0]
    assert main(["export", "status", job_id, "--url", url]) == 0
    assert main(["export", "list", "--url", url]) == 0
    listed = capsys.readouterr().out
    assert job_id in listed and "done" in listed


def test_query_and_series_to_a_partition_no_wait(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", "--url", url, "--query", "PatientID=P-CLI", "--series", f"{STUDY}/{STUDY}.1",
                 "--to", "partition:cli-deid", "--no-wait"])
    text = capsys.readouterr().out
    assert code == 0 and "queued" in text


def test_refused_request_shows_the_servers_reason(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", "--url", url, "--study", "9.9.9", "--to", "files"])
    assert code == 2
    assert "HTTP 400: study 9.9.9 is not in the archive" in capsys.readouterr().out
    assert main(["export", "--url", url, "--study", STUDY, "--to", "node:NOWHERE"]) == 2
    assert "no registered node 'NOWHERE'" in capsys.readouterr().out
    assert main(["export", "status", "nope", "--url", url]) == 2
    assert "HTTP 404: no export job 'nope'" in capsys.readouterr().out
    assert main(["export", "--url", "http://127.0.0.1:9", "--study", STUDY, "--to", "zip"]) == 2
    assert "cannot reach" in capsys.readouterr().out
