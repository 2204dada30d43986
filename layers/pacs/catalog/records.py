"""What the catalog holds: one row per study, series and instance, with exact aggregates.

`attrs` are DICOM JSON (PS3.18 Annex F) objects of that level's attributes, as QIDO-RS returns
them; the aggregates (counts, modalities, SOP classes, bytes) are kept by the catalog itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

DicomJson = dict[str, dict[str, Any]]

# Aggregate tags (PS3.18 Table 10.6.3-3 / -4).
NUMBER_OF_STUDY_RELATED_SERIES = "00201206"
NUMBER_OF_STUDY_RELATED_INSTANCES = "00201208"
NUMBER_OF_SERIES_RELATED_INSTANCES = "00201209"
MODALITIES_IN_STUDY = "00080061"
SOP_CLASSES_IN_STUDY = "00080062"


def first_value(attrs: DicomJson, tag: str) -> str | None:
    """The first value of an attribute as text without DICOM padding, or None when absent or empty;
    a person name gives its Alphabetic group."""
    values = attrs.get(tag, {}).get("Value")
    if not values:
        return None
    v = values[0]
    if isinstance(v, dict):
        v = v.get("Alphabetic")
    return None if v is None else str(v).strip(" \x00")


def _cs(values: list[str]) -> dict[str, Any]:
    return {"vr": "CS", "Value": values} if values else {"vr": "CS"}


@dataclass(slots=True)
class StudyRow:
    partition: str
    study_uid: str
    attrs: DicomJson
    n_series: int = 0
    n_instances: int = 0
    size: int = 0
    modalities: list[str] = field(default_factory=list)
    sop_classes: list[str] = field(default_factory=list)

    def to_dicom_json(self) -> DicomJson:
        """Study attributes plus the aggregates QIDO-RS and C-FIND return."""
        out = dict(self.attrs)
        out[MODALITIES_IN_STUDY] = _cs(sorted(self.modalities))
        out[SOP_CLASSES_IN_STUDY] = (
            {"vr": "UI", "Value": sorted(self.sop_classes)} if self.sop_classes else {"vr": "UI"}
        )
        out[NUMBER_OF_STUDY_RELATED_SERIES] = {"vr": "IS", "Value": [self.n_series]}
        out[NUMBER_OF_STUDY_RELATED_INSTANCES] = {"vr": "IS", "Value": [self.n_instances]}
        return out


@dataclass(slots=True)
class SeriesRow:
    partition: str
    study_uid: str
    series_uid: str
    attrs: DicomJson
    n_instances: int = 0
    size: int = 0
    modality: str = ""

    def to_dicom_json(self) -> DicomJson:
        out = dict(self.attrs)
        out[NUMBER_OF_SERIES_RELATED_INSTANCES] = {"vr": "IS", "Value": [self.n_instances]}
        return out


@dataclass(slots=True)
class InstanceRow:
    partition: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    key: str
    size: int
    etag: str
    #: Orders versions of the same object: an older version never overwrites a newer one.
    sequencer: str
    attrs: DicomJson
    version_id: str | None = None

    def to_dicom_json(self) -> DicomJson:
        return dict(self.attrs)


@dataclass(slots=True)
class IndexedInstance:
    """Everything the indexer read from one stored object, ready for `Catalog.upsert_instance`."""

    instance: InstanceRow
    study_attrs: DicomJson
    series_attrs: DicomJson
    modality: str


UpsertOutcome = Literal["inserted", "replaced", "unchanged", "stale"]

RowT = TypeVar("RowT")


@dataclass(frozen=True, slots=True)
class CatalogTotals:
    """What a partition's catalog holds: counts and the bytes of its original objects."""

    studies: int
    series: int
    instances: int
    size: int


@dataclass(slots=True)
class QueryPage(Generic[RowT]):
    rows: list[RowT]
    #: True when more rows matched than `limit` allowed (QIDO-RS answers with a Warning header).
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class DerivedCopyRow:
    """A derived copy of an original instance in another transfer syntax (`pacs.services.derived`)."""

    partition: str
    study_uid: str
    series_uid: str
    sop_uid: str
    #: The copy's transfer syntax UID and its variant ('' lossless; e.g. 'q80', 'n2', 'r10' when lossy).
    syntax: str
    variant: str
    key: str
    size: int
    #: The ETag (and version, where the store keeps versions) of the original it was made from: a copy
    #: whose source ETag is not the original's current one is stale.
    source_etag: str
    source_version: str | None = None
    #: When it was made (ISO 8601 UTC) and the encoding options asked ({} for the lossless default).
    created: str = ""
    options: dict[str, Any] = field(default_factory=dict)


#: What `put_derived` did: "inserted", "replaced" (a copy of another source version was recorded) or
#: "unchanged" (the same copy of the same source was already recorded).
DerivedOutcome = Literal["inserted", "replaced", "unchanged"]
