"""What a C-MOVE or C-GET asks for: the stored instances its identifier names (PS3.4 C.4.2.2.1,
hierarchical retrieve), read from the catalog's queries.

Unique keys only, as the standard requires: PATIENT level (Patient Root) a single PatientID; STUDY a list
of StudyInstanceUIDs; SERIES one StudyInstanceUID and a list of SeriesInstanceUIDs; IMAGE one study, one
series and a list of SOPInstanceUIDs. Anything else is `RetrieveFailure(0xA900)` with a reason. No
instance matched is not an error (the retrieve completes with no sub-operations).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from pacs.catalog.matching import condition
from pacs.catalog.port import Catalog
from pacs.catalog.records import InstanceRow
from pacs.dicom.uids import check_uid
from pacs.errors import InvalidUID

#: Failure: Identifier does not match SOP Class (PS3.4 C.4.2.1.4, C.4.3.1.4).
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
#: Studies read per catalog call for a PATIENT-level retrieve.
_PAGE = 100


class Model(enum.StrEnum):
    PATIENT_ROOT = "PATIENT"
    STUDY_ROOT = "STUDY"
    #: Composite Instance Root (C-GET only): STUDY, SERIES and IMAGE levels as in Study Root.
    COMPOSITE_INSTANCE_ROOT = "COMPOSITE"


class RetrieveFailure(Exception):
    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


def _bad(comment: str) -> RetrieveFailure:
    return RetrieveFailure(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, comment)


def _uids(identifier: Dataset, keyword: str, *, single: bool) -> list[str]:
    value = identifier.get(keyword)
    values = list(value) if isinstance(value, MultiValue) else [] if value in (None, "") else [value]
    if not values:
        raise _bad(f"{keyword} is required at this level")
    if single and len(values) > 1:
        raise _bad(f"{keyword} must be a single UID at this level")
    try:
        return [check_uid(v, keyword) for v in values]
    except InvalidUID as exc:
        raise _bad(str(exc)) from None


def level_of(identifier: Dataset, model: Model) -> str:
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    allowed = ("PATIENT", "STUDY", "SERIES", "IMAGE") if model is Model.PATIENT_ROOT \
        else ("STUDY", "SERIES", "IMAGE")
    if level not in allowed:
        raise _bad(f"QueryRetrieveLevel {level or '(none)'!r}: use one of {', '.join(allowed)}")
    return level


def select_instances(
    catalog: Catalog, partition: str, identifier: Dataset, model: Model
) -> list[InstanceRow]:
    """The catalogued instances the identifier names, study by study in series and instance order."""
    level = level_of(identifier, model)
    return list(_select(catalog, partition, identifier, level))


def _select(catalog: Catalog, partition: str, identifier: Dataset, level: str) -> Iterator[InstanceRow]:
    if level == "PATIENT":
        pid = identifier.get("PatientID")
        if not isinstance(pid, str) or not pid.strip() or "*" in pid or "?" in pid or "\\" in pid:
            raise _bad("PatientID (a single value, no wildcard) is required at the PATIENT level")
        cond = condition("PatientID", pid.strip())
        offset = 0
        while True:
            page = catalog.query_studies(partition, [cond], limit=_PAGE, offset=offset)
            for study in page.rows:
                yield from catalog.query_instances(partition, study.study_uid, None, ()).rows
            if not page.truncated:
                return
            offset += len(page.rows)
    if level == "STUDY":
        for study_uid in dict.fromkeys(_uids(identifier, "StudyInstanceUID", single=False)):
            yield from catalog.query_instances(partition, study_uid, None, ()).rows
        return
    [study_uid] = _uids(identifier, "StudyInstanceUID", single=True)
    if level == "SERIES":
        for series_uid in dict.fromkeys(_uids(identifier, "SeriesInstanceUID", single=False)):
            yield from catalog.query_instances(partition, study_uid, series_uid, ()).rows
        return
    [series_uid] = _uids(identifier, "SeriesInstanceUID", single=True)
    for sop_uid in dict.fromkeys(_uids(identifier, "SOPInstanceUID", single=False)):
        row = catalog.get_instance(partition, study_uid, series_uid, sop_uid)
        if row is not None:
            yield row
