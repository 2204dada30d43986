"""The MPPS / storage-commitment record stores, run against both adapters: SQLite beside the SQLite
catalog (same file) and DynamoDB (moto) in the catalog's table. Both must behave the same, and must
not disturb (nor be disturbed by) the catalog's own items."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from pacs.catalog.port import Catalog
from pacs.services.commitment import (
    NEW_ASSOCIATION,
    PENDING,
    CommitmentRecord,
    FailedRef,
    SopRef,
)
from pacs.services.mpps import COMPLETED, IN_PROGRESS, MppsRecord

from tests.unit.aws import fake_aws_credentials

from .test_catalog_contract import CT, P, make, study_uid


@dataclass
class Stores:
    records: Any  # SqliteMppsStore | DynamoMppsStore: MppsStore, CommitmentStore, InstanceLocator
    catalog: Catalog


@pytest.fixture(params=["sqlite", "dynamodb"])
def stores(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stores]:
    if request.param == "sqlite":
        from pacs.catalog.mpps_sqlite import SqliteMppsStore
        from pacs.catalog.sqlite import SqliteCatalog

        catalog = SqliteCatalog(tmp_path / "catalog.db")
        store = SqliteMppsStore(tmp_path / "catalog.db")
        yield Stores(store, catalog)
        store.close()
        catalog.close()
        return

    import moto
    from pacs.catalog.dynamodb import DynamoCatalog
    from pacs.catalog.mpps_dynamodb import DynamoMppsStore

    fake_aws_credentials(monkeypatch)
    with moto.mock_aws():
        dynamo_catalog = DynamoCatalog("pacs-mpps-test", create=True)
        dynamo_store = DynamoMppsStore("pacs-mpps-test")
        yield Stores(dynamo_store, dynamo_catalog)
        dynamo_store.close()
        dynamo_catalog.close()


def step(uid: str, *, partition: str = P, status: str = IN_PROGRESS, created: str = "2026-01-01T10:00:00.000Z",
         version: int = 1) -> MppsRecord:
    attrs = {"00400252": {"vr": "CS", "Value": [status]}, "00100020": {"vr": "LO", "Value": ["PID1"]}}
    return MppsRecord(partition, uid, status, attrs, ("1.2.3.4",), created, created, version)


def test_mpps_create_is_insert_if_absent(stores: Stores) -> None:
    s = stores.records
    assert s.create_mpps(step("1.2.1"))
    assert not s.create_mpps(step("1.2.1", status=COMPLETED))  # a duplicate changes nothing
    got = s.get_mpps(P, "1.2.1")
    assert got == step("1.2.1")
    assert s.get_mpps(P, "1.2.9") is None
    assert s.get_mpps("other", "1.2.1") is None


def test_mpps_replace_only_from_the_expected_version(stores: Stores) -> None:
    s = stores.records
    s.create_mpps(step("1.2.1"))
    done = replace(step("1.2.1", status=COMPLETED, version=2), updated="2026-01-01T11:00:00.000Z")
    assert not s.replace_mpps(done, expected_version=2)  # stored version is 1
    assert s.get_mpps(P, "1.2.1") == step("1.2.1")
    assert s.replace_mpps(done, expected_version=1)
    assert s.get_mpps(P, "1.2.1") == done
    assert not s.replace_mpps(replace(done, version=3), expected_version=1)  # lost the race
    assert not s.replace_mpps(step("1.2.7", version=2), expected_version=1)  # never created


def test_mpps_list_by_partition_and_status(stores: Stores) -> None:
    s = stores.records
    s.create_mpps(step("1.2.2", created="2026-01-01T10:00:02.000Z"))
    s.create_mpps(step("1.2.1", created="2026-01-01T10:00:01.000Z", status=COMPLETED))
    s.create_mpps(step("1.2.3", created="2026-01-01T10:00:03.000Z"))
    s.create_mpps(step("1.2.4", partition="other"))
    assert [r.sop_uid for r in s.list_mpps(P)] == ["1.2.1", "1.2.2", "1.2.3"]
    assert [r.sop_uid for r in s.list_mpps(P, IN_PROGRESS)] == ["1.2.2", "1.2.3"]
    assert [r.sop_uid for r in s.list_mpps(P, COMPLETED)] == ["1.2.1"]
    assert [r.sop_uid for r in s.list_mpps("other")] == ["1.2.4"]


def commitment(tuid: str, created: str = "2026-01-01T10:00:00.000Z") -> CommitmentRecord:
    return CommitmentRecord(P, tuid, "MODALITY", (SopRef(CT, "1.2.5.1"), SopRef(CT, "1.2.5.2")), created,
                            updated=created)


def test_commitment_records(stores: Stores) -> None:
    s = stores.records
    first = commitment("1.2.9.1")
    assert s.create_commitment(first)
    assert not s.create_commitment(replace(first, requester="OTHER"))
    assert s.get_commitment(P, "1.2.9.1") == first
    done = replace(first, committed=(SopRef(CT, "1.2.5.1"),), failed=(FailedRef(CT, "1.2.5.2", 0x0112),),
                   delivery=NEW_ASSOCIATION, updated="2026-01-01T10:00:05.000Z", note="sent to MODALITY")
    s.put_commitment(done)
    assert s.get_commitment(P, "1.2.9.1") == done
    s.create_commitment(commitment("1.2.9.2", created="2026-01-01T10:00:01.000Z"))
    assert s.get_commitment(P, "1.2.9.3") is None
    assert [c.transaction_uid for c in s.list_commitments(P)] == ["1.2.9.1", "1.2.9.2"]
    assert [c.transaction_uid for c in s.list_commitments(P, PENDING)] == ["1.2.9.2"]
    assert s.list_commitments("other") == []


def test_records_do_not_disturb_the_catalog(stores: Stores) -> None:
    cat, s = stores.catalog, stores.records
    cat.upsert_instance(make(1, 1, 1))
    s.create_mpps(step("1.2.1"))
    s.create_commitment(commitment("1.2.9.1"))
    page = cat.query_studies(P, [])
    assert [r.study_uid for r in page.rows] == [study_uid(1)]
    assert cat.get_study(P, study_uid(1)) is not None
    assert cat.locate_instances(P, ["1.2.1", "1.2.9.1"]) == {}


def test_sqlite_connections_end_with_their_threads(tmp_path: Path) -> None:
    """The gateway serves each association on its own thread: their connections must not pile up."""
    import gc
    import threading

    from pacs.catalog.mpps_sqlite import SqliteMppsStore

    store = SqliteMppsStore(tmp_path / "catalog.db")
    try:
        threads = [threading.Thread(target=store.create_mpps, args=(step(f"1.2.{n}"),)) for n in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        gc.collect()
        assert len(store._conns) == 1  # the opening thread's only
        assert len(store.list_mpps(P)) == 20
    finally:
        store.close()
