"""The Catalog contract (`pacs.catalog.port`), run against every adapter: SQLite and DynamoDB (moto).

Aggregates must stay exact under duplicate, out-of-order and concurrent calls; queries must return
the same rows in the same order from both adapters.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pacs.catalog.matching import Condition, condition
from pacs.catalog.port import Catalog
from pacs.catalog.records import CatalogTotals, IndexedInstance, InstanceRow, StudyRow
from pacs.storage.keys import instance_key

from tests.unit.aws import fake_aws_credentials

P = "default"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
US = "1.2.840.10008.5.1.4.1.1.6.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@pytest.fixture(params=["sqlite", "dynamodb"])
def catalog(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Catalog]:
    if request.param == "sqlite":
        from pacs.catalog.sqlite import SqliteCatalog

        sqlite_catalog = SqliteCatalog(tmp_path / "catalog.db")
        yield sqlite_catalog
        sqlite_catalog.close()
        return

    import moto
    from moto.dynamodb.responses import DynamoHandler
    from pacs.catalog.dynamodb import DynamoCatalog

    fake_aws_credentials(monkeypatch)
    # DynamoDB applies each request atomically; moto applies one in several unlocked steps (a
    # transaction even rolls back by restoring a copy of the table), so the threads of the
    # concurrency test could corrupt its state. One request at a time restores DynamoDB's guarantee.
    lock = threading.RLock()
    call_action = DynamoHandler.call_action

    def atomic_call_action(self: DynamoHandler) -> object:
        with lock:
            return call_action(self)

    monkeypatch.setattr(DynamoHandler, "call_action", atomic_call_action)
    with moto.mock_aws():
        dynamo_catalog = DynamoCatalog("pacs-catalog-test", create=True)
        yield dynamo_catalog
        dynamo_catalog.close()


# -- building instances ------------------------------------------------------------------------------


def study_uid(n: int) -> str:
    return f"1.2.826.0.1.3680043.10.{n}"


def series_uid(study: int, n: int) -> str:
    return f"{study_uid(study)}.{n}"


def sop_uid(study: int, series: int, n: int) -> str:
    return f"{series_uid(study, series)}.{n}"


def pn(alphabetic: str, **groups: str) -> dict[str, object]:
    return {"vr": "PN", "Value": [{"Alphabetic": alphabetic, **groups}]}


def make(
    study: int = 1,
    series: int = 1,
    number: int = 1,
    *,
    partition: str = P,
    etag: str = "etag-1",
    sequencer: str = "0000000000000001",
    size: int = 1000,
    modality: str = "CT",
    sop_class: str = CT,
    name: str | dict[str, object] = "Doe^John",
    patient_id: str = "P1",
    date: str | None = "20240315",
    time: str | None = "101500",
    accession: str = "A1",
    description: str = "CT HEAD",
    series_number: int | None = None,
) -> IndexedInstance:
    """An indexed instance: study, series and instance attributes as the indexer extracts them."""
    study_attrs: dict[str, dict[str, object]] = {
        "0020000D": {"vr": "UI", "Value": [study_uid(study)]},
        "00100010": name if isinstance(name, dict) else pn(name),
        "00100020": {"vr": "LO", "Value": [patient_id]},
        "00080050": {"vr": "SH", "Value": [accession]},
        "00081030": {"vr": "LO", "Value": [description]},
    }
    if date is not None:
        study_attrs["00080020"] = {"vr": "DA", "Value": [date]}
    if time is not None:
        study_attrs["00080030"] = {"vr": "TM", "Value": [time]}
    series_attrs: dict[str, dict[str, object]] = {
        "0020000E": {"vr": "UI", "Value": [series_uid(study, series)]},
        "00080060": {"vr": "CS", "Value": [modality]},
        "00200011": {"vr": "IS", "Value": [series if series_number is None else series_number]},
    }
    sop = sop_uid(study, series, number)
    attrs: dict[str, dict[str, object]] = {
        "00080016": {"vr": "UI", "Value": [sop_class]},
        "00080018": {"vr": "UI", "Value": [sop]},
        "00200013": {"vr": "IS", "Value": [number]},
    }
    row = InstanceRow(
        partition=partition, study_uid=study_uid(study), series_uid=series_uid(study, series), sop_uid=sop,
        sop_class_uid=sop_class, transfer_syntax_uid=EXPLICIT_LE,
        key=instance_key(partition, study_uid(study), series_uid(study, series), sop),
        size=size, etag=etag, sequencer=sequencer, attrs=attrs,
    )
    return IndexedInstance(row, study_attrs, series_attrs, modality)


def study_of(cat: Catalog, study: int = 1, partition: str = P) -> StudyRow:
    row = cat.get_study(partition, study_uid(study))
    assert row is not None
    return row


def counts(row: StudyRow) -> tuple[int, int, int]:
    return row.n_series, row.n_instances, row.size


def conds(**keys: str) -> list[Condition]:
    return [condition(k, v) for k, v in keys.items()]


# -- writes: idempotent, order-tolerant, exact -----------------------------------------------------


def test_insert_creates_study_series_and_instance(catalog: Catalog) -> None:
    item = make(size=1234)
    assert catalog.upsert_instance(item) == "inserted"
    study = study_of(catalog)
    assert counts(study) == (1, 1, 1234)
    assert study.modalities == ["CT"] and study.sop_classes == [CT]
    assert study.attrs["00081030"] == {"vr": "LO", "Value": ["CT HEAD"]}
    got = catalog.get_instance(P, study_uid(1), series_uid(1, 1), sop_uid(1, 1, 1))
    assert got is not None
    assert (got.etag, got.sequencer, got.size, got.key, got.sop_class_uid, got.transfer_syntax_uid) == (
        "etag-1", "0000000000000001", 1234, item.instance.key, CT, EXPLICIT_LE
    )
    assert got.attrs == item.instance.attrs
    [series] = catalog.query_series(P, study_uid(1), []).rows
    assert (series.series_uid, series.n_instances, series.size, series.modality) == (
        series_uid(1, 1), 1, 1234, "CT"
    )
    json = study.to_dicom_json()
    assert json["00201206"]["Value"] == [1] and json["00201208"]["Value"] == [1]
    assert catalog.get_instance(P, study_uid(1), series_uid(1, 1), sop_uid(1, 1, 2)) is None
    assert catalog.get_study(P, study_uid(2)) is None


def test_same_item_again_is_unchanged(catalog: Catalog) -> None:
    assert catalog.upsert_instance(make()) == "inserted"
    assert catalog.upsert_instance(make()) == "unchanged"
    # A redelivery of the same object with another sequencer is still the same content.
    assert catalog.upsert_instance(make(sequencer="00000000000000FF")) == "unchanged"
    assert counts(study_of(catalog)) == (1, 1, 1000)


def test_newer_version_replaces_and_moves_bytes(catalog: Catalog) -> None:
    catalog.upsert_instance(make(size=1000))
    newer = make(etag="etag-2", sequencer="0000000000000002", size=1500, description="CT HEAD W/O")
    assert catalog.upsert_instance(newer) == "replaced"
    study = study_of(catalog)
    assert counts(study) == (1, 1, 1500)
    assert study.attrs["00081030"]["Value"] == ["CT HEAD W/O"]  # attributes follow the write
    [series] = catalog.query_series(P, study_uid(1), []).rows
    assert (series.n_instances, series.size) == (1, 1500)
    got = catalog.get_instance(P, study_uid(1), series_uid(1, 1), sop_uid(1, 1, 1))
    assert got is not None and (got.etag, got.size) == ("etag-2", 1500)


def test_older_or_equal_sequencer_is_stale(catalog: Catalog) -> None:
    catalog.upsert_instance(make(sequencer="0000000000000005", size=1000))
    older = make(etag="etag-0", sequencer="0000000000000003", size=9999)
    assert catalog.upsert_instance(older) == "stale"
    same = make(etag="etag-x", sequencer="0000000000000005", size=9999)
    assert catalog.upsert_instance(same) == "stale"
    # S3 sequencers compare as numbers after left-padding: "5" is not newer than "0004".
    assert catalog.upsert_instance(make(etag="etag-y", sequencer="4", size=9999)) == "stale"
    assert counts(study_of(catalog)) == (1, 1, 1000)
    got = catalog.get_instance(P, study_uid(1), series_uid(1, 1), sop_uid(1, 1, 1))
    assert got is not None and got.etag == "etag-1"


def test_any_delivery_order_ends_with_the_newest_version(catalog: Catalog) -> None:
    versions = [(f"etag-{v}", f"{v:016X}", 100 * v) for v in (1, 2, 3)]
    orders = list(itertools.permutations(versions))
    for n, order in enumerate(orders, start=1):
        outcomes = [
            catalog.upsert_instance(make(number=n, etag=etag, sequencer=seq, size=size))
            for etag, seq, size in order
        ]
        assert outcomes[0] == "inserted" and outcomes.count("inserted") == 1
        got = catalog.get_instance(P, study_uid(1), series_uid(1, 1), sop_uid(1, 1, n))
        assert got is not None and (got.etag, got.size) == ("etag-3", 300), order
    assert counts(study_of(catalog)) == (1, len(orders), 300 * len(orders))


def _two_series(cat: Catalog, n: int = 4) -> None:
    """Series 1: n CT images; series 2: n MR images plus one secondary capture."""
    items = [make(series=1, number=i, size=100 * i) for i in range(1, n + 1)]
    items += [make(series=2, number=i, size=10 * i, modality="MR", sop_class=MR) for i in range(1, n + 1)]
    items.append(make(series=2, number=n + 1, size=7, modality="MR", sop_class=SC))
    assert [cat.upsert_instance(item) for item in items] == ["inserted"] * len(items)


def test_aggregates_over_two_series_are_exact(catalog: Catalog) -> None:
    _two_series(catalog)
    for i in range(1, 5):  # duplicates change nothing
        assert catalog.upsert_instance(make(series=1, number=i, size=100 * i)) == "unchanged"
    study = study_of(catalog)
    assert counts(study) == (2, 9, 1000 + 100 + 7)
    assert study.modalities == ["CT", "MR"]
    assert study.sop_classes == sorted([CT, MR, SC])
    series = catalog.query_series(P, study_uid(1), []).rows
    assert [(s.series_uid, s.n_instances, s.size, s.modality) for s in series] == [
        (series_uid(1, 1), 4, 1000, "CT"),
        (series_uid(1, 2), 5, 107, "MR"),
    ]


def test_remove_instance_updates_aggregates(catalog: Catalog) -> None:
    _two_series(catalog)
    assert catalog.remove_instance(P, study_uid(1), series_uid(1, 1), sop_uid(1, 1, 4))
    study = study_of(catalog)
    assert counts(study) == (2, 8, 600 + 100 + 7)
    assert catalog.get_instance(P, study_uid(1), series_uid(1, 1), sop_uid(1, 1, 4)) is None
    # The only secondary capture goes: its SOP class leaves the study, the series stays.
    assert catalog.remove_instance(P, study_uid(1), series_uid(1, 2), sop_uid(1, 2, 5))
    study = study_of(catalog)
    assert counts(study) == (2, 7, 600 + 100)
    assert study.sop_classes == sorted([CT, MR])
    assert [s.n_instances for s in catalog.query_series(P, study_uid(1), []).rows] == [3, 4]


def test_removing_the_last_instance_of_a_series_removes_the_series(catalog: Catalog) -> None:
    _two_series(catalog, n=2)
    for i in (1, 2, 3):
        assert catalog.remove_instance(P, study_uid(1), series_uid(1, 2), sop_uid(1, 2, i))
    study = study_of(catalog)
    assert counts(study) == (1, 2, 300)
    assert study.modalities == ["CT"] and study.sop_classes == [CT]
    assert [s.series_uid for s in catalog.query_series(P, study_uid(1), []).rows] == [series_uid(1, 1)]
    assert catalog.query_instances(P, study_uid(1), series_uid(1, 2), []).rows == []
    # The modality left the study: ModalitiesInStudy=MR no longer finds it.
    assert catalog.query_studies(P, conds(ModalitiesInStudy="MR")).rows == []
    assert len(catalog.query_studies(P, conds(ModalitiesInStudy="CT")).rows) == 1


def test_removing_the_last_instance_of_a_study_removes_the_study(catalog: Catalog) -> None:
    catalog.upsert_instance(make(study=1))
    catalog.upsert_instance(make(study=2, patient_id="P2"))
    assert catalog.remove_instance(P, study_uid(1), series_uid(1, 1), sop_uid(1, 1, 1))
    assert catalog.get_study(P, study_uid(1)) is None
    assert catalog.query_series(P, study_uid(1), []).rows == []
    assert [s.study_uid for s in catalog.query_studies(P, []).rows] == [study_uid(2)]
    assert catalog.query_studies(P, conds(PatientID="P1")).rows == []
    assert catalog.query_studies(P, conds(PatientName="DOE*")).rows != []  # study 2 is a Doe too
    # It can come back.
    assert catalog.upsert_instance(make(study=1)) == "inserted"
    assert counts(study_of(catalog)) == (1, 1, 1000)


def test_removing_an_unknown_instance_changes_nothing(catalog: Catalog) -> None:
    assert not catalog.remove_instance(P, study_uid(9), series_uid(9, 1), sop_uid(9, 1, 1))
    catalog.upsert_instance(make())
    assert not catalog.remove_instance(P, study_uid(1), series_uid(1, 1), sop_uid(1, 1, 2))
    assert not catalog.remove_instance(P, study_uid(1), series_uid(1, 2), sop_uid(1, 1, 1))
    assert counts(study_of(catalog)) == (1, 1, 1000)
    assert catalog.remove_instance(P, study_uid(1), series_uid(1, 1), sop_uid(1, 1, 1))
    assert not catalog.remove_instance(P, study_uid(1), series_uid(1, 1), sop_uid(1, 1, 1))


def test_study_attributes_follow_the_newest_write(catalog: Catalog) -> None:
    catalog.upsert_instance(make(date="20240315", name="Doe^John", patient_id="P1", accession="A1"))
    corrected = make(etag="etag-2", sequencer="0000000000000002", date="20230701", name="Roe^Jane",
                     patient_id="P9", accession="A9")
    assert catalog.upsert_instance(corrected) == "replaced"
    for old in (dict(StudyDate="20240315"), dict(PatientID="P1"), dict(AccessionNumber="A1"),
                dict(PatientName="DOE*")):
        assert catalog.query_studies(P, conds(**old)).rows == [], old
    for new in (dict(StudyDate="20230701"), dict(PatientID="P9"), dict(AccessionNumber="A9"),
                dict(PatientName="roe^jane"), dict(StudyDate="20230101-20231231")):
        assert [s.study_uid for s in catalog.query_studies(P, conds(**new)).rows] == [study_uid(1)], new


# -- study queries -----------------------------------------------------------------------------------

# number: (name, PatientID, StudyDate, StudyTime, AccessionNumber, StudyDescription, modality)
STUDIES: dict[int, tuple[str | dict[str, object], str, str | None, str | None, str, str, str]] = {
    1: ("Doe^John", "P1", "20240315", "101500", "A1", "CT HEAD", "CT"),
    2: ("Doe^Jane", "P2", "20240120", "090000", "A2", "MR KNEE", "MR"),
    3: ("Smith^John", "P1", "20231231", "235959", "A3", "CT CHEST", "CT"),
    4: ("Roe^Richard", "P3", "20230105", "080000", "A4", "US ABDOMEN", "US"),
    5: ("Johnson^Ann", "P4", "20220610", "120000", "A5", "CT SPINE", "CT"),
    6: ("Nodate^Pat", "P5", None, None, "A6", "MR BRAIN", "MR"),
    7: (pn("Yamada^Tarou", Ideographic="山田^太郎", Phonetic="やまだ^たろう"), "P6", "20240315", "080000",
        "A7", "MR HEAD", "MR"),
}
NEWEST_FIRST = [1, 7, 2, 3, 4, 5, 6]
_CLASSES = {"CT": CT, "MR": MR, "US": US}


@pytest.fixture
def studies(catalog: Catalog) -> Catalog:
    for n, (name, pid, date, time, acc, desc, modality) in STUDIES.items():
        for i in (1, 2):
            catalog.upsert_instance(make(
                study=n, number=i, name=name, patient_id=pid, date=date, time=time, accession=acc,
                description=desc, modality=modality, sop_class=_CLASSES[modality],
            ))
    return catalog


def found(cat: Catalog, fuzzy: bool = False, **keys: str) -> list[int]:
    rows = cat.query_studies(P, conds(**keys), fuzzy=fuzzy).rows
    by_uid = {study_uid(n): n for n in STUDIES}
    return [by_uid[r.study_uid] for r in rows]


def test_universal_query_lists_every_study_newest_first(studies: Catalog) -> None:
    assert found(studies) == NEWEST_FIRST
    assert found(studies, StudyDescription="*") == NEWEST_FIRST
    [row] = studies.query_studies(P, conds(AccessionNumber="A1")).rows
    assert counts(row) == (1, 2, 2000)


def test_query_by_patient_id_and_accession(studies: Catalog) -> None:
    assert found(studies, PatientID="P1") == [1, 3]
    assert found(studies, PatientID="P1", StudyDate="20240101-") == [1]
    assert found(studies, PatientID="p1") == []  # LO is case-sensitive
    assert found(studies, PatientID="P404") == []
    assert found(studies, AccessionNumber="A2") == [2]
    assert found(studies, AccessionNumber="A2", PatientID="P1") == []
    assert found(studies, AccessionNumber="A*") == NEWEST_FIRST


def test_padding_of_query_values_is_not_significant(studies: Catalog, request: pytest.FixtureRequest) -> None:
    assert found(studies, PatientID="P1 ") == [1, 3]
    assert found(studies, AccessionNumber="A3 ") == [3]


def test_query_by_patient_name(studies: Catalog) -> None:
    assert found(studies, PatientName="doe^john") == [1]  # case-insensitive
    assert found(studies, PatientName="DOE^JOHN") == [1]
    assert found(studies, PatientName="Doe") == []  # single value: the whole name
    assert found(studies, PatientName="DOE*") == [1, 2]
    assert found(studies, PatientName="doe^j*") == [1, 2]
    assert found(studies, PatientName="Smi?h*") == [3]
    assert found(studies, PatientName="*OHN*") == [1, 3, 5]  # no literal prefix: the date walk
    assert found(studies, PatientName="*^John") == [1, 3]
    assert found(studies, PatientName="Zed*") == []


def test_query_by_patient_name_fuzzy(studies: Catalog) -> None:
    # Each query word begins some word of the name, in any order.
    assert found(studies, fuzzy=True, PatientName="john") == [1, 3, 5]
    assert found(studies, fuzzy=True, PatientName="jo do") == [1]
    assert found(studies, fuzzy=True, PatientName="doe^john") == [1]


def test_query_by_any_group_of_the_patient_name(studies: Catalog, request: pytest.FixtureRequest) -> None:
    assert found(studies, PatientName="yamada*") == [7]
    assert found(studies, PatientName="山田*") == [7]
    assert found(studies, PatientName="やまだ^たろう") == [7]


def test_query_by_study_date(studies: Catalog) -> None:
    assert found(studies, StudyDate="20240315") == [1, 7]
    assert found(studies, StudyDate="20240101-20240331") == [1, 7, 2]
    assert found(studies, StudyDate="20231201-20240131") == [2, 3]  # across a year
    assert found(studies, StudyDate="20230105-20231231") == [3, 4]  # inclusive bounds
    assert found(studies, StudyDate="-20231231") == [3, 4, 5]  # undated studies never match a range
    assert found(studies, StudyDate="20230101-") == [1, 7, 2, 3, 4]
    assert found(studies, StudyDate="20220610\\20240120") == [2, 5]
    assert found(studies, StudyDate="19990101-19991231") == []
    assert found(studies, StudyDate="20240315", StudyTime="090000-") == [1]


def test_query_by_unindexed_attributes(studies: Catalog) -> None:
    assert found(studies, ModalitiesInStudy="MR") == [7, 2, 6]
    assert found(studies, ModalitiesInStudy="CT\\US") == [1, 3, 4, 5]
    assert found(studies, StudyDescription="CT*") == [1, 3, 5]
    assert found(studies, StudyDescription="*HEAD", StudyDate="20240101-20241231") == [1, 7]


def test_query_by_study_uids(studies: Catalog) -> None:
    assert found(studies, StudyInstanceUID=study_uid(4)) == [4]
    assert found(studies, StudyInstanceUID=f"{study_uid(6)}\\{study_uid(1)}\\{study_uid(4)}") == [1, 4, 6]
    assert found(studies, StudyInstanceUID=f"{study_uid(1)}\\{study_uid(99)}", PatientID="P2") == []
    assert found(studies, StudyInstanceUID=study_uid(99)) == []


def test_limit_offset_and_truncation(studies: Catalog) -> None:
    def page(limit: int | None, offset: int, **keys: str) -> tuple[list[int], bool]:
        result = studies.query_studies(P, conds(**keys), limit=limit, offset=offset)
        by_uid = {study_uid(n): n for n in STUDIES}
        return [by_uid[r.study_uid] for r in result.rows], result.truncated

    assert page(2, 0) == ([1, 7], True)
    assert page(2, 2) == ([2, 3], True)
    assert page(3, 4) == ([4, 5, 6], False)
    assert page(10, 5) == ([5, 6], False)
    assert page(None, 6) == ([6], False)
    assert page(5, 7) == ([], False)
    assert page(7, 0) == (NEWEST_FIRST, False)
    assert page(1, 0, PatientName="*OHN*") == ([1], True)
    assert page(1, 2, PatientName="*OHN*") == ([5], False)
    assert page(1, 0, PatientID="P1") == ([1], True)
    assert page(2, 0, StudyDate="20230101-") == ([1, 7], True)
    assert page(0, 0) == ([], True)


def test_series_and_instance_queries(catalog: Catalog) -> None:
    _two_series(catalog)
    catalog.upsert_instance(make(study=2))  # another study's series are not listed
    uid = study_uid(1)

    def series(**keys: str) -> list[str]:
        return [s.series_uid for s in catalog.query_series(P, uid, conds(**keys)).rows]

    assert series() == [series_uid(1, 1), series_uid(1, 2)]
    assert series(Modality="MR") == [series_uid(1, 2)]
    assert series(SeriesNumber="1") == [series_uid(1, 1)]
    assert series(SeriesInstanceUID=series_uid(1, 2)) == [series_uid(1, 2)]
    assert series(Modality="US") == []
    page = catalog.query_series(P, uid, [], limit=1)
    assert [s.series_uid for s in page.rows] == [series_uid(1, 1)] and page.truncated
    assert catalog.query_series(P, uid, [], limit=1, offset=1).truncated is False
    [row] = catalog.query_series(P, uid, conds(Modality="CT")).rows
    assert row.to_dicom_json()["00201209"]["Value"] == [4]

    def instances(series: str | None, **keys: str) -> list[str]:
        return [i.sop_uid for i in catalog.query_instances(P, uid, series, conds(**keys)).rows]

    assert instances(series_uid(1, 1)) == [sop_uid(1, 1, i) for i in (1, 2, 3, 4)]
    everything = [sop_uid(1, 1, i) for i in (1, 2, 3, 4)] + [sop_uid(1, 2, i) for i in range(1, 6)]
    assert instances(None) == everything
    assert instances(None, InstanceNumber="3") == [sop_uid(1, 1, 3), sop_uid(1, 2, 3)]
    assert instances(series_uid(1, 2), SOPClassUID=SC) == [sop_uid(1, 2, 5)]
    assert instances(None, SOPClassUID=f"{CT}\\{SC}") == [sop_uid(1, 1, i) for i in (1, 2, 3, 4)] + [
        sop_uid(1, 2, 5)
    ]
    assert instances(series_uid(1, 2), SOPInstanceUID=sop_uid(1, 2, 2)) == [sop_uid(1, 2, 2)]
    assert instances(series_uid(1, 3)) == []
    page_i = catalog.query_instances(P, uid, series_uid(1, 2), [], limit=2, offset=1)
    assert [i.sop_uid for i in page_i.rows] == [sop_uid(1, 2, 2), sop_uid(1, 2, 3)] and page_i.truncated


def test_instance_order_is_by_instance_number(catalog: Catalog) -> None:
    for n in (10, 2, 1):
        catalog.upsert_instance(make(number=n))
    rows = catalog.query_instances(P, study_uid(1), series_uid(1, 1), []).rows
    assert [r.sop_uid for r in rows] == [sop_uid(1, 1, n) for n in (1, 2, 10)]


def test_partitions_are_isolated(catalog: Catalog) -> None:
    catalog.upsert_instance(make(partition="default", size=100))
    catalog.upsert_instance(make(partition="tenant-b", size=200))
    catalog.upsert_instance(make(partition="tenant-b", number=2, size=200))
    catalog.upsert_instance(make(study=2, partition="tenant-b", date="20200101"))
    assert counts(study_of(catalog, partition="default")) == (1, 1, 100)
    assert counts(study_of(catalog, partition="tenant-b")) == (1, 2, 400)
    assert [r.study_uid for r in catalog.query_studies("default", []).rows] == [study_uid(1)]
    assert [r.study_uid for r in catalog.query_studies("tenant-b", []).rows] == [study_uid(1), study_uid(2)]
    by_pid = catalog.query_studies("tenant-b", conds(PatientID="P1")).rows
    assert [r.partition for r in by_pid] == ["tenant-b"] * 2
    assert len(catalog.query_studies("default", conds(PatientName="DOE*")).rows) == 1
    assert catalog.query_studies("default", conds(StudyDate="20200101")).rows == []
    assert catalog.query_studies("tenant-c", []).rows == []
    assert catalog.remove_instance("tenant-b", study_uid(1), series_uid(1, 1), sop_uid(1, 1, 1))
    assert counts(study_of(catalog, partition="default")) == (1, 1, 100)
    assert len(catalog.query_instances("default", study_uid(1), None, []).rows) == 1
    assert not catalog.remove_instance("tenant-c", study_uid(1), series_uid(1, 1), sop_uid(1, 1, 1))


def test_missing_keys(catalog: Catalog) -> None:
    stored = [make(number=i) for i in (1, 2, 3)]
    for item in stored:
        catalog.upsert_instance(item)
    unknown = [make(number=4).instance.key, make(study=2).instance.key]
    keys = [i.instance.key for i in stored] + unknown
    assert catalog.missing_keys(P, keys) == set(unknown)
    assert catalog.missing_keys(P, []) == set()
    catalog.remove_instance(P, study_uid(1), series_uid(1, 1), sop_uid(1, 1, 2))
    assert catalog.missing_keys(P, keys) == {*unknown, stored[1].instance.key}
    many = [make(number=i).instance.key for i in range(1, 251)]  # more than one BatchGetItem
    assert catalog.missing_keys(P, many) == set(many) - {stored[0].instance.key, stored[2].instance.key}


# -- concurrency -------------------------------------------------------------------------------------


def test_concurrent_upserts_keep_exact_counts(catalog: Catalog) -> None:
    items = [make(number=i, size=1000 + i) for i in range(1, 51)]
    orders = [random.Random(seed).sample(items, len(items)) for seed in range(4)]  # every item 4x

    def run(order: list[IndexedInstance]) -> Counter[str]:
        return Counter(catalog.upsert_instance(item) for item in order)

    with ThreadPoolExecutor(max_workers=4) as pool:
        total = sum(pool.map(run, orders), Counter())
    assert total == Counter(inserted=50, unchanged=150)
    study = study_of(catalog)
    assert counts(study) == (1, 50, sum(1000 + i for i in range(1, 51)))
    [series] = catalog.query_series(P, study_uid(1), []).rows
    assert (series.n_instances, series.size) == (50, study.size)
    assert len(catalog.query_instances(P, study_uid(1), None, []).rows) == 50


def test_concurrent_series_creation_counts_each_series_once(catalog: Catalog) -> None:
    items = [make(series=s, number=i, modality=m, sop_class=c)
             for s, m, c in ((1, "CT", CT), (2, "MR", MR), (3, "US", US)) for i in (1, 2, 3)]
    orders = [random.Random(seed).sample(items, len(items)) for seed in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda order: [catalog.upsert_instance(i) for i in order], orders))
    study = study_of(catalog)
    assert counts(study) == (3, 9, 9000)
    assert study.modalities == ["CT", "MR", "US"]


def test_concurrent_removals_keep_exact_counts(catalog: Catalog) -> None:
    for s in (1, 2):
        for i in range(1, 11):
            catalog.upsert_instance(make(series=s, number=i, size=10))
    targets = [(series_uid(1, s), sop_uid(1, s, i)) for s in (1, 2) for i in range(1, 11) if s == 1 or i <= 5]

    def run(seed: int) -> int:
        order = random.Random(seed).sample(targets, len(targets))
        return sum(catalog.remove_instance(P, study_uid(1), se, sop) for se, sop in order)

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert sum(pool.map(run, range(4))) == len(targets)  # each removal happens once
    assert counts(study_of(catalog)) == (1, 5, 50)
    assert [s.series_uid for s in catalog.query_series(P, study_uid(1), []).rows] == [series_uid(1, 2)]


def test_locate_instances_by_sop_uid_alone(catalog: Catalog) -> None:
    """Storage commitment names instances by SOP Instance UID only: found through an index, per partition."""
    catalog.upsert_instance(make(1, 1, 1))
    catalog.upsert_instance(make(1, 2, 1))
    catalog.upsert_instance(make(2, 1, 1, partition="other"))
    found = catalog.locate_instances(P, [sop_uid(1, 1, 1), sop_uid(1, 2, 1), sop_uid(2, 1, 1), "1.2.999"])
    assert found == {
        sop_uid(1, 1, 1): [(study_uid(1), series_uid(1, 1))],
        sop_uid(1, 2, 1): [(study_uid(1), series_uid(1, 2))],
    }
    assert catalog.locate_instances("other", [sop_uid(2, 1, 1)]) == {
        sop_uid(2, 1, 1): [(study_uid(2), series_uid(2, 1))]}
    assert catalog.locate_instances(P, []) == {}
    catalog.remove_instance(P, study_uid(1), series_uid(1, 2), sop_uid(1, 2, 1))
    assert catalog.locate_instances(P, [sop_uid(1, 2, 1)]) == {}


def test_the_name_index_follows_the_latest_study_attributes(catalog: Catalog) -> None:
    """Instances with the study's attributes unchanged leave its name index as it is; a later one
    with another patient name moves the study to that name."""
    catalog.upsert_instance(make(number=1))
    catalog.upsert_instance(make(number=2))  # same study attributes
    assert [s.study_uid for s in catalog.query_studies(P, conds(PatientName="doe^j*")).rows] == [study_uid(1)]
    catalog.upsert_instance(make(number=3, name="Roe^Jane"))
    assert catalog.query_studies(P, conds(PatientName="doe^j*")).rows == []
    assert [s.study_uid for s in catalog.query_studies(P, conds(PatientName="roe*")).rows] == [study_uid(1)]
    catalog.upsert_instance(make(number=4, name="Roe^Jane"))
    assert [s.study_uid for s in catalog.query_studies(P, conds(PatientName="roe*")).rows] == [study_uid(1)]


# -- monitoring --------------------------------------------------------------------------------------


def test_check_and_totals(catalog: Catalog) -> None:
    """`check` passes while the storage answers; `totals` is exact on SQLite (study aggregates) and
    None on DynamoDB (no Scan: CloudWatch sums the indexer's figures instead)."""
    catalog.check()
    for study, series, n, size in ((1, 1, 1, 100), (1, 1, 2, 200), (1, 2, 1, 300), (2, 1, 1, 400)):
        catalog.upsert_instance(make(study, series, n, size=size))
    catalog.upsert_instance(make(2, 1, 1, size=400))  # a duplicate counts once
    totals = catalog.totals(P)
    if type(catalog).__name__ == "DynamoCatalog":
        assert totals is None
    else:
        assert totals == CatalogTotals(studies=2, series=3, instances=4, size=1000)
        assert catalog.totals("another-partition") == CatalogTotals(0, 0, 0, 0)
