"""Storage Commitment Push Model (PS3.4 Annex J): which referenced instances this PACS commits to.

An instance is committed only when it is durable AND indexed: the catalog holds it with the same SOP
Class UID and the object store still has its original. Otherwise it is failed with a Failure Reason
(PS3.4 J.3.3, (0008,1197)):
- 0x0112 No such object instance: not found (after the bounded wait below);
- 0x0119 Class / Instance conflict: catalogued under another SOP Class UID;
- 0x0110 Processing failure: catalogued but its object is missing from the store;
- 0x0131 Duplicate transaction UID: the Transaction UID was already used by an earlier request.

Waiting for the indexer: an instance stored a moment before the N-ACTION may not be indexed yet (the
embedded indexer and the AWS pipeline are asynchronous: milliseconds to seconds). The N-ACTION is
answered at once; the evaluation then polls the catalog for the instances not found yet, every
`poll` seconds (doubling up to 1 s) for at most `wait` seconds (5 s by default), and only then
reports them failed. A
modality expects exactly this: the result comes in the N-EVENT-REPORT, later.

The catalog is keyed by study and series, while a commitment request names only SOP Instance UIDs:
an `InstanceLocator` (beside the catalog, in the MPPS store adapters) finds their study and series.
Each request and its result are recorded (`CommitmentStore`), so a result whose reply could not be
delivered stays queryable (`pacs commitment list`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from pacs.catalog.port import Catalog
from pacs.dicom.uids import is_key_safe, is_valid_uid
from pacs.services.mpps import now_iso
from pacs.storage.port import BlobStore

#: Storage Commitment Push Model SOP Class, and its well-known SOP Instance.
STORAGE_COMMITMENT_SOP_CLASS = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_SOP_INSTANCE = "1.2.840.10008.1.20.1.1"
#: N-ACTION Action Type ID "Request Storage Commitment"; N-EVENT-REPORT Event Type IDs.
REQUEST_STORAGE_COMMITMENT = 1
EVENT_ALL_COMMITTED, EVENT_FAILURES_EXIST = 1, 2

# Failure Reasons (PS3.4 J.3.3).
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
DUPLICATE_TRANSACTION_UID = 0x0131

#: How the result reached the requester.
PENDING, SAME_ASSOCIATION, NEW_ASSOCIATION, UNDELIVERED = (
    "pending", "same-association", "new-association", "undelivered")

DEFAULT_WAIT = 5.0
DEFAULT_POLL = 0.2


@dataclass(frozen=True, slots=True)
class SopRef:
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True, slots=True)
class FailedRef:
    sop_class_uid: str
    sop_instance_uid: str
    reason: int


@dataclass(frozen=True, slots=True)
class CommitmentRecord:
    partition: str
    transaction_uid: str
    #: The calling AE title of the N-ACTION.
    requester: str
    requested: tuple[SopRef, ...]
    created: str
    committed: tuple[SopRef, ...] = ()
    failed: tuple[FailedRef, ...] = ()
    #: PENDING until evaluated and sent; then SAME_ASSOCIATION, NEW_ASSOCIATION or UNDELIVERED.
    delivery: str = PENDING
    updated: str = ""
    #: Why the reply could not be delivered, when it could not.
    note: str = ""
    #: A request reusing an earlier Transaction UID: answered (all failed, 0x0131), never stored.
    duplicate: bool = False

    @property
    def event_type(self) -> int:
        return EVENT_FAILURES_EXIST if self.failed else EVENT_ALL_COMMITTED


class CommitmentStore(Protocol):
    def create_commitment(self, record: CommitmentRecord) -> bool:
        """Record a new request; False (nothing written) when its Transaction UID already exists."""
        ...

    def put_commitment(self, record: CommitmentRecord) -> None:
        """Overwrite the record of this Transaction UID (its result, its delivery)."""
        ...

    def get_commitment(self, partition: str, transaction_uid: str) -> CommitmentRecord | None: ...

    def list_commitments(self, partition: str, delivery: str | None = None) -> list[CommitmentRecord]:
        """Records of a partition (optionally of one delivery state), oldest first."""
        ...


class CommitmentRecords(CommitmentStore, Protocol):
    """What a backend provides for storage commitment: the records, beside the catalog."""

    def close(self) -> None: ...


class InvalidRequest(ValueError):
    """An N-ACTION whose Action Information cannot be evaluated (0x0115 Invalid argument value)."""


def parse_request(
    transaction_uid: object, items: Sequence[tuple[object, object]]
) -> tuple[str, tuple[SopRef, ...]]:
    """Validate the Transaction UID and the Referenced SOP Sequence (class, instance) pairs."""
    tuid = str(transaction_uid or "").strip(" \x00")
    if not is_valid_uid(tuid):
        raise InvalidRequest(f"Transaction UID {tuid[:64]!r} is missing or not a valid UID")
    if not items:
        raise InvalidRequest("the Referenced SOP Sequence is missing or empty")
    refs = []
    for n, (cls, inst) in enumerate(items, 1):
        c, i = str(cls or "").strip(" \x00"), str(inst or "").strip(" \x00")
        if not c or not i:
            raise InvalidRequest(f"Referenced SOP Sequence item {n} lacks its SOP Class or Instance UID")
        refs.append(SopRef(c, i))
    return tuid, tuple(refs)


@dataclass
class CommitmentService:
    catalog: Catalog
    store: BlobStore
    records: CommitmentStore
    partition: str = "default"
    wait: float = DEFAULT_WAIT
    poll: float = DEFAULT_POLL
    sleep: Callable[[float], None] = field(default=time.sleep)
    monotonic: Callable[[], float] = field(default=time.monotonic)
    clock: Callable[[], str] = field(default=now_iso)

    def accept(self, transaction_uid: str, requester: str, refs: Sequence[SopRef]) -> CommitmentRecord:
        """Record the request. A Transaction UID used before gives a record whose instances all fail
        with 0x0131 (not stored: the earlier request keeps its record)."""
        record = CommitmentRecord(self.partition, transaction_uid, requester, tuple(refs), self.clock())
        if self.records.create_commitment(record):
            return record
        return replace(record, failed=tuple(FailedRef(r.sop_class_uid, r.sop_instance_uid,
                                                      DUPLICATE_TRANSACTION_UID) for r in refs),
                       note="duplicate Transaction UID", duplicate=True)

    def evaluate(self, record: CommitmentRecord) -> CommitmentRecord:
        """Decide every referenced instance (waiting up to `wait` seconds for the indexer) and store
        the result. A duplicate-transaction record is returned as it is."""
        if record.duplicate:
            return record
        decided: dict[SopRef, int] = {}  # 0: committed, else the failure reason
        deadline, interval = self.monotonic() + self.wait, self.poll
        while True:
            pending = [r for r in dict.fromkeys(record.requested) if r not in decided]
            found = self._check(pending)
            decided.update({r: v for r, v in found.items() if v != NO_SUCH_OBJECT_INSTANCE})
            if len(decided) == len(set(record.requested)) or self.monotonic() >= deadline:
                decided.update({r: v for r, v in found.items() if r not in decided})
                break
            self.sleep(min(interval, max(0.0, deadline - self.monotonic())))
            interval = min(interval * 2, 1.0)  # backing off: each round reads the catalog
        committed = tuple(r for r in record.requested if decided[r] == 0)
        failed = tuple(FailedRef(r.sop_class_uid, r.sop_instance_uid, decided[r])
                       for r in record.requested if decided[r] != 0)
        result = replace(record, committed=committed, failed=failed, updated=self.clock())
        self.records.put_commitment(result)
        return result

    def delivered(self, record: CommitmentRecord, delivery: str, note: str = "") -> CommitmentRecord:
        """Record how the result reached the requester (or why it did not)."""
        result = replace(record, delivery=delivery, note=note, updated=self.clock())
        if not record.duplicate:
            self.records.put_commitment(result)
        return result

    def _check(self, refs: Sequence[SopRef]) -> dict[SopRef, int]:
        valid = [r for r in refs if is_key_safe(r.sop_instance_uid)]  # stored ones may be non-UIDs
        places = self.catalog.locate_instances(self.partition, {r.sop_instance_uid for r in valid})
        out: dict[SopRef, int] = {}
        for ref in refs:
            reason = NO_SUCH_OBJECT_INSTANCE
            for study_uid, series_uid in places.get(ref.sop_instance_uid, []):
                row = self.catalog.get_instance(self.partition, study_uid, series_uid, ref.sop_instance_uid)
                if row is None:
                    continue
                if row.sop_class_uid != ref.sop_class_uid:
                    reason = CLASS_INSTANCE_CONFLICT
                    continue
                if self.store.head(row.key) is None:
                    reason = PROCESSING_FAILURE
                    continue
                reason = 0
                break
            out[ref] = reason
        return out
