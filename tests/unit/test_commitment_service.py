"""Storage commitment decisions on an embedded backend: committed only when durable AND indexed with
the same SOP Class, the failure reasons of PS3.4 J.3.3, the bounded wait for the indexer (on a fake
clock: no real waiting), the recorded request and result."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from pacs.backends import Backend
from pacs.services import commitment as sc
from pacs.services.commitment import CommitmentService, FailedRef, InvalidRequest, SopRef, parse_request
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService
from pydicom.uid import CTImageStorage, MRImageStorage

from tests.unit.conftest import MakePart10

SERIES = "1.2.826.0.1.3680043.8.498.1.1"
TUID = "1.2.826.0.1.3680043.8.498.77.1"


@dataclass
class FakeClock:
    """monotonic() and sleep() without waiting; `on_sleep` runs at each sleep (the indexer's turn)."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)
    on_sleep: list[object] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        while self.on_sleep:
            self.on_sleep.pop(0)()  # type: ignore[operator]


def store_instance(backend: Backend, make_part10: MakePart10, n: int, *, index: bool = True) -> SopRef:
    data = make_part10(SOPInstanceUID=f"{SERIES}.{n}", InstanceNumber=n)
    stored = IngestService(backend.store).ingest(data)
    if index:
        index_key(backend, stored.key)
    return SopRef(CTImageStorage, f"{SERIES}.{n}")


def index_key(backend: Backend, key: str) -> None:
    head = backend.store.head(key)
    assert head is not None
    IndexerService(backend.store, backend.catalog).index(head, sequencer="0000000000000001")


def service(backend: Backend, clock: FakeClock, wait: float = 5.0) -> CommitmentService:
    assert backend.commitments is not None
    return CommitmentService(backend.catalog, backend.store, backend.commitments,
                             wait=wait, sleep=clock.sleep, monotonic=clock.monotonic)


def test_stored_and_indexed_instances_are_committed(embedded: Backend, make_part10: MakePart10) -> None:
    refs = [store_instance(embedded, make_part10, n) for n in (1, 2)]
    clock = FakeClock()
    svc = service(embedded, clock)
    result = svc.evaluate(svc.accept(TUID, "MODALITY", refs))
    assert result.committed == tuple(refs) and result.failed == ()
    assert result.event_type == sc.EVENT_ALL_COMMITTED
    assert clock.sleeps == []  # nothing to wait for
    assert embedded.commitments is not None
    assert embedded.commitments.get_commitment("default", TUID) == result


def test_unknown_instance_fails_after_a_bounded_wait(embedded: Backend, make_part10: MakePart10) -> None:
    known = store_instance(embedded, make_part10, 1)
    unknown = SopRef(CTImageStorage, f"{SERIES}.99")
    clock = FakeClock()
    svc = service(embedded, clock, wait=5.0)
    result = svc.evaluate(svc.accept(TUID, "MODALITY", [known, unknown]))
    assert result.committed == (known,)
    assert result.failed == (FailedRef(CTImageStorage, unknown.sop_instance_uid, sc.NO_SUCH_OBJECT_INSTANCE),)
    assert result.event_type == sc.EVENT_FAILURES_EXIST
    assert sum(clock.sleeps) == pytest.approx(5.0)  # waited, and no longer than `wait`
    assert len(clock.sleeps) <= 10  # backing off: a few catalog reads, not one per 0.2 s


def test_instance_indexed_during_the_wait_is_committed(embedded: Backend, make_part10: MakePart10) -> None:
    """The indexer is asynchronous: an instance stored just before the N-ACTION is indexed a moment later."""
    ref = store_instance(embedded, make_part10, 1, index=False)
    key = next(b.key for b in embedded.store.list("default/studies/"))
    clock = FakeClock()
    clock.on_sleep.append(lambda: None)  # first round: still not indexed
    clock.on_sleep.append(lambda: index_key(embedded, key))
    svc = service(embedded, clock)
    result = svc.evaluate(svc.accept(TUID, "MODALITY", [ref]))
    assert result.committed == (ref,) and result.failed == ()
    assert 0 < sum(clock.sleeps) < 5.0  # stopped as soon as it was found


def test_stored_but_never_indexed_is_not_committed(embedded: Backend, make_part10: MakePart10) -> None:
    ref = store_instance(embedded, make_part10, 1, index=False)
    svc = service(embedded, FakeClock(), wait=1.0)
    result = svc.evaluate(svc.accept(TUID, "MODALITY", [ref]))
    assert result.failed == (FailedRef(ref.sop_class_uid, ref.sop_instance_uid, sc.NO_SUCH_OBJECT_INSTANCE),)


def test_other_sop_class_is_a_class_instance_conflict(embedded: Backend, make_part10: MakePart10) -> None:
    ref = store_instance(embedded, make_part10, 1)
    wrong = SopRef(MRImageStorage, ref.sop_instance_uid)
    svc = service(embedded, FakeClock(), wait=0.0)
    result = svc.evaluate(svc.accept(TUID, "MODALITY", [wrong]))
    assert result.failed == (FailedRef(MRImageStorage, ref.sop_instance_uid, sc.CLASS_INSTANCE_CONFLICT),)


def test_indexed_but_object_gone_is_not_durable(embedded: Backend, make_part10: MakePart10) -> None:
    ref = store_instance(embedded, make_part10, 1)
    key = next(b.key for b in embedded.store.list("default/studies/"))
    embedded.store.delete(key)  # the catalog still lists it (no removal event processed)
    svc = service(embedded, FakeClock(), wait=0.0)
    result = svc.evaluate(svc.accept(TUID, "MODALITY", [ref]))
    assert result.failed == (FailedRef(ref.sop_class_uid, ref.sop_instance_uid, sc.PROCESSING_FAILURE),)


def test_duplicate_transaction_uid(embedded: Backend, make_part10: MakePart10) -> None:
    ref = store_instance(embedded, make_part10, 1)
    svc = service(embedded, FakeClock())
    first = svc.delivered(svc.evaluate(svc.accept(TUID, "MODALITY", [ref])), sc.SAME_ASSOCIATION)
    again = svc.evaluate(svc.accept(TUID, "OTHER", [ref]))
    assert again.duplicate and again.committed == ()
    assert again.failed == (FailedRef(ref.sop_class_uid, ref.sop_instance_uid, sc.DUPLICATE_TRANSACTION_UID),)
    svc.delivered(again, sc.SAME_ASSOCIATION)
    assert embedded.commitments is not None
    assert embedded.commitments.get_commitment("default", TUID) == first  # the first request's record stays


def test_delivery_is_recorded(embedded: Backend, make_part10: MakePart10) -> None:
    ref = store_instance(embedded, make_part10, 1)
    svc = service(embedded, FakeClock())
    result = svc.evaluate(svc.accept(TUID, "MODALITY", [ref]))
    assert embedded.commitments is not None
    assert [r.transaction_uid for r in embedded.commitments.list_commitments("default", sc.PENDING)] == [TUID]
    svc.delivered(result, sc.UNDELIVERED, "no node registered for AE 'MODALITY'")
    kept = embedded.commitments.get_commitment("default", TUID)
    assert kept is not None and kept.delivery == sc.UNDELIVERED and kept.committed == (ref,)
    assert kept.note == "no node registered for AE 'MODALITY'"


@pytest.mark.parametrize("tuid, items, message", [
    (None, [("1.2", "1.2.3")], "Transaction UID"),
    ("1.2.x", [("1.2", "1.2.3")], "Transaction UID"),
    (TUID, [], "Referenced SOP Sequence"),
    (TUID, [("1.2", None)], "item 1"),
    (TUID, [("1.2", "1.2.3"), ("", "1.2.4")], "item 2"),
])
def test_invalid_requests(tuid: object, items: list[tuple[object, object]], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_request(tuid, items)


def test_parse_request() -> None:
    assert parse_request(TUID + "\x00", [("1.2", "1.2.3 ")]) == (TUID, (SopRef("1.2", "1.2.3"),))
