"""MPPS state rules (PS3.4 F.7.2) on the SQLite store: statuses of refused N-CREATE / N-SET, final
states, the stored DICOM JSON, the MppsUpdated events."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pacs.catalog.mpps_sqlite import SqliteMppsStore
from pacs.events.publisher import MPPS_UPDATED
from pacs.services import mpps
from pacs.services.mpps import COMPLETED, DISCONTINUED, IN_PROGRESS, MppsError, MppsService
from pydicom.dataset import Dataset

UID = "1.2.826.0.1.3680043.10.543.1"
STUDY = "1.2.826.0.1.3680043.10.543.2"


class Published:
    """An EventPublisher that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        self.events.append((detail_type, detail))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteMppsStore]:
    s = SqliteMppsStore(tmp_path / "catalog.db")
    yield s
    s.close()


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def service(store: SqliteMppsStore, published: Published) -> MppsService:
    return MppsService(store, published)


def create_attrs(status: str = IN_PROGRESS) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "MODALITY"
    ds.PerformedProcedureStepStartDate = "20260101"
    ds.PerformedProcedureStepStartTime = "101500"
    ds.Modality = "CT"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PID7"
    step = Dataset()
    step.StudyInstanceUID = STUDY
    step.AccessionNumber = "ACC7"
    ds.ScheduledStepAttributesSequence = [step]
    ds.PerformedSeriesSequence = []
    return ds


def mods(**attrs: Any) -> Dataset:
    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def refused(fn: Any, *args: Any) -> MppsError:
    with pytest.raises(MppsError) as info:
        fn(*args)
    return info.value


def test_create_set_complete(service: MppsService, published: Published) -> None:
    rec = service.create(UID, create_attrs())
    assert (rec.status, rec.study_uids, rec.version) == (IN_PROGRESS, (STUDY,), 1)
    rec = service.set(UID, mods(PerformedProcedureStepDescription="CT chest"))
    assert rec.status == IN_PROGRESS and rec.version == 2
    series = Dataset()
    series.SeriesInstanceUID = STUDY + ".1"
    rec = service.set(UID, mods(PerformedProcedureStepStatus=COMPLETED, PerformedProcedureStepEndDate="20260101",
                                PerformedProcedureStepEndTime="103000", PerformedSeriesSequence=[series]))
    assert rec.status == COMPLETED
    stored = service.store.get_mpps("default", UID)
    assert stored == rec
    ds = Dataset.from_json(stored.attrs)
    assert ds.PerformedProcedureStepDescription == "CT chest"
    assert ds.PerformedSeriesSequence[0].SeriesInstanceUID == STUDY + ".1"
    assert ds.PatientID == "PID7"  # kept from the N-CREATE
    assert [(t, d["status"]) for t, d in published.events] == [
        (MPPS_UPDATED, IN_PROGRESS), (MPPS_UPDATED, IN_PROGRESS), (MPPS_UPDATED, COMPLETED)]
    assert published.events[-1][1] == {
        "partition": "default", "mppsInstanceUID": UID, "status": COMPLETED, "studyInstanceUIDs": [STUDY],
        "studyInstanceUID": STUDY, "updated": rec.updated}
    assert [r.sop_uid for r in service.list(COMPLETED)] == [UID]
    assert service.list(IN_PROGRESS) == []


@pytest.mark.parametrize("final", [COMPLETED, DISCONTINUED])
def test_no_change_after_a_final_state(service: MppsService, published: Published, final: str) -> None:
    service.create(UID, create_attrs())
    service.set(UID, mods(PerformedProcedureStepStatus=final))
    for change in (mods(PerformedProcedureStepStatus=IN_PROGRESS), mods(CommentsOnThePerformedProcedureStep="x"),
                   mods(PerformedProcedureStepStatus=final)):
        e = refused(service.set, UID, change)
        assert (e.status, e.error_id) == (mpps.PROCESSING_FAILURE, mpps.MAY_NO_LONGER_BE_UPDATED)
        assert e.comment == "Performed Procedure Step Object may no longer be updated"
    assert service.store.get_mpps("default", UID).status == final  # type: ignore[union-attr]
    assert len(published.events) == 2


