"""C-FIND query layer (pacs.services.dimse_query) on the embedded catalog: levels, hierarchy, matching,
return keys, aggregates, character sets and the failures of malformed identifiers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pacs.backends import Backend
from pacs.services import index_worker
from pacs.services.dimse_query import (
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    UNABLE_TO_PROCESS,
    FindFailure,
    FindService,
    Model,
    parse_identifier,
)
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from tests.unit.conftest import MakePart10

ROOT = "1.2.826.0.1.3680043.8.498.77"
S1, S2, S3 = f"{ROOT}.1", f"{ROOT}.2", f"{ROOT}.3"
STUDY_ROOT, PATIENT_ROOT = Model.STUDY_ROOT, Model.PATIENT_ROOT


@pytest.fixture
def service(embedded: Backend, make_part10: MakePart10) -> FindService:
    """PID1 Doe^John: S1 (CT, 2 series x 2, 2024-01-31) and S3 (MR, 1 x 1, 2024-06-01);
    PID2 Müller^Jürgen: S2 (MR, 1 x 3, 2024-03-15)."""
    ingest = IngestService(embedded.store)
    for se in (1, 2):
        for n in (1, 2):
            ingest.ingest(make_part10(
                StudyInstanceUID=S1, SeriesInstanceUID=f"{S1}.{se}", SOPInstanceUID=f"{S1}.{se}.{n}",
                SeriesNumber=se, InstanceNumber=n,
            ))
    for n in (1, 2, 3):
        ingest.ingest(make_part10(
            StudyInstanceUID=S2, SeriesInstanceUID=f"{S2}.1", SOPInstanceUID=f"{S2}.1.{n}", InstanceNumber=n,
            PatientName="Müller^Jürgen", PatientID="PID2", StudyDate="20240315", AccessionNumber="ACC2",
            Modality="MR", StudyDescription="MR brain", SpecificCharacterSet="ISO_IR 100",
        ))
    ingest.ingest(make_part10(
        StudyInstanceUID=S3, SeriesInstanceUID=f"{S3}.1", SOPInstanceUID=f"{S3}.1.1", StudyDate="20240601",
        Modality="MR", AccessionNumber="ACC3",
    ))
    assert embedded.queue is not None
    while index_worker.drain_once(embedded.queue, IndexerService(embedded.store, embedded.catalog)):
        pass
    return FindService(embedded.catalog, "default", "OURAE")


def ident(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def find(service: FindService, ds: Dataset, model: Model = STUDY_ROOT) -> list[Dataset]:
    return list(service.find(parse_identifier(ds, model)))


def failure(ds: Dataset, model: Model = STUDY_ROOT) -> FindFailure:
    with pytest.raises(FindFailure) as info:
        parse_identifier(ds, model)
    return info.value


def study_uids(results: Iterator[Dataset] | list[Dataset]) -> list[str]:
    return [r.StudyInstanceUID for r in results]


def test_all_studies_newest_first_with_exactly_the_requested_keys(service: FindService) -> None:
    results = find(service, ident("STUDY", StudyInstanceUID="", PatientName="", StudyDate="",
                                  ReferringPhysicianName="", NumberOfStudyRelatedInstances=""))
    assert study_uids(results) == [S3, S2, S1]
    s1 = results[2]
    assert [e.keyword for e in s1] == [
        "StudyDate", "QueryRetrieveLevel", "RetrieveAETitle", "ReferringPhysicianName", "PatientName",
        "StudyInstanceUID", "NumberOfStudyRelatedInstances",
    ]
    assert s1.QueryRetrieveLevel == "STUDY" and s1.RetrieveAETitle == "OURAE"
    assert s1.StudyDate == "20240131" and str(s1.PatientName) == "Doe^John"
    assert s1.NumberOfStudyRelatedInstances == 4
    assert s1["ReferringPhysicianName"].is_empty  # unknown: zero-length, still returned
    assert "SpecificCharacterSet" not in s1  # plain ASCII, none asked for


def test_unique_key_always_returned(service: FindService) -> None:
    (r,) = find(service, ident("STUDY", AccessionNumber="ACC2"))
    assert r.StudyInstanceUID == S2 and r.AccessionNumber == "ACC2"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"PatientID": "PID2"}, [S2]),
        ({"PatientID": "PID1"}, [S3, S1]),
        ({"StudyDate": "20240101-20240401"}, [S2, S1]),
        ({"StudyDate": "20240301-"}, [S3, S2]),
        ({"StudyDate": "-20240131"}, [S1]),
        ({"PatientName": "doe*"}, [S3, S1]),
        ({"PatientName": "MULLER^JURGEN"}, [S2]),  # case- and accent-insensitive
        ({"PatientName": "m?ller*"}, [S2]),
        ({"StudyInstanceUID": [S1, S2]}, [S2, S1]),
        ({"ModalitiesInStudy": "MR"}, [S3, S2]),
        ({"AccessionNumber": "ACC?"}, [S3, S2, S1]),
        ({"AccessionNumber": "acc*"}, []),  # case-sensitive but for PN
        ({"PatientID": "PID1", "StudyDate": "20240201-"}, [S3]),
        ({"PatientID": "NOBODY"}, []),
    ],
)
def test_study_matching(service: FindService, keys: dict[str, Any], expected: list[str]) -> None:
    assert study_uids(find(service, ident("STUDY", **keys))) == expected


def test_study_aggregates(service: FindService) -> None:
    (r,) = find(service, ident("STUDY", StudyInstanceUID=S1, ModalitiesInStudy="", NumberOfStudyRelatedSeries="",
                               NumberOfStudyRelatedInstances="", SOPClassesInStudy=""))
    assert r.ModalitiesInStudy == "CT" and r.NumberOfStudyRelatedSeries == 2
    assert r.NumberOfStudyRelatedInstances == 4 and r.SOPClassesInStudy == "1.2.840.10008.5.1.4.1.1.2"


def test_patient_level_groups_studies_by_patient(service: FindService) -> None:
    results = find(service, ident("PATIENT", PatientID="", PatientName="", NumberOfPatientRelatedStudies="",
                                  NumberOfPatientRelatedSeries="", NumberOfPatientRelatedInstances=""),
                   PATIENT_ROOT)
    by_id = {r.PatientID: r for r in results}
    assert set(by_id) == {"PID1", "PID2"}
    p1 = by_id["PID1"]
    assert str(p1.PatientName) == "Doe^John" and p1.QueryRetrieveLevel == "PATIENT"
    assert (p1.NumberOfPatientRelatedStudies, p1.NumberOfPatientRelatedSeries,
            p1.NumberOfPatientRelatedInstances) == (2, 3, 5)
    assert "StudyInstanceUID" not in p1
    (p2,) = find(service, ident("PATIENT", PatientName="müller*"), PATIENT_ROOT)
    assert p2.PatientID == "PID2"


def test_patient_root_study_level_needs_the_patient_id(service: FindService) -> None:
    assert study_uids(find(service, ident("STUDY", PatientID="PID1"), PATIENT_ROOT)) == [S3, S1]
    err = failure(ident("STUDY", StudyDate=""), PATIENT_ROOT)
    assert err.status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS and "PatientID" in err.comment
    assert failure(ident("STUDY", PatientID="PID*"), PATIENT_ROOT).status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS


def test_series_level(service: FindService) -> None:
    results = find(service, ident("SERIES", StudyInstanceUID=S1, SeriesNumber="", Modality="",
                                  NumberOfSeriesRelatedInstances=""))
    assert [r.SeriesInstanceUID for r in results] == [f"{S1}.1", f"{S1}.2"]
    assert all(r.StudyInstanceUID == S1 and r.Modality == "CT" for r in results)
    assert [r.NumberOfSeriesRelatedInstances for r in results] == [2, 2]
    assert find(service, ident("SERIES", StudyInstanceUID=S1, Modality="MR")) == []
    # Patient Root: the patient and the study must both be named, and agree.
    assert len(find(service, ident("SERIES", PatientID="PID1", StudyInstanceUID=S1), PATIENT_ROOT)) == 2
    assert find(service, ident("SERIES", PatientID="PID2", StudyInstanceUID=S1), PATIENT_ROOT) == []
    assert failure(ident("SERIES", StudyInstanceUID=S1), PATIENT_ROOT).status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    err = failure(ident("SERIES", Modality="CT"))
    assert err.status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS and "StudyInstanceUID" in err.comment


def test_image_level(service: FindService) -> None:
    results = find(service, ident("IMAGE", StudyInstanceUID=S2, SeriesInstanceUID=f"{S2}.1", SOPInstanceUID="",
                                  InstanceNumber="", SOPClassUID="", InstanceAvailability=""))
    assert [r.SOPInstanceUID for r in results] == [f"{S2}.1.{n}" for n in (1, 2, 3)]
    r = results[0]
    assert r.InstanceNumber == 1 and r.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert r.InstanceAvailability == "ONLINE" and r.SeriesInstanceUID == f"{S2}.1" and r.StudyInstanceUID == S2
    listed = find(service, ident("IMAGE", StudyInstanceUID=S2, SeriesInstanceUID=f"{S2}.1",
                                 SOPInstanceUID=[f"{S2}.1.1", f"{S2}.1.3"]))
    assert [r.SOPInstanceUID for r in listed] == [f"{S2}.1.1", f"{S2}.1.3"]
    assert failure(ident("IMAGE", StudyInstanceUID=S2)).status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS


@pytest.mark.parametrize(
    ("keys", "status", "words"),
    [
        ({"QueryRetrieveLevel": "FOO"}, UNABLE_TO_PROCESS, "QueryRetrieveLevel"),
        ({}, UNABLE_TO_PROCESS, "QueryRetrieveLevel"),
        ({"StudyDate": "2024-01-01"}, UNABLE_TO_PROCESS, "00080020"),
        ({"StudyDate": "20240230"}, UNABLE_TO_PROCESS, "invalid date"),
        ({"StudyInstanceUID": "1.2/x"}, UNABLE_TO_PROCESS, "invalid UID"),
        ({"QueryRetrieveLevel": "PATIENT"}, IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "PATIENT"),
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_malformed_identifiers(keys: dict[str, str], status: int, words: str) -> None:
    ds = Dataset()
    if keys:
        ds.QueryRetrieveLevel = "STUDY"
    for k, v in keys.items():
        setattr(ds, k, v)
    err = failure(ds)
    assert err.status == status and words in err.comment and len(err.comment) <= 64


def test_keys_below_the_level_are_ignored_and_flagged(service: FindService) -> None:
    req = parse_identifier(ident("STUDY", Modality="MR", PatientID="PID1"), STUDY_ROOT)
    assert req.unsupported
    results = list(service.find(req))
    assert study_uids(results) == [S3, S1]  # Modality ignored, not matched
    assert all(r["Modality"].is_empty for r in results)
    assert not parse_identifier(ident("STUDY", Modality=""), STUDY_ROOT).unsupported


def _wire(ds: Dataset) -> Dataset:
    """Through the bytes an SCU sends (Explicit VR Little Endian), as the SCP decodes them."""
    raw = encode(ds, False, True)
    assert raw is not None
    return decode(__import__("io").BytesIO(raw), False, True)


def test_charset_latin1_request_and_response(service: FindService) -> None:
    q = ident("STUDY", SpecificCharacterSet="ISO_IR 100", PatientName="Müller*", StudyInstanceUID="")
    raw = encode(q, False, True)
    assert raw is not None and "Müller".encode("latin-1") in raw
    (r,) = find(service, _wire(q))
    assert r.SpecificCharacterSet == "ISO_IR 100"
    back = _wire(r)
    assert str(back.PatientName) == "Müller^Jürgen" and back.StudyInstanceUID == S2
    assert "Müller".encode("latin-1") in (encode(r, False, True) or b"")


def test_charset_utf8_and_fallback(service: FindService) -> None:
    q = ident("STUDY", SpecificCharacterSet="ISO_IR 192", PatientName="MÜLLER^*")
    (r,) = find(service, _wire(q))
    assert r.SpecificCharacterSet == "ISO_IR 192"
    assert "Müller".encode() in (encode(r, False, True) or b"")
    # No character set asked for, but a value outside ASCII: the answer says UTF-8.
    (r,) = find(service, ident("STUDY", PatientID="PID2", PatientName=""))
    assert r.SpecificCharacterSet == "ISO_IR 192" and str(_wire(r).PatientName) == "Müller^Jürgen"


def test_charset_fallback_when_the_request_charset_cannot_hold_the_value(
    embedded: Backend, make_part10: MakePart10, service: FindService,
) -> None:
    uid = f"{ROOT}.9"
    IngestService(embedded.store).ingest(make_part10(
        StudyInstanceUID=uid, SeriesInstanceUID=f"{uid}.1", SOPInstanceUID=f"{uid}.1.1",
        PatientName="Yamada^Tarou=山田^太郎", PatientID="PID9", SpecificCharacterSet="ISO_IR 192",
    ))
    assert embedded.queue is not None
    while index_worker.drain_once(embedded.queue, IndexerService(embedded.store, embedded.catalog)):
        pass
    (r,) = find(service, ident("STUDY", SpecificCharacterSet="ISO_IR 100", PatientID="PID9", PatientName=""))
    assert r.SpecificCharacterSet == "ISO_IR 192"
    assert str(_wire(r).PatientName) == "Yamada^Tarou=山田^太郎"


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize(
    ("model", "keys"),
    [
        (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "PatientName": "", "StudyDate": "",
                      "ModalitiesInStudy": "", "NumberOfStudyRelatedInstances": "", "ReferringPhysicianName": "",
                      "ReferencedStudySequence": [], "InstanceAvailability": ""}),
        (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "SpecificCharacterSet": "ISO_IR 100", "PatientName": "",
                      "PatientID": "PID2"}),
        # no character set asked for, a name that needs one (the answer falls back to UTF-8)
        (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "PatientName": "", "PatientID": "PID2",
                      "NumberOfStudyRelatedSeries": "", "StudyDescription": ""}),
        (PATIENT_ROOT, {"QueryRetrieveLevel": "PATIENT", "PatientID": "", "PatientName": "",
                        "NumberOfPatientRelatedInstances": ""}),
        (STUDY_ROOT, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": S1, "SeriesNumber": "", "Modality": "",
                      "NumberOfSeriesRelatedInstances": ""}),
        (STUDY_ROOT, {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": S1, "SeriesInstanceUID": f"{S1}.1",
                      "SOPInstanceUID": "", "InstanceNumber": "", "ImagePositionPatient": "", "Rows": None}),
    ],
)
def test_direct_encoding_equals_pydicom(service: FindService, model: Model, keys: dict[str, Any],
                                        implicit: bool) -> None:
    """The hot path's own Little Endian encoding is byte for byte what pydicom writes."""
    ds = Dataset()
    for k, v in keys.items():
        setattr(ds, k, v)
    req = parse_identifier(_wire(ds), model)
    assert FindService.can_encode(req)
    expected = [encode(r, implicit, True) for r in service.find(req)]
    assert expected and expected == list(service.find_encoded(req, implicit=implicit))


@pytest.mark.parametrize(("msg_id", "status"), [(1, 0xFF00), (65535, 0xFF01), (7, 0x0000)])
@pytest.mark.parametrize("sop_class", ["1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.1.2.1.1"])
def test_pending_command_set_is_pynetdicoms(sop_class: str, msg_id: int, status: int) -> None:
    """The gateway's hand-encoded C-FIND-RSP command sets (pending with an identifier, the final
    Success without) are what pynetdicom would send."""
    from io import BytesIO

    from pynetdicom.dimse_messages import C_FIND_RSP
    from pynetdicom.dimse_primitives import C_FIND

    from gateway.find import pending_command

    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo, rsp.AffectedSOPClassUID, rsp.Status = msg_id, sop_class, status
    final = status == 0x0000
    if not final:
        rsp.Identifier = BytesIO(b"\0\0")
    msg = C_FIND_RSP()
    msg.primitive_to_message(rsp)
    assert pending_command(sop_class, msg_id, status, identifier=not final) == encode(msg.command_set, True, True)
