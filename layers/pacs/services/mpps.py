"""Modality Performed Procedure Step (PS3.4 Annex F): the N-CREATE / N-SET state rules, the record
kept for each step, and the MppsUpdated event. No pynetdicom types: the gateway handler is thin.

State rules (PS3.4 F.7.2):
- N-CREATE creates a step whose Performed Procedure Step Status is IN PROGRESS; any other value is
  refused with 0x0106 Invalid attribute value; an existing SOP Instance UID with 0x0111 Duplicate
  SOP instance; missing required attributes with 0x0120 / 0x0121;
- N-SET applies only while the step is IN PROGRESS; COMPLETED and DISCONTINUED are final: a later
  N-SET is refused with 0x0110 Processing failure, "Performed Procedure Step Object may no longer be
  updated", Error ID 0xA710 (Table F.7.2-2); an unknown step with 0x0112 No such SOP instance;
  attributes Table F.7.2-1 marks "Not allowed" for N-SET with 0x0105 No such attribute (listed in
  the Attribute Identifier List); a status other than the three values with 0x0106.

Records are stored as DICOM JSON with their status and times (`MppsStore` adapters:
`pacs.catalog.mpps_sqlite`, `pacs.catalog.mpps_dynamodb`); every accepted change emits MppsUpdated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pydicom.tag import Tag

from pacs.catalog.records import DicomJson
from pacs.dicom.uids import is_valid_uid
from pacs.events.publisher import MPPS_UPDATED, EventPublisher

log = logging.getLogger(__name__)

#: Modality Performed Procedure Step SOP Class.
MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"

IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
STATES = (IN_PROGRESS, COMPLETED, DISCONTINUED)
FINAL_STATES = frozenset({COMPLETED, DISCONTINUED})

# DIMSE statuses (PS3.7 Annex C, PS3.4 F.7.2).
SUCCESS = 0x0000
NO_SUCH_ATTRIBUTE = 0x0105
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_SOP_INSTANCE = 0x0112
INVALID_OBJECT_INSTANCE = 0x0117
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
#: Error ID of "Performed Procedure Step Object may no longer be updated" (Table F.7.2-2).
MAY_NO_LONGER_BE_UPDATED = 0xA710

STATUS_TAG = 0x00400252  # Performed Procedure Step Status
SCHEDULED_STEPS = 0x00400270  # Scheduled Step Attributes Sequence
STUDY_UID_TAG = 0x0020000D

#: Type 1 in the N-CREATE (Table F.7.2-1): present with a value.
REQUIRED_ON_CREATE = (
    0x00400252,  # Performed Procedure Step Status
    0x00400253,  # Performed Procedure Step ID
    0x00400241,  # Performed Station AE Title
    0x00400244,  # Performed Procedure Step Start Date
    0x00400245,  # Performed Procedure Step Start Time
    0x00080060,  # Modality
)
#: Present (Type 2 or 1) in the N-CREATE: may be empty.
PRESENT_ON_CREATE = (SCHEDULED_STEPS, 0x00100010, 0x00100020)

#: "Not allowed" in an N-SET (Table F.7.2-1): set once by the N-CREATE.
NOT_ALLOWED_IN_SET = frozenset({
    0x00080016, 0x00080018,  # SOP Class UID, SOP Instance UID
    0x00400270,  # Scheduled Step Attributes Sequence
    0x00100010, 0x00100020, 0x00100021, 0x00100030, 0x00100040,  # patient name, IDs, birth date, sex
    0x00081120,  # Referenced Patient Sequence
    0x00400253,  # Performed Procedure Step ID
    0x00400241, 0x00400242, 0x00400243,  # Performed Station AE Title, Station Name, Location
    0x00400244, 0x00400245,  # Performed Procedure Step Start Date, Start Time
    0x00080060,  # Modality
    0x00200010,  # Study ID
})


@dataclass(frozen=True, slots=True)
class MppsRecord:
    partition: str
    sop_uid: str
    status: str
    #: The step's attributes as DICOM JSON (PS3.18 Annex F).
    attrs: DicomJson
    #: Study Instance UIDs the step references (Scheduled Step Attributes Sequence).
    study_uids: tuple[str, ...]
    #: When the N-CREATE and the last accepted change arrived (UTC, ISO 8601).
    created: str
    updated: str
    #: Bumped by every accepted change: the optimistic-concurrency token of `MppsStore.replace`.
    version: int = 1


class MppsStore(Protocol):
    def create_mpps(self, record: MppsRecord) -> bool:
        """Store a new record; False (nothing written) when its SOP Instance UID already exists."""
        ...

    def get_mpps(self, partition: str, sop_uid: str) -> MppsRecord | None: ...

    def replace_mpps(self, record: MppsRecord, expected_version: int) -> bool:
        """Overwrite the record if its stored version is still `expected_version`; else False."""
        ...

    def list_mpps(self, partition: str, status: str | None = None) -> list[MppsRecord]:
        """Records of a partition (optionally of one status), oldest first."""
        ...

    def close(self) -> None: ...


class MppsError(Exception):
    """A refused N-CREATE / N-SET: the DIMSE status, a comment, and what the response may carry."""

    def __init__(self, status: int, comment: str, *, error_id: int | None = None,
                 tags: Iterable[int] = ()) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment
        self.error_id = error_id
        self.tags = tuple(tags)


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _tag_name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _status_value(ds: Dataset) -> str:
    elem = ds.get(STATUS_TAG)
    value = "" if elem is None or elem.value is None else str(elem.value)
    return value.strip(" \x00")


def study_uids(ds: Dataset) -> tuple[str, ...]:
    """The Study Instance UIDs of the Scheduled Step Attributes Sequence, in order, once each."""
    found: dict[str, None] = {}
    elem = ds.get(SCHEDULED_STEPS)
    for item in (elem.value or []) if elem is not None else []:
        uid = str(item.get(STUDY_UID_TAG).value or "").strip(" \x00") if STUDY_UID_TAG in item else ""
        if uid:
            found[uid] = None
    return tuple(found)


def _check_uid(sop_uid: str | None) -> str:
    uid = (sop_uid or "").strip(" \x00")
    if not is_valid_uid(uid):
        raise MppsError(INVALID_OBJECT_INSTANCE, f"SOP Instance UID {uid[:64]!r} is not a valid UID")
    return uid


@dataclass
class MppsService:
    store: MppsStore
    events: EventPublisher | None = None
    partition: str = "default"
    clock: Callable[[], str] = field(default=now_iso)

    def create(self, sop_uid: str | None, attrs: Dataset) -> MppsRecord:
        """N-CREATE: a new step, IN PROGRESS. Raises MppsError when refused."""
        uid = _check_uid(sop_uid)
        missing = [t for t in (*REQUIRED_ON_CREATE, *PRESENT_ON_CREATE) if Tag(t) not in attrs]
        if missing:
            raise MppsError(MISSING_ATTRIBUTE, f"missing {', '.join(map(_tag_name, missing))}")
        empty = [t for t in REQUIRED_ON_CREATE if attrs[t].is_empty]
        if empty:
            raise MppsError(MISSING_ATTRIBUTE_VALUE, f"no value for {', '.join(map(_tag_name, empty))}")
        status = _status_value(attrs)
        if status != IN_PROGRESS:
            raise MppsError(INVALID_ATTRIBUTE_VALUE,
                            f"Performed Procedure Step Status must be IN PROGRESS, not {status[:24]!r}")
        stamp = self.clock()
        record = MppsRecord(self.partition, uid, status, attrs.to_json_dict(), study_uids(attrs),
                            stamp, stamp)
        if not self.store.create_mpps(record):
            raise MppsError(DUPLICATE_SOP_INSTANCE, f"MPPS {uid} already exists")
        self._publish(record)
        return record

    def set(self, sop_uid: str | None, modifications: Dataset) -> MppsRecord:
        """N-SET: replace the given attributes of a step still IN PROGRESS. Raises MppsError."""
        uid = _check_uid(sop_uid)
        banned = sorted(int(e.tag) for e in modifications if int(e.tag) in NOT_ALLOWED_IN_SET)
        if banned:
            raise MppsError(NO_SUCH_ATTRIBUTE,
                            f"may not be set after the N-CREATE: {', '.join(map(_tag_name, banned))}",
                            tags=banned)
        if Tag(STATUS_TAG) in modifications and _status_value(modifications) not in STATES:
            raise MppsError(INVALID_ATTRIBUTE_VALUE, "Performed Procedure Step Status must be one of "
                            f"{', '.join(STATES)}, not {_status_value(modifications)[:24]!r}",
                            tags=[STATUS_TAG])
        while True:  # optimistic concurrency: re-read when another N-SET won the race
            current = self.store.get_mpps(self.partition, uid)
            if current is None:
                raise MppsError(NO_SUCH_SOP_INSTANCE, f"no MPPS {uid}")
            if current.status in FINAL_STATES:
                raise MppsError(PROCESSING_FAILURE,
                                "Performed Procedure Step Object may no longer be updated",
                                error_id=MAY_NO_LONGER_BE_UPDATED)
            ds = Dataset.from_json(current.attrs)
            for elem in modifications:
                ds[elem.tag] = elem
            status = _status_value(ds) or current.status
            record = MppsRecord(self.partition, uid, status, ds.to_json_dict(), current.study_uids,
                                current.created, self.clock(), current.version + 1)
            if self.store.replace_mpps(record, current.version):
                break
        self._publish(record)
        return record

    def list(self, status: str | None = None) -> list[MppsRecord]:
        return self.store.list_mpps(self.partition, status)

    def _publish(self, record: MppsRecord) -> None:
        """MppsUpdated. The step is already stored: a publisher failure is logged, not refused."""
        if self.events is None:
            return
        detail: dict[str, Any] = {
            "partition": record.partition, "mppsInstanceUID": record.sop_uid, "status": record.status,
            "studyInstanceUIDs": list(record.study_uids), "updated": record.updated,
        }
        if record.study_uids:
            detail["studyInstanceUID"] = record.study_uids[0]
        try:
            self.events.publish(MPPS_UPDATED, detail)
        except Exception:
            log.exception("MppsUpdated for %s not published", record.sop_uid)
