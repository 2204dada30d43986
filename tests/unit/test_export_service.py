"""Export jobs end to end on an embedded backend: selections, destinations, exact counts under
redelivery, held back and failing instances, bad requests."""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pacs.backends import Backend, ingest_service
from pacs.catalog.exports_sqlite import SqliteExportJobs
from pacs.catalog.nodes import RemoteNode
from pacs.deid import Deidentifier, HeldBack
from pacs.errors import StorageFailure
from pacs.events.tasks import SqliteTaskQueue
from pacs.services.export_worker import drain
from pacs.services.exports import ExportRequestError, ExportService
from pacs.storage.keys import instance_key
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt

from tests.unit.conftest import MakePart10

ROOT = "1.2.826.0.1.3680043.8.498.77"
A, B = f"{ROOT}.1", f"{ROOT}.2"  # studies: A has series .1 (3 instances) and .2 (2); B has one (1)


def sop(study: str, series: int, n: int) -> str:
    return f"{study}.{series}.{n}"


@pytest.fixture
def archive(embedded: Backend, make_part10: MakePart10) -> Backend:
    ingest = ingest_service(embedded, index=True)
    layout = {(A, 1): 3, (A, 2): 2, (B, 1): 1}
    for (study, series), count in layout.items():
        for n in range(1, count + 1):
            ingest.ingest(make_part10(
                StudyInstanceUID=study, SeriesInstanceUID=f"{study}.{series}", SOPInstanceUID=sop(study, series, n),
                PatientID="PID-A" if study == A else "PID-B", PatientName="Doe^Jane", SeriesNumber=series,
                InstanceNumber=n, Modality="CT" if series == 1 else "MR"))
    return embedded


@pytest.fixture
def service(archive: Backend) -> Iterator[ExportService]:
    d = archive.settings.data_dir
    svc = ExportService(archive, SqliteExportJobs(d / "catalog.db"), SqliteTaskQueue(d / "tasks.db"), chunk=2)
    yield svc
    svc.close()


def run(svc: ExportService) -> None:
    assert isinstance(svc.queue, SqliteTaskQueue)
    drain(svc, svc.queue)


def originals(backend: Backend) -> dict[str, bytes]:
    return {i.key: backend.store.get(i.key) for i in backend.store.list("default/studies/")}


def test_studies_to_files(service: ExportService, archive: Backend) -> None:
    before = originals(archive)
    job = service.create({"studies": [A], "destination": {"type": "files"}, "project": "p1"})
    assert job.status == "queued" and job.request["profile"] == "basic"
    run(service)
    got = service.get(job.id)
    assert got is not None and got.status == "done", got
    assert (got.series, got.instances, got.tasks) == (2, 5, 3)  # chunks of 2: 3 instances → 2 tasks
    assert (got.done, got.failed, got.held_back, got.failures) == (5, 0, 0, [])
    files = list(archive.exports_store.list(got.output["prefix"]))
    assert len(files) == 5 and got.bytes == sum(f.size for f in files)
    assert [f.key for f in archive.exports_store.list(f"default/export/{job.id}/")] == [f.key for f in files]
    assert list(archive.store.list("default/derived/exports/")) == []  # the plan is gone with the job
    for f in files:
        ds = pydicom.dcmread(io.BytesIO(archive.exports_store.get(f.key)))
        assert ds.PatientID != "PID-A" and ds.StudyInstanceUID.startswith("2.25.")
        assert A not in f.key  # no original UID in a key
    assert originals(archive) == before


def test_series_to_zip_streamed_and_files_removed(service: ExportService, archive: Backend) -> None:
    job = service.create({"series": [{"study": A, "series": f"{A}.2"}, {"study": B, "series": f"{B}.1"}],
                          "destination": {"type": "zip"}, "profile": "research"})
    run(service)
    got = service.get(job.id)
    assert got is not None and got.status == "done" and got.done == 3
    assert got.output["download"] == f"/exports/{job.id}/download" and got.output["files"] == 3
    with zipfile.ZipFile(io.BytesIO(archive.exports_store.get(got.output["zip"]))) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        assert len(names) == 3 and all(n.startswith("2.25.") and n.endswith(".dcm") for n in names)
        assert all(str(pydicom.dcmread(zf.open(n)).PatientName) != "Doe^Jane" for n in names)
    left = [i.key for i in archive.exports_store.list(f"default/export/{job.id}/files/")]
    assert left == []


