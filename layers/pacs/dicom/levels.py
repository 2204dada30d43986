"""Which attributes belong to the study, series and instance levels of the catalog (PS3.18 10.6.3)."""

from __future__ import annotations

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


def _instance_tag(tag: int) -> bool:
    return tag not in STUDY_TAGS and tag not in SERIES_TAGS and (tag >> 16) not in _SKIP_GROUPS \
        and tag != 0x00080005 and not (tag >> 16) & 1  # private groups are odd


def split_levels(ds: Dataset) -> tuple[DicomJson, DicomJson, DicomJson]:
    """Study, series and instance attributes of a header, as DICOM JSON.

    The instance level keeps the other public top-level attributes (for `includefield`), but not
    sequences, binary values or values over 512 bytes, which the metadata resource serves instead.
    """
    study = to_dicom_json(ds, include=STUDY_TAGS.__contains__, bulk_data_threshold=None)
    series = to_dicom_json(ds, include=SERIES_TAGS.__contains__, bulk_data_threshold=None)
    instance = {
        k: v
        for k, v in to_dicom_json(ds, include=_instance_tag, bulk_data_threshold=None).items()
        if v["vr"] not in _BINARY_VRS and len(str(v.get("Value", ""))) <= _CATALOG_VALUE_LIMIT
    }
    return study, series, instance
