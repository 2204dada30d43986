"""Indexer: idempotent, order-tolerant, exact aggregates — on the embedded and the AWS adapters."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pacs.catalog.port import Catalog
from pacs.errors import InvalidDataset
from pacs.events.model import ObjectEvent
from pacs.services.indexer import IndexerService, IndexOutcome
from pacs.services.ingest import IngestService
from pacs.storage.port import BlobStore

from tests.unit.aws import fake_aws_credentials
from tests.unit.conftest import MakePart10

P = "default"
STUDY, SERIES = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.1.1"


@dataclass
class Rig:
    store: BlobStore
    catalog: Catalog
    events: list[ObjectEvent] = field(default_factory=list)
    seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def put(self, key: str, data: bytes) -> ObjectEvent:
        info = self.store.put(key, data)
        ev = ObjectEvent("created", key, size=info.size, etag=info.etag, sequencer=f"{next(self.seq):016X}")
        self.events.append(ev)
        return ev

    def delete(self, key: str) -> ObjectEvent:
        self.store.delete(key)
        ev = ObjectEvent("removed", key, sequencer=f"{next(self.seq):016X}")
        self.events.append(ev)
        return ev

    def ingest(self, data: bytes) -> ObjectEvent:
        key = IngestService(_NoWrite(self)).ingest(data).key  # validate and derive the key
        return self.put(key, data)

    @property
    def indexer(self) -> IndexerService:
        return IndexerService(self.store, self.catalog)


class _NoWrite:
    """A store that records nothing: lets the test use IngestService to derive keys only."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig

    def put(self, key: str, data: bytes, **_kw: object) -> None:
        return None


@pytest.fixture(params=["embedded", "aws"])
def rig(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    if request.param == "embedded":
        from pacs.catalog.sqlite import SqliteCatalog
        from pacs.storage.filesystem import FilesystemBlobStore

        catalog = SqliteCatalog(tmp_path / "catalog.db")
        yield Rig(FilesystemBlobStore(tmp_path / "objects"), catalog)
        catalog.close()
        return
    import boto3
    from moto import mock_aws

    fake_aws_credentials(monkeypatch)
    with mock_aws():
        from pacs.catalog.dynamodb import DynamoCatalog
        from pacs.storage.s3 import S3BlobStore

        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="originals")
        yield Rig(S3BlobStore("originals", region="us-east-1"), DynamoCatalog("catalog", create=True))


def instance(make_part10: MakePart10, series: int, n: int, **attrs: object) -> bytes:
    return make_part10(
        SeriesInstanceUID=f"{SERIES}.{series}", SOPInstanceUID=f"{SERIES}.{series}.{n}",
        InstanceNumber=n, Modality="CT" if series == 1 else "MR", SeriesNumber=series, **attrs,
    )


def assert_catalog_matches_store(rig: Rig) -> None:
    stored = {b.key: b.size for b in rig.store.list(f"{P}/studies/")}
    study = rig.catalog.get_study(P, STUDY)
    if not stored:
        assert study is None
        return
    assert study is not None
    rows = rig.catalog.query_instances(P, STUDY, None, ()).rows
    assert {r.key: r.size for r in rows} == stored
    assert study.n_instances == len(stored)
    assert study.size == sum(stored.values())
    series = rig.catalog.query_series(P, STUDY, ()).rows
    assert study.n_series == len(series) == len({r.series_uid for r in rows})
    for s in series:
        mine = [r for r in rows if r.series_uid == s.series_uid]
        assert s.n_instances == len(mine) and s.size == sum(r.size for r in mine)
    assert sorted(study.modalities) == sorted({s.modality for s in series})


def test_duplicate_delivery_is_indexed_once(rig: Rig, make_part10: MakePart10) -> None:
    ev = rig.ingest(instance(make_part10, 1, 1))
    assert rig.indexer.handle(ev) is IndexOutcome.INSERTED
    assert rig.indexer.handle(ev) is IndexOutcome.UNCHANGED
    assert rig.indexer.handle(ev) is IndexOutcome.UNCHANGED
    assert_catalog_matches_store(rig)