def test_query_to_partition_is_indexed_and_searchable(service: ExportService, archive: Backend) -> None:
    job = service.create({"query": {"PatientID": "PID-A", "Modality": "CT"},
                          "destination": {"partition": "research"}})
    run(service)
    got = service.get(job.id)
    assert got is not None and got.status == "done" and (got.series, got.done) == (1, 3)
    studies = archive.catalog.query_studies("research", []).rows
    assert len(studies) == 1 and studies[0].n_instances == 3 and studies[0].study_uid.startswith("2.25.")
    assert {r.study_uid: r.n_instances for r in archive.catalog.query_studies("default", []).rows} == {A: 5, B: 1}


def test_redelivered_tasks_count_once(service: ExportService, archive: Backend) -> None:
    job = service.create({"studies": [A, B], "destination": {"type": "files"}})
    queue = service.queue
    assert isinstance(queue, SqliteTaskQueue)
    plan = queue.receive(1)[0]
    service.handle_task(plan.body)
    service.handle_task(plan.body)  # the plan delivered twice: its tasks queued twice
    queue.ack(plan.id)
    tasks = queue.receive(100)
    assert len(tasks) == 2 * 4
    for t in tasks:
        service.handle_task(t.body)
        queue.ack(t.id)
    run(service)  # the finish messages
    got = service.get(job.id)
    assert got is not None and got.status == "done"
    assert (got.instances, got.done, got.tasks_done, got.failed) == (6, 6, 4, 0)
    service.handle_task(tasks[0].body)  # later still: the job is done, nothing moves
    again = service.get(job.id)
    assert again is not None and again.done == 6


def test_parallel_workers_lose_no_count(service: ExportService, archive: Backend) -> None:
    job = service.create({"studies": [A, B], "destination": {"type": "files"}})
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            run(service)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run(service)
    got = service.get(job.id)
    assert not errors and got is not None and got.status == "done" and (got.done, got.tasks_done) == (6, 4)


def test_held_back_and_a_bad_instance_fail_alone(service: ExportService, archive: Backend,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    bad = sop(A, 1, 2)
    archive.store.put(instance_key("default", A, f"{A}.1", bad), b"not dicom at all" * 10)
    real = Deidentifier.part10
    burned = sop(A, 2, 1)

    def part10(self: Deidentifier, data: Any) -> Any:
        if burned.encode() in bytes(data):
            raise HeldBack("burned-in annotation (US) and no pixel rule covers it")
        return real(self, data)

    monkeypatch.setattr(Deidentifier, "part10", part10)
    job = service.create({"studies": [A], "destination": {"type": "files"}})
    run(service)
    got = service.get(job.id)
    assert got is not None and got.status == "done"
    assert (got.done, got.failed, got.held_back) == (3, 1, 1)
    by_sop = {f["sop"]: f for f in got.failures}
    assert by_sop[burned]["heldBack"] and "burned-in" in by_sop[burned]["reason"]
    assert bad in by_sop and not by_sop[bad].get("heldBack")


def test_node_destination_receives_every_instance_but_a_refused_one(service: ExportService, archive: Backend) -> None:
    received: list[str] = []
    ae = AE(ae_title="RESEARCH")
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)

    refused: list[str] = []

    def on_store(event: evt.Event) -> int:
        if not refused:  # the first one is refused: it fails alone
            refused.append(str(event.dataset.SOPInstanceUID))
            return 0xA700
        received.append(str(event.dataset.SOPInstanceUID))
        return 0

    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert archive.nodes is not None and server is not None
    try:
        archive.nodes.put_node(RemoteNode("RESEARCH", "127.0.0.1", server.server_address[1]))
        job = service.create({"studies": [A, B], "destination": {"node": "RESEARCH"}})
        run(service)
    finally:
        server.shutdown()
        ae.shutdown()
    got = service.get(job.id)
    assert got is not None and got.status == "done" and got.output["node"] == "RESEARCH"
    assert (got.done, got.failed) == (5, 1) and got.failures[0]["reason"] == "RESEARCH answered C-STORE status 0xA700"
    assert len(set(received)) == 5 and all(u.startswith("2.25.") for u in received)