@pytest.mark.parametrize("status", [COMPLETED, DISCONTINUED, "SCHEDULED", ""])
def test_create_must_be_in_progress(service: MppsService, status: str) -> None:
    e = refused(service.create, UID, create_attrs(status))
    assert e.status == (mpps.MISSING_ATTRIBUTE_VALUE if status == "" else mpps.INVALID_ATTRIBUTE_VALUE)
    assert service.store.get_mpps("default", UID) is None


def test_duplicate_create(service: MppsService, published: Published) -> None:
    service.create(UID, create_attrs())
    e = refused(service.create, UID, create_attrs())
    assert e.status == mpps.DUPLICATE_SOP_INSTANCE
    assert len(published.events) == 1


def test_set_of_unknown_step(service: MppsService) -> None:
    assert refused(service.set, UID, mods(PerformedProcedureStepStatus=COMPLETED)).status == mpps.NO_SUCH_SOP_INSTANCE


@pytest.mark.parametrize("uid", [None, "", "1.2.abc", "1." + "2" * 70])
def test_invalid_instance_uid(service: MppsService, uid: str | None) -> None:
    assert refused(service.create, uid, create_attrs()).status == mpps.INVALID_OBJECT_INSTANCE
    assert refused(service.set, uid, mods(PerformedProcedureStepStatus=COMPLETED)).status == \
        mpps.INVALID_OBJECT_INSTANCE


def test_attributes_not_allowed_in_set(service: MppsService) -> None:
    service.create(UID, create_attrs())
    e = refused(service.set, UID, mods(PatientID="OTHER", Modality="MR", PerformedProcedureStepStatus=COMPLETED))
    assert e.status == mpps.NO_SUCH_ATTRIBUTE
    assert e.tags == (0x00080060, 0x00100020)
    rec = service.store.get_mpps("default", UID)
    assert rec is not None and rec.status == IN_PROGRESS  # nothing of the refused N-SET applied


def test_invalid_status_in_set(service: MppsService) -> None:
    service.create(UID, create_attrs())
    e = refused(service.set, UID, mods(PerformedProcedureStepStatus="DONE"))
    assert (e.status, e.tags) == (mpps.INVALID_ATTRIBUTE_VALUE, (mpps.STATUS_TAG,))


def test_missing_attributes_on_create(service: MppsService) -> None:
    ds = create_attrs()
    del ds.PerformedStationAETitle
    del ds.ScheduledStepAttributesSequence
    e = refused(service.create, UID, ds)
    assert e.status == mpps.MISSING_ATTRIBUTE
    assert "(0040,0241)" in e.comment and "(0040,0270)" in e.comment
    ds = create_attrs()
    ds.Modality = ""
    assert refused(service.create, UID, ds).status == mpps.MISSING_ATTRIBUTE_VALUE


def test_concurrent_final_sets_one_wins(service: MppsService) -> None:
    """Two N-SETs racing to different final states: exactly one applies, the other is refused."""
    service.create(UID, create_attrs())

    def finish(state: str) -> str:
        try:
            return service.set(UID, mods(PerformedProcedureStepStatus=state)).status
        except MppsError as e:
            return f"0x{e.status:04X}"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(finish, [COMPLETED, DISCONTINUED] * 4))
    final = service.store.get_mpps("default", UID)
    assert final is not None and final.status in (COMPLETED, DISCONTINUED)
    assert outcomes.count(final.status) == 1
    assert outcomes.count("0x0110") == 7


def test_publisher_failure_keeps_the_step(store: SqliteMppsStore) -> None:
    class Broken:
        def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
            raise RuntimeError("bus down")

    rec = MppsService(store, Broken()).create(UID, create_attrs())
    assert store.get_mpps("default", UID) == rec


def test_specific_character_set_is_kept(service: MppsService) -> None:
    ds = create_attrs()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Jürgen=山田^太郎"
    rec = service.create(UID, ds)
    assert rec.attrs["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen", "Ideographic": "山田^太郎"}]
    back = Dataset.from_json(service.set(UID, mods(PerformedProcedureStepDescription="Bauch")).attrs)
    assert back.SpecificCharacterSet == "ISO_IR 192" and str(back.PatientName) == "Müller^Jürgen=山田^太郎"