def test_newer_version_replaces_and_late_old_event_is_superseded(rig: Rig, make_part10: MakePart10) -> None:
    v1 = rig.ingest(instance(make_part10, 1, 1))
    assert rig.indexer.handle(v1) is IndexOutcome.INSERTED
    v2 = rig.ingest(instance(make_part10, 1, 1, StudyDescription="a much longer corrected description"))
    assert rig.indexer.handle(v2) is IndexOutcome.REPLACED
    assert rig.indexer.handle(v1) is IndexOutcome.SUPERSEDED  # late redelivery of the old version
    row = rig.catalog.get_instance(P, STUDY, f"{SERIES}.1", f"{SERIES}.1.1")
    assert row is not None and row.etag == v2.etag
    assert rig.catalog.get_study(P, STUDY).attrs["00081030"]["Value"] == [  # type: ignore[union-attr]
        "a much longer corrected description"
    ]
    assert_catalog_matches_store(rig)


def test_events_in_reverse_order(rig: Rig, make_part10: MakePart10) -> None:
    v1 = rig.ingest(instance(make_part10, 1, 1))
    v2 = rig.ingest(instance(make_part10, 1, 1, StudyDescription="v2"))
    assert rig.indexer.handle(v2) is IndexOutcome.INSERTED
    assert rig.indexer.handle(v1) is IndexOutcome.SUPERSEDED
    assert_catalog_matches_store(rig)


def test_removed_before_created_is_delivered(rig: Rig, make_part10: MakePart10) -> None:
    created = rig.ingest(instance(make_part10, 1, 1))
    removed = rig.delete(created.key)
    assert rig.indexer.handle(removed) is IndexOutcome.ABSENT
    assert rig.indexer.handle(created) is IndexOutcome.ABSENT
    assert rig.catalog.get_study(P, STUDY) is None


def test_removal_updates_aggregates(rig: Rig, make_part10: MakePart10) -> None:
    evs = [rig.ingest(instance(make_part10, s, n)) for s in (1, 2) for n in (1, 2)]
    for ev in evs:
        rig.indexer.handle(ev)
    assert rig.catalog.get_study(P, STUDY).modalities == ["CT", "MR"]  # type: ignore[union-attr]
    for ev in evs[2:]:
        assert rig.indexer.handle(rig.delete(ev.key)) is IndexOutcome.REMOVED
    study = rig.catalog.get_study(P, STUDY)
    assert study is not None and study.n_series == 1 and study.modalities == ["CT"]
    assert_catalog_matches_store(rig)


def test_shuffled_redeliveries_end_exact(rig: Rig, make_part10: MakePart10) -> None:
    rnd = random.Random(1234)
    for s in (1, 2, 3):
        for n in range(1, 5):
            rig.ingest(instance(make_part10, s, n))
    rig.ingest(instance(make_part10, 2, 2, StudyDescription="replaced"))
    rig.delete(rig.events[5].key)
    rig.delete(rig.events[9].key)
    deliveries = [ev for ev in rig.events for _ in range(rnd.randint(1, 3))]
    rnd.shuffle(deliveries)
    for ev in deliveries:
        rig.indexer.handle(ev)
    assert_catalog_matches_store(rig)


def test_other_keys_are_ignored(rig: Rig) -> None:
    ev = rig.put(f"{P}/derived/{STUDY}/metadata.json", b"{}")
    assert rig.indexer.handle(ev) is IndexOutcome.IGNORED


def test_object_disagreeing_with_its_key_is_refused(rig: Rig, make_part10: MakePart10) -> None:
    key = f"{P}/studies/{STUDY}/series/{SERIES}.1/instances/9.9.9.dcm"
    ev = rig.put(key, instance(make_part10, 1, 1))
    with pytest.raises(InvalidDataset):
        rig.indexer.handle(ev)
    assert rig.catalog.get_study(P, STUDY) is None
