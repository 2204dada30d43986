"""Which attributes belong to the study, series and instance levels of the catalog (PS3.18 10.6.3)."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.tag import Tag

from pacs.catalog.records import DicomJson
from pacs.dicom.json_model import to_dicom_json


def _tags(*keywords: str) -> frozenset[int]:
    return frozenset(int(Tag(k)) for k in keywords)


STUDY_TAGS = _tags(
    "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "OtherPatientIDs", "StudyInstanceUID", "StudyID", "TimezoneOffsetFromUTC", "InstitutionName",
    "NameOfPhysiciansReadingStudy",
)
SERIES_TAGS = _tags(
    "Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SeriesDate", "SeriesTime",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "BodyPartExamined",
    "Laterality", "Manufacturer", "ManufacturerModelName", "StationName", "ProtocolName",
    "FrameOfReferenceUID",
)
#: Never kept in the catalog: the file meta, Pixel Data and other bulk values live in the object.
_SKIP_GROUPS = (0x0002, 0x7FE0)
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN", "SQ"}
_CATALOG_VALUE_LIMIT = 512
_SPECIFIC_CHARACTER_SET = 0x00080005


def _kept(tag: int) -> bool:
    group = tag >> 16
    return group not in _SKIP_GROUPS and not group & 1 and tag != _SPECIFIC_CHARACTER_SET  # odd: private


def split_levels(ds: Dataset) -> tuple[DicomJson, DicomJson, DicomJson]:
    """Study, series and instance attributes of a header, as DICOM JSON (one conversion).

    The instance level keeps the other public top-level attributes (for `includefield`), but not
    sequences, binary values or values over 512 bytes, which the metadata resource serves instead.
    Values are UTF-8 text in JSON, so Specific Character Set is not repeated.
    """
    levels: tuple[DicomJson, DicomJson, DicomJson] = ({}, {}, {})
    for key, value in to_dicom_json(ds, include=_kept, bulk_data_threshold=None).items():
        _place(levels, key, int(key, 16), value)
    return levels


def _place(levels: tuple[DicomJson, DicomJson, DicomJson], key: str, tag: int, value: Any) -> None:
    """An attribute into the study's, the series' or (short, non-binary) the instance's level."""
    study, series, instance = levels
    if tag in STUDY_TAGS:
        study[key] = value
    elif tag in SERIES_TAGS:
        series[key] = value
    elif value["vr"] not in _BINARY_VRS and len(str(value.get("Value", ""))) <= _CATALOG_VALUE_LIMIT:
        instance[key] = value


def split_document(doc: DicomJson) -> tuple[DicomJson, DicomJson, DicomJson] | None:
    """What `split_levels` gives, read from an instance's metadata document (`to_dicom_json` with
    BulkDataURIs for values over 1024 bytes) instead of converting the header a second time.

    None when a value the catalog could keep went to a BulkDataURI there (split_levels then)."""
    levels: tuple[DicomJson, DicomJson, DicomJson] = ({}, {}, {})
    for key, value in doc.items():
        tag = int(key, 16)
        if not _kept(tag):
            continue
        if "BulkDataURI" in value:
            if value["vr"] not in _BINARY_VRS or tag in STUDY_TAGS or tag in SERIES_TAGS:
                return None
            continue
        _place(levels, key, tag, value)
    return levels