def test_nothing_matched_fails_the_job(service: ExportService) -> None:
    job = service.create({"query": {"PatientID": "NOBODY"}, "destination": {"type": "zip"}})
    run(service)
    got = service.get(job.id)
    assert got is not None and got.status == "failed" and got.error == "the selection matched no instance"


def test_cancelled_job_does_nothing(service: ExportService, archive: Backend) -> None:
    job = service.create({"studies": [A], "destination": {"type": "files"}})
    assert service.cancel(job.id)
    run(service)
    got = service.get(job.id)
    assert got is not None and got.status == "cancelled" and got.done == 0


@pytest.mark.parametrize(("body", "reason"), [
    ([], "JSON object"),
    ({"destination": {"type": "zip"}}, "nothing selected"),
    ({"studies": ["1.2.3"]}, "'destination' is required"),
    ({"studies": [A], "destination": {"type": "tar"}}, "destination {'type': 'tar'}"),
    ({"studies": [A], "destination": {"partition": "default"}}, "never go into the source partition"),
    ({"studies": [A], "destination": {"partition": "Bad Name"}}, "partition 'Bad Name'"),
    ({"studies": [A], "destination": {"node": "NOWHERE"}}, "no registered node 'NOWHERE'"),
    ({"studies": ["9.9.9"], "destination": {"type": "zip"}}, "study 9.9.9 is not in the archive"),
    ({"studies": ["../x"], "destination": {"type": "zip"}}, "StudyInstanceUID"),
    ({"series": [{"study": A}], "destination": {"type": "zip"}}, "give {\"study\": UID"),
    ({"query": {"NoSuchKeyword": "x"}, "destination": {"type": "zip"}}, "query:"),
    ({"query": {"SOPInstanceUID": "1.2"}, "destination": {"type": "zip"}}, "not a study or series attribute"),
    ({"studies": [A], "profile": "nope", "destination": {"type": "zip"}}, "unknown profile 'nope'"),
    ({"studies": [A], "options": ["retain-everything"], "destination": {"type": "zip"}}, "unknown option"),
    ({"studies": [A], "destination": {"type": "zip"}, "colour": "red"}, "unknown field(s) ['colour']"),
])
def test_bad_requests_say_why(service: ExportService, body: Any, reason: str) -> None:
    with pytest.raises(ExportRequestError) as info:
        service.create(body)
    assert reason in str(info.value)
    assert service.recent() == []


def test_a_finish_delivered_twice_at_once_keeps_the_recorded_zip(service: ExportService, archive: Backend) -> None:
    job = service.create({"studies": [A], "destination": {"type": "zip"}})
    queue = service.queue
    assert isinstance(queue, SqliteTaskQueue)
    while tasks := [t for t in queue.receive(10) if t.body["step"] != "finish"]:
        for t in tasks:
            service.handle_task(t.body)
            queue.ack(t.id)
    snapshot = service.jobs.get(job.id)  # what both deliveries of `finish` read, before either wrote
    assert snapshot is not None and snapshot.status == "running"
    service._finish(snapshot)
    service._finish(snapshot)  # the late twin: finds the job recorded, leaves no archive of its own
    got = service.get(job.id)
    assert got is not None and got.status == "done"
    with zipfile.ZipFile(io.BytesIO(archive.exports_store.get(got.output["zip"]))) as zf:
        assert len(zf.namelist()) == 5
    assert [i.key for i in archive.exports_store.list(f"default/export/{job.id}/") if i.key.endswith(".zip")] \
        == [got.output["zip"]]


