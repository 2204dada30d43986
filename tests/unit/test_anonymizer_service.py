"""The anonymizer service on the embedded backend: instances ingested into a research partition, their
domain events handed to the service as the worker or the Lambda would: copies ingested (indexed) into
the destination partition or written to the exports; ignored, superseded, held back, permanent; the
same event twice; the calling AE title; StudyUpdated rules."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import orjson
import pydicom
import pytest
from pacs.backends import Backend
from pacs.deid import Deidentifier, DeidError, HeldBack
from pacs.deid.project import project_keys
from pacs.deid.secrets import FileSecret, secret_source
from pacs.events.embedded import EmbeddedEventLog
from pacs.services.anonymizer import (
    AnonymizeOutcome,
    AnonymizerService,
    PermanentFailure,
    RuleOutcome,
    held_key,
    state_prefix,
)
from pacs.services.deid_rules import RulesError, load_rules
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService
from pacs.storage.keys import parse_instance_key

from tests.unit.conftest import build_dataset, to_part10

SRC, DST = "trial-7", "trial-7-deid"
STUDY = "1.2.826.0.1.3680043.8.498.77"
SERIES = f"{STUDY}.1"
PATIENT = ("Doe^Jane", "MRN-12345")


def rules(**rule: Any) -> str:
    base: dict[str, Any] = {"name": "t7", "partitions": [SRC], "destination": {"partition": DST}}
    base.update(rule)
    return json.dumps({"rule": [base]})


def store(backend: Backend, n: int, *, partition: str = SRC, calling: str | None = None, **attrs: Any
          ) -> list[tuple[str, dict[str, Any]]]:
    """Ingest one instance (indexed at once) and return the domain events it caused."""
    ds = build_dataset(StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, SOPInstanceUID=f"{SERIES}.{n}",
                       PatientName=PATIENT[0], PatientID=PATIENT[1], InstanceNumber=n,
                       FrameOfReferenceUID=f"{STUDY}.9", **attrs)
    data = to_part10(ds)
    if calling is not None:
        parsed = pydicom.dcmread(io.BytesIO(data))
        parsed.file_meta.SourceApplicationEntityTitle = calling
        buf = io.BytesIO()
        parsed.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
    log: EmbeddedEventLog = backend.events  # type: ignore[assignment]
    before = log.last_id()
    IngestService(backend.store, partition=partition,
                  indexer=IndexerService(backend.store, backend.catalog, backend.events)).ingest(data)
    return [(e.detail_type, e.detail) for e in log.read(before, 100)]


def service(backend: Backend, text: str) -> AnonymizerService:
    return AnonymizerService.from_backend(backend, load_rules(text))


def test_an_instance_is_deidentified_into_the_destination_partition_and_indexed(embedded: Backend) -> None:
    svc = service(embedded, rules())
    events = store(embedded, 1)
    assert [t for t, _ in events] == ["InstanceStored", "StudyUpdated"]
    report = svc.handle(*events[0])
    assert report.outcome is AnonymizeOutcome.DONE
    [result] = report.results
    assert result.outcome is RuleOutcome.STORED and result.rule == "t7"
    ref = parse_instance_key(result.key)
    assert ref is not None and ref.partition == DST
    row = embedded.catalog.get_instance(DST, ref.study_uid, ref.series_uid, ref.sop_uid)
    assert row is not None  # indexed: searchable in the destination partition
    copy = embedded.store.get(result.key)
    for secret in (*PATIENT, STUDY, SERIES, f"{SERIES}.1", f"{STUDY}.9"):
        assert secret.encode() not in copy
        assert secret not in json.dumps(row.attrs)
    study = embedded.catalog.get_study(DST, ref.study_uid)
    assert study is not None and PATIENT[0] not in json.dumps(study.attrs)
    # the original is untouched; the StudyUpdated that followed is not this rule's trigger
    assert svc.handle(*events[1]).outcome is AnonymizeOutcome.IGNORED
    # the copy's own InstanceStored (in the destination partition) is never taken again
    log: EmbeddedEventLog = embedded.events  # type: ignore[assignment]
    mine = [e for e in log.read(0, 100) if e.detail.get("partition") == DST]
    assert [e.detail_type for e in mine] == ["InstanceStored", "StudyUpdated"]
    assert svc.handle(mine[0].detail_type, mine[0].detail).outcome is AnonymizeOutcome.IGNORED


def test_the_same_event_twice_does_the_work_once_and_stores_the_same_bytes(embedded: Backend) -> None:
    svc = service(embedded, rules())
    event = store(embedded, 2)[0]
    [first] = svc.handle(*event).results
    copy = embedded.store.get(first.key)
    log: EmbeddedEventLog = embedded.events  # type: ignore[assignment]
    last = log.last_id()
    [again] = svc.handle(*event).results
    assert again.outcome is RuleOutcome.UNCHANGED and again.key == first.key
    # without its record the work is done again: the same bytes, a no-op ingest, no new event
    for record in list(embedded.exports_store.list(state_prefix(SRC, "t7", STUDY))):
        embedded.exports_store.delete(record.key)
    [third] = service(embedded, rules()).handle(*event).results
    assert third.outcome is RuleOutcome.UNCHANGED and embedded.store.get(first.key) == copy
    assert log.last_id() == last


def test_a_replaced_version_event_is_superseded(embedded: Backend) -> None:
    svc = service(embedded, rules())
    old = store(embedded, 3)[0]
    store(embedded, 3, StudyDescription="re-sent")  # replaced: the key now holds other bytes
    assert svc.handle(*old).outcome is AnonymizeOutcome.SUPERSEDED
    embedded.store.delete(old[1]["key"])
    assert svc.handle(*old).outcome is AnonymizeOutcome.SUPERSEDED


def test_other_partitions_and_event_types_are_ignored(embedded: Backend) -> None:
    svc = service(embedded, rules())
    other = store(embedded, 4, partition="default")
    assert svc.handle(*other[0]).outcome is AnonymizeOutcome.IGNORED
    assert svc.handle("InstanceDeleted", other[0][1]).outcome is AnonymizeOutcome.IGNORED
    assert svc.handle("MppsUpdated", {}).outcome is AnonymizeOutcome.IGNORED
    with pytest.raises(PermanentFailure, match="not an instance event detail"):
        svc.handle("InstanceStored", {"partition": SRC, "studyInstanceUID": "../x"})


def test_calling_ae_and_modality_conditions(embedded: Backend) -> None:
    svc = service(embedded, rules(calling_aes=["RESEARCH_CT"], modalities=["CT"]))
    theirs = store(embedded, 5, calling="RESEARCH_CT")[0]
    assert theirs[1]["callingAE"] == "RESEARCH_CT"  # the indexer announces who sent it
    assert svc.handle(*theirs).outcome is AnonymizeOutcome.DONE
    others = store(embedded, 6, calling="OTHER_CT")[0]
    assert svc.handle(*others).outcome is AnonymizeOutcome.NO_RULE
    nobody = store(embedded, 7)[0]
    assert "callingAE" not in nobody[1]
    assert svc.handle(*nobody).outcome is AnonymizeOutcome.NO_RULE
    mr = store(embedded, 8, calling="RESEARCH_CT", Modality="MR")[0]
    assert svc.handle(*mr).outcome is AnonymizeOutcome.NO_RULE


def test_study_updated_rules_take_every_instance_of_the_study_into_the_exports(embedded: Backend) -> None:
    text = rules(trigger="StudyUpdated", calling_aes=["RESEARCH_CT"], destination={"exports": True})
    svc = service(embedded, text)
    store(embedded, 10, calling="RESEARCH_CT")
    store(embedded, 11, calling="OTHER")
    events = store(embedded, 12, calling="RESEARCH_CT")
    assert svc.handle(*events[0]).outcome is AnonymizeOutcome.IGNORED  # InstanceStored: not its trigger
    report = svc.handle(*events[1])
    assert report.outcome is AnonymizeOutcome.DONE and report.count(RuleOutcome.STORED) == 2
    for r in report.results:
        assert r.key.startswith(f"{SRC}/export/rules/t7/files/2.25.") and r.key.endswith(".dcm")
        copy = embedded.exports_store.get(r.key)
        assert pydicom.dcmread(io.BytesIO(copy)).PatientIdentityRemoved == "YES"
        assert PATIENT[0].encode() not in copy and STUDY.encode() not in copy
    again = svc.handle(*events[1])  # the sweep reads nothing now: every version is recorded
    assert again.outcome is AnonymizeOutcome.UP_TO_DATE and again.results == ()
    reads: list[str] = []
    real_open, real_get = embedded.store.open, embedded.store.get
    embedded.store.open = lambda k: reads.append(k) or real_open(k)  # type: ignore[method-assign]
    embedded.store.get = lambda k: reads.append(k) or real_get(k)  # type: ignore[method-assign]
    try:
        assert svc.handle(*events[1]).outcome is AnonymizeOutcome.UP_TO_DATE
    finally:
        embedded.store.open, embedded.store.get = real_open, real_get  # type: ignore[method-assign]
    assert reads == []
    # a new instance: only it is read
    later = store(embedded, 13, calling="RESEARCH_CT")
    report = svc.handle(*later[1])
    assert [(r.sop_uid, r.outcome) for r in report.results] == [(f"{SERIES}.13", RuleOutcome.STORED)]
    assert svc.handle("StudyUpdated", {**events[1][1], "deleted": True}).outcome is AnonymizeOutcome.IGNORED


def test_held_back_is_recorded_and_listed(embedded: Backend, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    def held(self: Deidentifier, data: object) -> object:
        raise HeldBack("Burned In Annotation YES and no pixel rule covers US 640x480")

    monkeypatch.setattr(Deidentifier, "part10", held)
    svc = service(embedded, rules())
    [(outcome, _)] = [(r.outcome, r) for r in svc.handle(*store(embedded, 20)[0]).results]
    assert outcome is RuleOutcome.HELD
    record = orjson.loads(embedded.exports_store.get(held_key(SRC, "t7", STUDY, SERIES, f"{SERIES}.20")))
    assert record["reason"].startswith("Burned In Annotation YES") and record["sopInstanceUID"] == f"{SERIES}.20"
    assert [h["rule"] for h in svc.held(SRC)] == ["t7"]
    assert not list(embedded.store.list(f"{DST}/studies/"))  # nothing exported
    from pacs.cli.main import main

    assert main(["anonymizer", "held", "--data-dir", str(embedded.settings.data_dir), "--partition", SRC]) == 0
    out = capsys.readouterr()
    assert f"t7\t{SRC}/studies/{STUDY}" in out.out and "1 held back" in out.err


def test_a_deid_error_is_permanent(embedded: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(self: Deidentifier, data: object) -> object:
        raise DeidError("retain-uids cannot be honoured here")

    monkeypatch.setattr(Deidentifier, "part10", fails)
    svc = service(embedded, rules())
    with pytest.raises(PermanentFailure, match="rule t7: retain-uids cannot be honoured"):
        svc.handle(*store(embedded, 21)[0])


def test_project_keys_come_from_the_data_dirs_secret_file(embedded: Backend, tmp_path: Path) -> None:
    keys = project_keys(embedded.settings)
    assert keys("a") == keys("a") and keys("a") != keys("b") and len(keys("a")) == 32
    source = secret_source(embedded.settings)
    assert isinstance(source, FileSecret) and source.path == embedded.settings.data_dir / "deid" / "secret.key"
    assert source.path.stat().st_mode & 0o077 == 0


def test_an_export_key_is_made_of_checked_uids_only(embedded: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    from pacs.deid import Deidentified

    def odd(self: Deidentifier, data: object) -> Deidentified:
        return Deidentified(b"DICM", "2.25.1", "../../originals", "2.25.3", "1.2", "1.2.840.10008.1.2.1")

    monkeypatch.setattr(Deidentifier, "part10", odd)
    svc = service(embedded, rules(destination={"exports": True}))
    with pytest.raises(PermanentFailure, match="the copy's SeriesInstanceUID"):
        svc.handle(*store(embedded, 30)[0])
    assert not list(embedded.exports_store.list(f"{SRC}/export/rules/t7/files/"))


def test_a_rule_with_a_crosswalk_records_its_pseudonyms(embedded: Backend) -> None:
    """`crosswalk = true`: the rule's project crosswalk (encrypted, in the exports store) leads back from
    the copy's pseudonyms to the originals, for authorised re-identification."""
    from pacs.deid.crosswalk import Crosswalk

    svc = service(embedded, rules(crosswalk=True, project="trial-7"))
    [result] = svc.handle(*store(embedded, 31)[0]).results
    copy = pydicom.dcmread(io.BytesIO(embedded.store.get(result.key)))
    walk = Crosswalk(embedded.exports_store, SRC, "trial-7", project_keys(embedded.settings)("trial-7"))
    assert ("patient_id", PATIENT[1]) in walk.lookup(str(copy.PatientID))
    assert ("study_uid", STUDY) in walk.lookup(str(copy.StudyInstanceUID))
    with pytest.raises(RulesError, match="crosswalk"):
        load_rules(rules(crosswalk="yes"))
