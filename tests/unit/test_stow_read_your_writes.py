"""STOW-RS is read-your-writes on the embedded backend (DESIGN.md 4a), with NO index worker running:
`dicomweb-client` stores an instance and at once retrieves it (by its RetrieveURL too), finds it with
QIDO-RS and deletes it, 100 times over a real uvicorn server. The queued object events are then
indexed by the worker as the safety net: they change nothing.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pacs.backends import Backend, ingest_service
from pacs.events.local import LocalQueue
from pacs.services import index_worker
from pacs.services.indexer import IndexerService, IndexOutcome
from pacs.services.ingest import IngestService
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from functions.dicomweb.app import create_app
from tests.unit.conftest import MakePart10
from tests.unit.live_server import serve

S = "1.2.826.0.1.3680043.8.498.4242"
ROUNDS = 100


@pytest.fixture
def web(embedded: Backend) -> Iterator[DICOMwebClient]:
    with serve(create_app(embedded)) as port:
        yield DICOMwebClient(url=f"http://127.0.0.1:{port}/dicomweb")


def pending(backend: Backend) -> int:
    """How many object events wait in the embedded queue."""
    assert isinstance(backend.queue, LocalQueue)
    return backend.queue.depth()


def catalogued(backend: Backend) -> list[tuple[str, str]]:
    page = backend.catalog.query_instances(backend.settings.partition, S, None, ())
    return sorted((r.sop_uid, r.etag) for r in page.rows)


def attempt(not_found: list[str], name: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`call(*args, **kwargs)`; a 404 is noted in `not_found` (None returned), any other error raised."""
    try:
        result = call(*args, **kwargs)
        if isinstance(result, requests.Response):
            result.raise_for_status()
        return result
    except requests.HTTPError as exc:
        if exc.response is None or exc.response.status_code != 404:
            raise
        not_found.append(name)
        return None


def test_store_then_retrieve_search_delete_at_once(web: DICOMwebClient, embedded: Backend,
                                                   make_part10: MakePart10) -> None:
    not_found: list[str] = []
    accept = {"Accept": 'multipart/related; type="application/dicom"'}
    for n in range(1, ROUNDS + 1):
        series, sop = f"{S}.{n}", f"{S}.{n}.1"
        data = make_part10(StudyInstanceUID=S, SeriesInstanceUID=series, SOPInstanceUID=sop, InstanceNumber=n)
        result = web.store_instances([dcmread(DicomBytesIO(data))])
        (ref,) = result.ReferencedSOPSequence
        wado = attempt(not_found, f"WADO-RS of {n}", web.retrieve_instance, S, series, sop)
        assert wado is None or wado.SOPInstanceUID == sop
        found = attempt(not_found, f"QIDO-RS of {n}", web.search_for_instances, S, series)
        assert found is None or [d["00080018"]["Value"] for d in found] == [[sop]]
        attempt(not_found, f"RetrieveURL of {n}", requests.get, ref.RetrieveURL, headers=accept, timeout=30)
        attempt(not_found, f"metadata of {n}", web.retrieve_instance_metadata, S, series, sop)
        if n % 2:  # every other instance is deleted at once; the others stay
            attempt(not_found, f"DELETE of {n}", web.delete_instance, S, series, sop)
            assert web.search_for_instances(S, series) == []
    assert not_found == []
    # No worker ran: every object event is still queued. Indexing them now changes nothing.
    assert pending(embedded) >= ROUNDS
    indexer = IndexerService(embedded.store, embedded.catalog)
    before = catalogued(embedded)
    assert embedded.queue is not None
    while index_worker.drain_once(embedded.queue, indexer):
        pass
    assert catalogued(embedded) == before and len(before) == ROUNDS // 2
    assert pending(embedded) == 0
    study = embedded.catalog.get_study(embedded.settings.partition, S)
    assert study is not None and study.n_instances == ROUNDS // 2


