"""`parse_encoded` (the C-FIND fast path's identifier parser, straight from the encoded bytes) gives
exactly what `parse_identifier` gives through pydicom — the same FindRequest or the same FindFailure —
and declines (None) what it does not read itself."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from pacs.services.dimse_query import FindFailure, FindRequest, Model, parse_encoded, parse_identifier
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

STUDY_ROOT, PATIENT_ROOT = Model.STUDY_ROOT, Model.PATIENT_ROOT
UID = "1.2.826.0.1.3680043.8.498.77.1"
WORKLIST = {k: "" for k in (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber",
    "StudyDescription", "StudyID", "StudyInstanceUID", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "ReferringPhysicianName",
)}

#: (model, keys): identifiers parse_encoded reads itself.
PLAIN: list[tuple[Model, dict[str, Any]]] = [
    (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", **WORKLIST}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", **WORKLIST, "PatientID": "MIX00001"}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", **WORKLIST, "StudyDate": "20230110-20230215"}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "PatientName": "doe*", "StudyDate": "-20240131"}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "PatientName": "m?ller^J*", "AccessionNumber": "ACC?"}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": [UID, UID + ".2"]}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "ModalitiesInStudy": ["CT", "MR"], "StudyTime": "0800-1200"}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "SpecificCharacterSet": "ISO_IR 100", "PatientName": "DOE"}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "SpecificCharacterSet": ["", "ISO 2022 IR 87"],
                  "PatientName": ""}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "ReferencedStudySequence": [], "InstanceAvailability": "",
                  "Modality": "MR", "NumberOfStudyRelatedInstances": ""}),  # a key below the level: 0xFF01
    (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "PatientID": "*", "PatientName": "*", "StudyDate": ""}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": UID, "SeriesNumber": "", "Modality": "CT"}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": UID, "SeriesInstanceUID": UID + ".1",
                  "SOPInstanceUID": "", "InstanceNumber": "", "Rows": None}),
    (PATIENT_ROOT, {"QueryRetrieveLevel": "PATIENT", "PatientID": "", "PatientName": "Doe^John",
                    "NumberOfPatientRelatedInstances": ""}),
    (PATIENT_ROOT, {"QueryRetrieveLevel": "STUDY", "PatientID": "PID1", "StudyDate": "20240101-"}),
    # failures: the same status, comment and offending element
    (STUDY_ROOT, {"QueryRetrieveLevel": "FOO"}),
    (STUDY_ROOT, {"PatientName": ""}),
    (STUDY_ROOT, {"QueryRetrieveLevel": ""}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "PATIENT", "PatientID": ""}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyDate": "2024-01-01"}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyDate": "20240230"}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.x"}),
    (STUDY_ROOT, {"QueryRetrieveLevel": "SERIES", "Modality": "CT"}),
    (PATIENT_ROOT, {"QueryRetrieveLevel": "STUDY", "PatientID": "PID*"}),
]


def identifier(keys: dict[str, Any]) -> Dataset:
    ds = Dataset()
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def through_pydicom(raw: bytes, model: Model, implicit: bool) -> FindRequest | FindFailure:
    try:
        return parse_identifier(decode(BytesIO(raw), implicit, True), model)
    except FindFailure as exc:
        return exc


def directly(raw: bytes, model: Model, implicit: bool) -> FindRequest | FindFailure | None:
    try:
        return parse_encoded(raw, model, implicit=implicit)
    except FindFailure as exc:
        return exc


def same(a: FindRequest | FindFailure | None, b: FindRequest | FindFailure) -> bool:
    if isinstance(a, FindFailure) and isinstance(b, FindFailure):
        return (a.status, a.comment, a.offending) == (b.status, b.comment, b.offending)
    return a == b


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize(("model", "keys"), PLAIN)
def test_plain_identifiers_parse_as_through_pydicom(model: Model, keys: dict[str, Any], implicit: bool) -> None:
    raw = encode(identifier(keys), implicit, True)
    got = directly(raw, model, implicit)
    assert got is not None, "parse_encoded should read this identifier itself"
    assert same(got, through_pydicom(raw, model, implicit))


def _with(elements: list[DataElement]) -> Dataset:
    ds = identifier({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""})
    for elem in elements:
        ds.add(elem)
    return ds


DECLINED = {
    "a non-ASCII name": _with([DataElement(0x00100010, "PN", "Müller")]),
    "a sequence with an item": identifier({"QueryRetrieveLevel": "STUDY",
                                           "ReferencedStudySequence": [identifier({"ReferencedSOPInstanceUID": ""})]}),
    "a number to match": _with([DataElement(0x00201208, "IS", "12")]),
    "a binary value": _with([DataElement(0x00280010, "US", 512)]),
    "a leading space": _with([DataElement(0x00100020, "LO", " PID1")]),
}


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("what", sorted(DECLINED))
def test_what_it_does_not_read_is_left_to_pydicom(what: str, implicit: bool) -> None:
    ds = DECLINED[what]
    ds.SpecificCharacterSet = "ISO_IR 100"
    raw = encode(ds, implicit, True)
    assert directly(raw, STUDY_ROOT, implicit) is None
    through_pydicom(raw, STUDY_ROOT, implicit)  # which still answers (a request or a failure)


@pytest.mark.parametrize("implicit", [True, False])
def test_truncated_or_disordered_bytes_are_declined(implicit: bool) -> None:
    raw = encode(identifier({"QueryRetrieveLevel": "STUDY", "PatientID": "PID1", "StudyDate": ""}), implicit, True)
    assert directly(raw[:-3], STUDY_ROOT, implicit) is None
    level = encode(identifier({"QueryRetrieveLevel": "STUDY"}), implicit, True)
    patient = encode(identifier({"PatientID": "PID1"}), implicit, True)
    assert directly(level + patient, STUDY_ROOT, implicit) is not None
    assert directly(patient + level, STUDY_ROOT, implicit) is None
    assert directly(level + level, STUDY_ROOT, implicit) is None
