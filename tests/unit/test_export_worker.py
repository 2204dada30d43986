"""The embedded export worker: retries, giving up (the job still finishes), and the process pool."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pacs.backends import Backend, ingest_service, open_backend
from pacs.catalog.exports_sqlite import SqliteExportJobs
from pacs.config import Settings
from pacs.errors import StorageFailure
from pacs.events.tasks import SqliteTaskQueue
from pacs.services import export_worker
from pacs.services.export_worker import ExportWorker, drain
from pacs.services.exports import ExportService

from tests.unit.conftest import MakePart10

STUDY = "1.2.826.0.1.3680043.8.498.66"


def load(backend: Backend, make_part10: MakePart10) -> None:
    ingest = ingest_service(backend, index=True)
    for series in (1, 2):
        for n in range(2):
            ingest.ingest(make_part10(StudyInstanceUID=STUDY, SeriesInstanceUID=f"{STUDY}.{series}",
                                      SOPInstanceUID=f"{STUDY}.{series}.{n}"))


def test_a_failing_task_is_retried_then_given_up(embedded: Backend, make_part10: MakePart10,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    load(embedded, make_part10)
    d = embedded.settings.data_dir
    queue = SqliteTaskQueue(d / "tasks.db", max_attempts=3, visibility_timeout=30)
    svc = ExportService(embedded, SqliteExportJobs(d / "catalog.db"), queue)
    monkeypatch.setattr(export_worker, "RETRY_DELAY", 0.0)
    real_get = embedded.store.get
    calls: list[str] = []

    def get(key: str) -> bytes:
        if f"/series/{STUDY}.2/" in key:
            calls.append(key)
            raise StorageFailure(f"could not read {key}: the disk is gone")
        return real_get(key)

    monkeypatch.setattr(embedded.store, "get", get)
    job = svc.create({"studies": [STUDY], "destination": {"type": "files"}})
    deadline = time.monotonic() + 30
    while svc.get(job.id).status not in ("done", "failed") and time.monotonic() < deadline:  # type: ignore[union-attr]
        drain(svc, queue)
    got = svc.get(job.id)
    assert got is not None and got.status == "done", got
    assert (got.done, got.failed) == (2, 2) and len(calls) == 3  # three attempts of the first instance
    assert all("given up: StorageFailure" in f["reason"] for f in got.failures)
    assert [d.body["series"] for d in queue.dead_letters()] == [f"{STUDY}.2"]
    svc.close()


def test_the_worker_runs_jobs_in_a_process_pool(tmp_path: Path, make_part10: MakePart10) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    backend = open_backend(settings)
    load(backend, make_part10)
    worker = ExportWorker(settings, workers=1)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    svc = ExportService.from_backend(backend)
    try:
        job = svc.create({"studies": [STUDY], "destination": {"type": "zip"}})
        deadline = time.monotonic() + 60
        while (got := svc.get(job.id)) is not None and got.status not in ("done", "failed"):
            assert time.monotonic() < deadline, got
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(60)
        svc.close()
        backend.close()
    assert got is not None and got.status == "done" and got.done == 4 and worker.done == 1 + 2 + 1


def test_cli_lists_and_redrives_given_up_tasks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pacs.cli.main import main

    data = tmp_path / "data"
    data.mkdir()
    queue = SqliteTaskQueue(data / "tasks.db", max_attempts=1)
    queue.send({"exportJob": "j1", "step": "finish"})
    queue.fail(queue.receive(1)[0], "the bucket did not answer")
    assert main(["export", "dlq", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert '{"exportJob":"j1","step":"finish"}' in out and "the bucket did not answer" in out
    assert "1 task(s) given up" in out
    assert main(["export", "redrive", "--data-dir", str(data)]) == 0
    assert "redriven 1" in capsys.readouterr().out and queue.depth() == 1
    assert main(["export", "dlq", "--data-dir", str(tmp_path / "none")]) == 2
    queue.close()