def test_the_event_indexer_finds_a_stored_instance_indexed(embedded: Backend, make_part10: MakePart10) -> None:
    """The safety net is cheap and idempotent: the created event of an instance indexed on store is a
    no-op (UNCHANGED), and an instance stored without indexing is still indexed by its event."""
    indexed = ingest_service(embedded, index=True).ingest(make_part10(SOPInstanceUID=f"{S}.1.1"))
    plain = ingest_service(embedded, index=False).ingest(make_part10(SOPInstanceUID=f"{S}.1.2"))
    p = embedded.settings.partition
    assert embedded.catalog.get_instance(p, indexed.header.study_uid, indexed.header.series_uid, f"{S}.1.1")
    assert embedded.catalog.get_instance(p, plain.header.study_uid, plain.header.series_uid, f"{S}.1.2") is None
    assert embedded.queue is not None
    indexer = IndexerService(embedded.store, embedded.catalog)
    outcomes = {m.event.key: indexer.handle(m.event) for m in embedded.queue.receive(10)}
    assert outcomes == {indexed.key: IndexOutcome.UNCHANGED, plain.key: IndexOutcome.INSERTED}


def test_indexing_on_store_reads_the_local_copy_not_the_store(embedded: Backend, make_part10: MakePart10,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The header is read from the bytes just stored (on S3: no GET back); only when the store kept
    other bytes (duplicate policy `keep`) is the stored object read."""
    opened: list[str] = []
    store_open = embedded.store.open
    monkeypatch.setattr(embedded.store, "open", lambda key: opened.append(key) or store_open(key))
    spool = tmp_path / "first.dcm"  # a spool file may become the stored object (hard-linked)
    spool.write_bytes(make_part10(SOPInstanceUID=f"{S}.1.1", PatientID="FIRST"))
    first = ingest_service(embedded, index=True).ingest_file(spool)
    assert opened == []
    spool = tmp_path / "second.dcm"
    spool.write_bytes(make_part10(SOPInstanceUID=f"{S}.1.1", PatientID="SECOND"))
    embedded.settings = dataclasses.replace(embedded.settings, duplicate_policy="keep")
    kept = ingest_service(embedded, index=True).ingest_file(spool)
    assert kept.outcome.value == "kept-existing" and set(opened) == {first.key}
    study = embedded.catalog.get_study(embedded.settings.partition, first.header.study_uid)
    assert study is not None and study.attrs["00100020"]["Value"] == ["FIRST"]  # what the store holds


class _Watched(IndexerService):
    """The real indexer, noting how many `index` calls run at once (each waits a moment for another)."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend.store, backend.catalog)
        self.inside, self.most, self.lock = 0, 0, threading.Lock()
        self.two_inside = threading.Event()

    def index(self, *args: Any, **kwargs: Any) -> IndexOutcome:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
            if self.inside == 2:
                self.two_inside.set()
        try:
            self.two_inside.wait(2.0)  # serial: never set; parallel: set as soon as the other enters
            return super().index(*args, **kwargs)
        finally:
            with self.lock:
                self.inside -= 1


@pytest.mark.parametrize("serial", [True, False])
def test_the_parts_of_a_request_are_indexed_one_at_a_time(embedded: Backend, make_part10: MakePart10,
                                                          tmp_path: Path, serial: bool) -> None:
    """STOW-RS stores parts in parallel but indexes them in turn (`serial_index`): the parts of a
    study would otherwise contend for its catalog items. Both are indexed either way."""
    watched = _Watched(embedded)
    ingest = IngestService(embedded.store, indexer=watched, serial_index=serial)
    paths = []
    for n in (1, 2):
        paths.append(tmp_path / f"{n}.dcm")
        paths[-1].write_bytes(make_part10(SOPInstanceUID=f"{S}.1.{n}"))
    with ThreadPoolExecutor(2) as pool:
        stored = list(pool.map(ingest.ingest_file, paths))
    assert watched.most == (1 if serial else 2)
    p = embedded.settings.partition
    assert all(embedded.catalog.get_instance(p, s.header.study_uid, s.header.series_uid, s.header.sop_instance_uid)
               for s in stored)