def test_deliveries_by_a_queue_with_a_redrive_policy(service: ExportService, archive: Backend,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert service.handle_delivery({"exportJob": "nope"}, attempt=1, max_attempts=3) == "dropped"
    job = service.create({"series": [{"study": B, "series": f"{B}.1"}], "destination": {"type": "files"}})
    queue = service.queue
    assert isinstance(queue, SqliteTaskQueue)
    plan = queue.receive(1)[0]
    assert service.handle_delivery(plan.body, attempt=1, max_attempts=3) == "done"
    queue.ack(plan.id)
    task = queue.receive(1)[0]

    def broken(key: str) -> bytes:
        raise StorageFailure("the bucket did not answer")

    monkeypatch.setattr(archive.store, "get", broken)
    with pytest.raises(StorageFailure):
        service.handle_delivery(task.body, attempt=2, max_attempts=3)
    assert service.handle_delivery(task.body, attempt=3, max_attempts=3) == "given up"
    queue.ack(task.id)
    run(service)
    got = service.get(job.id)
    assert got is not None and got.status == "failed" and got.failed == 1
    assert got.failures[0]["reason"] == "given up: StorageFailure: the bucket did not answer"


def test_the_crosswalk_and_the_installations_pixel_rules(archive: Backend, make_part10: MakePart10,
                                                         tmp_path: Path) -> None:
    """A job asking for the crosswalk records its pairs (encrypted, for `pacs deid reidentify`); under Clean
    Pixel Data the installation's pixel rules (PACS_DEID_PIXEL_RULES) blank the regions they cover, and
    an ultrasound image no rule covers is held back, not exported."""
    import dataclasses

    import numpy as np
    from pacs.deid.crosswalk import Crosswalk
    from pacs.deid.project import project_keys

    rules = tmp_path / "pixels.toml"
    rules.write_text('[[rule]]\nmodality = "CT"\nregions = [[0, 0, 4, 2]]\n')
    archive.settings = dataclasses.replace(archive.settings, deid_pixel_rules=str(rules))
    ingest_service(archive, index=True).ingest(make_part10(
        StudyInstanceUID=B, SeriesInstanceUID=f"{B}.3", SOPInstanceUID=sop(B, 3, 1), PatientID="PID-B",
        PatientName="Doe^Jane", SeriesNumber=3, InstanceNumber=1, Modality="US"))
    d = archive.settings.data_dir
    svc = ExportService(archive, SqliteExportJobs(d / "catalog.db"), SqliteTaskQueue(d / "tasks.db"))
    try:
        job = svc.create({"studies": [B], "destination": {"type": "files"}, "project": "trial-9",
                          "options": ["clean-pixel-data"], "crosswalk": True})
        run(svc)
        got = svc.get(job.id)
    finally:
        svc.close()
    assert got is not None and (got.status, got.done, got.held_back) == ("done", 1, 1), got
    [held] = got.failures
    assert held["sop"] == sop(B, 3, 1) and held["heldBack"]
    [f] = archive.exports_store.list(got.output["prefix"])
    ds = pydicom.dcmread(io.BytesIO(archive.exports_store.get(f.key)))
    pixels = ds.pixel_array
    original = np.arange(64, dtype=np.int16).reshape(8, 8)
    assert (pixels[:2, :4] == pixels.min()).all() and (pixels[2:] == original[2:]).all()
    assert ds.BurnedInAnnotation == "NO"
    walk = Crosswalk(archive.exports_store, "default", "trial-9", project_keys(archive.settings)("trial-9"))
    assert ("patient_id", "PID-B") in walk.lookup(str(ds.PatientID))
    for entry in archive.exports_store.list("default/export/crosswalk/"):
        assert b"PID-B" not in archive.exports_store.get(entry.key)


def test_only_the_allowed_partitions_take_copies(archive: Backend) -> None:
    """PACS_EXPORT_PARTITIONS (set by the AWS stack to what its anonymizer may write): another partition
    is refused with the reason, before anything runs."""
    import dataclasses

    archive.settings = dataclasses.replace(archive.settings, export_partitions="research-deid")
    d = archive.settings.data_dir
    svc = ExportService(archive, SqliteExportJobs(d / "catalog.db"), SqliteTaskQueue(d / "tasks.db"))
    try:
        with pytest.raises(ExportRequestError, match="may not write into partition 'elsewhere'"):
            svc.create({"studies": [A], "destination": {"partition": "elsewhere"}})
        assert svc.create({"studies": [A], "destination": {"partition": "research-deid"}}).status == "queued"
    finally:
        svc.close()
