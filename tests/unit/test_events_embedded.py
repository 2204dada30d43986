"""Domain events on the embedded backend: the SQLite event log, and what the indexer emits into it.

InstanceStored + StudyUpdated after an insert or a replacement, InstanceDeleted + StudyUpdated after
a removal; a duplicate, superseded or replayed event emits nothing new.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from pacs.backends import Backend
from pacs.events.embedded import EmbeddedEventLog
from pacs.events.model import ObjectEvent
from pacs.services import index_worker
from pacs.services.indexer import IndexerService, IndexOutcome
from pacs.services.ingest import IngestService, Outcome

from tests.unit.conftest import MakePart10

S = "1.2.826.0.1.3680043.8.498.61"
CT = "1.2.840.10008.5.1.4.1.1.2"


def test_log_appends_and_reads_by_cursor(tmp_path: Path) -> None:
    log = EmbeddedEventLog(tmp_path / "events.db")
    assert log.read() == [] and log.last_id() == 0
    log.publish("InstanceStored", {"n": 1})
    log.publish("StudyUpdated", {"n": 2})
    log.publish("InstanceStored", {"n": 3})
    events = log.read()
    assert [(e.detail_type, e.detail["n"], e.source) for e in events] == [
        ("InstanceStored", 1, "pacs"), ("StudyUpdated", 2, "pacs"), ("InstanceStored", 3, "pacs")]
    assert [e.detail["n"] for e in log.read(after=events[0].id)] == [2, 3]
    assert [e.detail["n"] for e in log.read(after=0, limit=1)] == [1]
    assert [e.detail["n"] for e in log.read(detail_types=("InstanceStored",))] == [1, 3]
    assert log.last_id() == events[-1].id
    log.close()
    reopened = EmbeddedEventLog(tmp_path / "events.db")  # durable: committed before publish returned
    assert [e.detail["n"] for e in reopened.read()] == [1, 2, 3]
    reopened.close()


def test_concurrent_publishers_lose_nothing(tmp_path: Path) -> None:
    """Writers with their own connections (as the gateway's processes have) append every event."""
    logs = [EmbeddedEventLog(tmp_path / "events.db") for _ in range(3)]

    def publish(log: EmbeddedEventLog, w: int) -> None:
        for n in range(50):
            log.publish("InstanceStored", {"writer": w, "n": n})
        log.close()

    threads = [threading.Thread(target=publish, args=(log, w)) for w, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    reader = EmbeddedEventLog(tmp_path / "events.db")
    events = reader.read(limit=1000)
    assert sorted((e.detail["writer"], e.detail["n"]) for e in events) == [
        (w, n) for w in range(3) for n in range(50)]
    for w in range(3):  # each writer's events in its own order
        assert [e.detail["n"] for e in events if e.detail["writer"] == w] == list(range(50))
    reader.close()


class Events:
    """The embedded backend's event log read from a cursor: what arrived since the last look."""

    def __init__(self, backend: Backend) -> None:
        assert isinstance(backend.events, EmbeddedEventLog)
        self.log = backend.events
        self.cursor = self.log.last_id()

    def new(self) -> list[tuple[str, dict[str, Any]]]:
        events = self.log.read(after=self.cursor, limit=1000)
        if events:
            self.cursor = events[-1].id
        return [(e.detail_type, e.detail) for e in events]


def instance(make_part10: MakePart10, series: int, n: int, **attrs: Any) -> bytes:
    return make_part10(StudyInstanceUID=S, SeriesInstanceUID=f"{S}.{series}", SOPInstanceUID=f"{S}.{series}.{n}",
                       InstanceNumber=n, Modality="CT" if series == 1 else "MR", **attrs)


@pytest.fixture
def indexer(embedded: Backend) -> IndexerService:
    assert embedded.events is not None
    return IndexerService(embedded.store, embedded.catalog, embedded.events)


def drain(embedded: Backend, indexer: IndexerService) -> None:
    assert embedded.queue is not None
    while index_worker.drain_once(embedded.queue, indexer):
        pass


def test_indexer_emits_after_catalog_changes_only(
    embedded: Backend, indexer: IndexerService, make_part10: MakePart10
) -> None:
    events = Events(embedded)
    ingest = IngestService(embedded.store)
    first = instance(make_part10, 1, 1)
    second = instance(make_part10, 2, 1)
    k1 = ingest.ingest(first).key
    k2 = ingest.ingest(second).key
    drain(embedded, indexer)
    got = events.new()
    assert [t for t, _ in got] == ["InstanceStored", "StudyUpdated", "InstanceStored", "StudyUpdated"]
    stored, study = got[2][1], got[3][1]
    head = embedded.store.head(k2)
    assert head is not None
    assert stored == {
        "partition": "default", "studyInstanceUID": S, "seriesInstanceUID": f"{S}.2",
        "sopInstanceUID": f"{S}.2.1", "sopClassUID": CT, "transferSyntaxUID": "1.2.840.10008.1.2.1",
        "key": k2, "size": len(second), "etag": head.etag, "versionId": None, "replaced": False,
        "modality": "MR",
    }
    assert study == {
        "partition": "default", "studyInstanceUID": S, "deleted": False, "numberOfSeries": 2,
        "numberOfInstances": 2, "bytes": len(first) + len(second), "modalities": ["CT", "MR"],
        "sopClasses": [CT], "cause": {"detailType": "InstanceStored", "sopInstanceUID": f"{S}.2.1"},
    }

    # Replayed and duplicate events: the catalog does not change, nothing is emitted.
    h1 = embedded.store.head(k1)
    assert h1 is not None
    replay = ObjectEvent("created", k1, size=h1.size, etag=h1.etag)
    assert indexer.handle(replay) is IndexOutcome.UNCHANGED
    assert indexer.handle(replay) is IndexOutcome.UNCHANGED
    assert events.new() == []

    # A re-send with other content replaces the row: InstanceStored says so, bytes move.
    v2 = instance(make_part10, 1, 1, StudyDescription="v2")
    assert ingest.ingest(v2).outcome is Outcome.REPLACED
    drain(embedded, indexer)
    [(t1, replaced), (t2, study)] = events.new()
    assert (t1, replaced["replaced"], replaced["size"], t2) == ("InstanceStored", True, len(v2), "StudyUpdated")
    assert (study["numberOfInstances"], study["bytes"]) == (2, len(v2) + len(second))
    # The first version's event, delivered late, is superseded: nothing.
    assert indexer.handle(replay) is IndexOutcome.SUPERSEDED
    assert events.new() == []

    # Removals: InstanceDeleted with the row as it was, then the study's aggregates.
    embedded.store.delete(k2)
    drain(embedded, indexer)
    [(t1, deleted), (t2, study)] = events.new()
    assert t1 == "InstanceDeleted" and t2 == "StudyUpdated"
    assert (deleted["sopInstanceUID"], deleted["key"], deleted["size"], deleted["sopClassUID"]) == (
        f"{S}.2.1", k2, len(second), CT)
    assert "replaced" not in deleted
    assert (study["deleted"], study["numberOfSeries"], study["numberOfInstances"], study["modalities"]) == (
        False, 1, 1, ["CT"])
    assert study["cause"] == {"detailType": "InstanceDeleted", "sopInstanceUID": f"{S}.2.1"}
    assert indexer.handle(ObjectEvent("removed", k2)) is IndexOutcome.ABSENT  # replayed removal
    embedded.store.delete(k1)
    drain(embedded, indexer)
    [(t1, _), (t2, study)] = events.new()
    assert (t1, t2, study["deleted"], study["numberOfInstances"], study["bytes"]) == (
        "InstanceDeleted", "StudyUpdated", True, 0, 0)
    assert events.new() == []


def test_a_publisher_failure_fails_the_delivery(
    embedded: Backend, make_part10: MakePart10
) -> None:
    """The event could not be handed over: the delivery fails (and is retried by its queue)."""

    class Down:
        def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
            raise ConnectionError("bus unreachable")

    assert embedded.queue is not None
    IngestService(embedded.store).ingest(instance(make_part10, 1, 1))
    [msg] = embedded.queue.receive(10)
    with pytest.raises(ConnectionError):
        IndexerService(embedded.store, embedded.catalog, Down()).handle(msg.event)


def test_dicomweb_delete_and_reconcile_announce_their_changes(
    embedded: Backend, indexer: IndexerService, make_part10: MakePart10
) -> None:
    from fastapi.testclient import TestClient
    from pacs.services.reconcile import reconcile

    from functions.dicomweb.app import create_app

    events = Events(embedded)
    ingest = IngestService(embedded.store)
    k1 = ingest.ingest(instance(make_part10, 1, 1)).key
    ingest.ingest(instance(make_part10, 1, 2))
    drain(embedded, indexer)
    assert len(events.new()) == 4

    # DELETE removes the catalog rows at once: the late ObjectRemoved finds nothing, so the removal
    # is announced by the request itself, once.
    with TestClient(create_app(embedded)) as client:
        assert client.delete(f"/dicomweb/studies/{S}/series/{S}.1/instances/{S}.1.2").status_code == 204
    [(t1, deleted), (t2, study)] = events.new()
    assert (t1, deleted["sopInstanceUID"], t2, study["numberOfInstances"]) == (
        "InstanceDeleted", f"{S}.1.2", "StudyUpdated", 1)
    drain(embedded, indexer)
    assert events.new() == []

    # An instance whose event was lost: reconciliation indexes it and announces it.
    assert embedded.queue is not None
    k3 = ingest.ingest(instance(make_part10, 1, 3)).key
    for msg in embedded.queue.receive(10):
        embedded.queue.ack(msg.id)  # lost
    report = reconcile(embedded.store, embedded.catalog, "default", embedded.events)
    assert (report.scanned, report.indexed) == (2, 1)
    [(t1, stored), (t2, study)] = events.new()
    assert (t1, stored["key"], t2, study["numberOfInstances"]) == ("InstanceStored", k3, "StudyUpdated", 2)
    assert reconcile(embedded.store, embedded.catalog, "default", embedded.events).indexed == 0
    assert events.new() == [] and k1 != k3


def test_pacs_events_prints_json_lines_from_a_cursor(
    embedded: Backend, indexer: IndexerService, make_part10: MakePart10, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from pacs.cli.main import main

    IngestService(embedded.store).ingest(instance(make_part10, 1, 1))
    drain(embedded, indexer)
    data_dir = str(embedded.settings.data_dir)
    assert main(["events", "--data-dir", data_dir]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["source"], e["detail-type"]) for e in lines] == [("pacs", "InstanceStored"), ("pacs", "StudyUpdated")]
    assert lines[0]["detail"]["sopInstanceUID"] == f"{S}.1.1" and lines[0]["time"].endswith("Z")
    assert main(["events", "--data-dir", data_dir, "--after", lines[0]["id"]]) == 0
    assert [json.loads(x)["detail-type"] for x in capsys.readouterr().out.splitlines()] == ["StudyUpdated"]
    assert main(["events", "--data-dir", data_dir, "--type", "InstanceStored", "--type", "InstanceDeleted"]) == 0
    assert [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()] == [lines[0]["id"]]


def test_a_batch_is_one_transaction_with_exact_aggregates_and_per_change_events(
    embedded: Backend, indexer: IndexerService, make_part10: MakePart10
) -> None:
    """The worker indexes a whole batch in one catalog transaction: the aggregates stay exact, each
    StudyUpdated still carries the aggregates right after its own change, a message that fails is
    undone alone (and left to its retry), and nothing is visible to readers before the commit."""
    from pacs.catalog.sqlite import SqliteCatalog

    assert embedded.queue is not None
    ingest = IngestService(embedded.store)
    events = Events(embedded)
    sizes = []
    for series in (1, 2, 3):
        for n in range(1, 5):
            data = instance(make_part10, series, n)
            ingest.ingest(data)
            sizes.append(len(data))
    # an object whose UIDs are not those of its key: indexing it fails, in the middle of the batch
    wrong = f"default/studies/{S}/series/{S}.1/instances/{S}.1.99.dcm"
    embedded.store.put(wrong, instance(make_part10, 1, 5))
    ingest.ingest(instance(make_part10, 2, 9))
    sizes.append(len(instance(make_part10, 2, 9)))

    other = SqliteCatalog(embedded.catalog.path)  # type: ignore[attr-defined]  # another reader
    seen_during: list[int] = []
    upsert = embedded.catalog.upsert_instance

    def watching(item: Any) -> Any:
        study = other.get_study("default", S)
        seen_during.append(study.n_instances if study else 0)
        return upsert(item)

    embedded.catalog.upsert_instance = watching  # type: ignore[method-assign]
    assert index_worker.drain_once(embedded.queue, indexer) == 14
    embedded.catalog.upsert_instance = upsert  # type: ignore[method-assign]
    assert seen_during == [0] * 13  # the batch's writes were not committed one by one

    study = other.get_study("default", S)
    assert study is not None
    assert (study.n_instances, study.n_series, study.size) == (13, 3, sum(sizes))
    got = events.new()
    assert [t for t, _ in got] == ["InstanceStored", "StudyUpdated"] * 13
    assert [d["numberOfInstances"] for t, d in got if t == "StudyUpdated"] == list(range(1, 14))
    assert [d["numberOfSeries"] for t, d in got if t == "StudyUpdated"] == [1] * 4 + [2] * 4 + [3] * 4 + [3]
    assert embedded.queue.depth() == 1  # the failed message stays, for its retry
    [dead] = [m for m in embedded.queue.receive(10, wait=2.0)]
    assert dead.event.key == wrong and dead.attempts == 2
    other.close()


def test_a_batch_that_cannot_commit_fails_its_messages_and_announces_nothing(
    embedded: Backend, indexer: IndexerService, make_part10: MakePart10, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib

    assert embedded.queue is not None
    events = Events(embedded)
    for n in (1, 2):
        IngestService(embedded.store).ingest(instance(make_part10, 1, n))
    batch = embedded.catalog.batch  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def failing() -> Any:
        with batch():
            yield
            raise OSError("disk full")  # as if the commit failed: everything rolled back

    monkeypatch.setattr(embedded.catalog, "batch", failing)
    assert index_worker.drain_once(embedded.queue, indexer) == 2
    assert embedded.catalog.get_study("default", S) is None
    assert events.new() == []
    assert embedded.queue.depth() == 2  # not acknowledged: delivered again
    monkeypatch.undo()
    embedded.queue.visibility_timeout = 0
    for msg in embedded.queue.receive(10, wait=2.0):  # make them visible at once
        embedded.queue.fail(msg, "test", retry_after=0)
    while index_worker.drain_once(embedded.queue, indexer):
        pass
    study = embedded.catalog.get_study("default", S)
    assert study is not None and study.n_instances == 2
    assert [t for t, _ in events.new()] == ["InstanceStored", "StudyUpdated"] * 2
