"""gateway.find_fast: plain C-FIND requests answered in the DUL thread of an in-process gateway (served as
`gateway.server.serve_worker` serves: GatewayServer, event-driven reactors, the hook installed).

Each test knows which path answered: the pynetdicom path calls the EVT_C_FIND handler, which is
wrapped here to record its calls. The answers are compared with those of the pynetdicom path."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pacs.backends import Backend, open_backend
from pacs.catalog.records import DicomJson
from pacs.config import Settings
from pacs.services import index_worker
from pacs.services.dimse_query import FindRequest, FindService
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_ECHO
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from gateway import find as find_module
from gateway import find_fast
from gateway.ae import GatewayServer, make_ae, start_server
from gateway.context import GatewayContext
from gateway.handlers import handlers
from tests.unit.conftest import build_dataset, to_part10

from .support import free_port, wait_until

pytestmark = pytest.mark.interop

ROOT = "1.2.826.0.1.3680043.8.498.919"
STUDY_ROOT = StudyRootQueryRetrieveInformationModelFind
BIG = f"{ROOT}.9"  # one series of 40 instances


class _PausingFind(FindService):
    """The real query, paused after its first batch of matches (written at once) until the test says so."""

    resume = threading.Event()

    def _matches(self, req: FindRequest) -> Iterator[Sequence[DicomJson]]:
        matches = super()._matches(req)
        for _ in range(find_fast.BATCH):
            yield next(matches)
        assert type(self).resume.wait(60), "the test never resumed the query"
        yield from matches


@dataclass
class Gateway:
    port: int
    server: GatewayServer
    backend: Backend
    #: Message IDs of the C-FINDs the pynetdicom path (gateway.find.handle_find) answered.
    slow: list[int] = field(default_factory=list)

    def served(self) -> Any:
        (assoc,) = self.server.active_associations
        return assoc


def _load(backend: Backend) -> None:
    ingest = IngestService(backend.store)
    for p in (1, 2, 3):
        ingest.ingest(to_part10(build_dataset(
            StudyInstanceUID=f"{ROOT}.{p}", SeriesInstanceUID=f"{ROOT}.{p}.1", SOPInstanceUID=f"{ROOT}.{p}.1.1",
            PatientID=f"PID{p}", PatientName=f"Doe^Pat{p}", StudyDate=f"2024010{p}", AccessionNumber=f"ACC{p}",
        )))
    for n in range(1, 41):
        ingest.ingest(to_part10(build_dataset(
            StudyInstanceUID=BIG, SeriesInstanceUID=f"{BIG}.1", SOPInstanceUID=f"{BIG}.1.{n}", InstanceNumber=n,
            PatientID="PIDBIG", StudyDate="20240201",
        )))
    assert backend.queue is not None
    while index_worker.drain_once(backend.queue, IndexerService(backend.store, backend.catalog)):
        pass


def _serve(tmp_path: Path, *, fast: bool, service: type[FindService] = FindService, max_pdu: int = 1 << 20,
           refusal: Any = None) -> Iterator[Gateway]:
    backend = open_backend(Settings(data_dir=tmp_path / "data"))
    _load(backend)
    ctx = GatewayContext(IngestService(backend.store), backend, Settings())
    ae = make_ae("PACS", max_pdu=max_pdu)
    gw = Gateway(0, None, backend)  # type: ignore[arg-type]

    def recorded(event: Any, ctx: GatewayContext) -> Iterator[Any]:
        gw.slow.append(int(event.request.MessageID))
        yield from find_module.handle_find(event, ctx)

    bindings = [(e, recorded, [ctx]) if e is evt.EVT_C_FIND else (e, h, *rest) for e, h, *rest in handlers(ctx)]
    gw.port = free_port()
    gw.server = start_server(ae, ("127.0.0.1", gw.port), bindings)
    if fast:
        gw.server.pdata_hook_for = lambda assoc: find_fast.FindFastPath(
            assoc, ctx, refusal, service)
    try:
        yield gw
    finally:
        _PausingFind.resume.set()
        gw.server.shutdown()
        ae.shutdown()
        backend.close()


@pytest.fixture
def fast(tmp_path: Path) -> Iterator[Gateway]:
    yield from _serve(tmp_path / "fast", fast=True)


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[Gateway]:
    yield from _serve(tmp_path / "slow", fast=False)


def _scu(*syntaxes: str) -> AE:
    ae = AE(ae_title="FASTSCU")
    for model in (STUDY_ROOT, PatientRootQueryRetrieveInformationModelFind):
        ae.add_requested_context(model, list(syntaxes) or [ExplicitVRLittleEndian])
    ae.add_requested_context(Verification)
    return ae


def _ident(level: str = "STUDY", **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k in ("PatientName", "PatientID", "StudyDate", "AccessionNumber", "StudyInstanceUID",
              "ModalitiesInStudy", "NumberOfStudyRelatedInstances"):
        setattr(ds, k, "")
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def _answers(gw: Gateway, ident: Dataset, syntax: str = ExplicitVRLittleEndian, msg_id: int = 1,
             model: str = STUDY_ROOT) -> list[tuple[int, Dataset | None]]:
    ae = _scu(syntax)
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="PACS")
    try:
        assert assoc.is_established
        return [(int(s.Status), ds) for s, ds in assoc.send_c_find(ident, model, msg_id=msg_id)]
    finally:
        assoc.release()
        ae.shutdown()


QUERIES = {
    "all studies": _ident(),
    "by patient": _ident(PatientID="PID2"),
    "by date range": _ident(StudyDate="20240102-20240131"),
    "a UID list": _ident(StudyInstanceUID=[f"{ROOT}.1", f"{ROOT}.3"]),
    "a key below the level (0xFF01)": _ident(Modality="CT"),
    "no match": _ident(PatientID="NOBODY"),
    "image level": _ident("IMAGE", StudyInstanceUID=BIG, SeriesInstanceUID=f"{BIG}.1", SOPInstanceUID=""),
}


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("what", sorted(QUERIES))
def test_plain_queries_are_answered_in_the_dul_thread_as_pynetdicom_would(
    fast: Gateway, slow: Gateway, what: str, syntax: str
) -> None:
    got = _answers(fast, QUERIES[what], syntax, msg_id=5)
    expected = _answers(slow, QUERIES[what], syntax, msg_id=5)
    assert fast.slow == [] and slow.slow == [5]
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert got[-1][0] == 0x0000 and (len(got) > 1 or what == "no match")
    assert [ds for _, ds in got] == [ds for _, ds in expected]


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
@pytest.mark.parametrize(("ident", "status"), [
    (_ident(StudyDate="2024-01-01"), 0xC000),  # a malformed range
    (_ident("PATIENT"), 0xA900),  # no PATIENT level in Study Root
    (_ident(PatientName="Müller", SpecificCharacterSet="ISO_IR 100"), 0x0000),  # text pydicom decodes
])
def test_what_the_fast_path_does_not_take_is_answered_by_pynetdicom(fast: Gateway, ident: Dataset,
                                                                   status: int) -> None:
    answers = _answers(fast, ident, msg_id=9)
    assert fast.slow == [9]
    assert answers[-1][0] == status


def test_an_identifier_over_several_pdus(tmp_path: Path) -> None:
    """A gateway taking PDUs of at most 128 bytes: the command set fits in one, the identifier does not."""
    for gw in _serve(tmp_path, fast=True, max_pdu=128):
        statuses = [s for s, _ in _answers(gw, _ident(), msg_id=3)]
        assert statuses == [0xFF00] * 4 + [0x0000] and gw.slow == []


def test_a_refused_caller_goes_through_the_policy(tmp_path: Path) -> None:
    for gw in _serve(tmp_path, fast=True, refusal=lambda assoc, op: f"FASTSCU may not {op}"):
        _answers(gw, _ident(), msg_id=4)
        assert gw.slow == [4]  # the pynetdicom path (here without the policy's guard): answered there


def test_several_queries_and_an_echo_on_one_association(fast: Gateway) -> None:
    ae = _scu()
    assoc = ae.associate("127.0.0.1", fast.port, ae_title="PACS")
    try:
        for n, (patient, expected) in enumerate((("PID1", 1), ("NOBODY", 0), ("PIDBIG", 1), ("PID3", 1)), 1):
            statuses = [int(s.Status) for s, _ in assoc.send_c_find(_ident(PatientID=patient), STUDY_ROOT,
                                                                       msg_id=n)]
            assert statuses == [0xFF00] * expected + [0x0000], (patient, statuses)
            assert int(assoc.send_c_echo().Status) == 0x0000
        bad = [int(s.Status) for s, _ in assoc.send_c_find(_ident(StudyDate="x"), STUDY_ROOT, msg_id=99)]
        assert bad[-1] == 0xC000
        assert [int(s.Status) for s, _ in assoc.send_c_find(_ident(), STUDY_ROOT, msg_id=100)][-1] == 0x0000
        assert fast.slow == [99]
    finally:
        assoc.release()
        ae.shutdown()


@pytest.fixture
def paused(tmp_path: Path) -> Iterator[Gateway]:
    _PausingFind.resume.clear()
    yield from _serve(tmp_path, fast=True, service=_PausingFind)


def _start_paused_query(gw: Gateway, ae: AE, evt_handlers: list[Any] | None = None) -> tuple[Any, Iterator[Any]]:
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="PACS", evt_handlers=evt_handlers or [])
    assert assoc.is_established
    ident = Dataset()
    ident.QueryRetrieveLevel = "IMAGE"
    ident.StudyInstanceUID, ident.SeriesInstanceUID, ident.SOPInstanceUID = BIG, f"{BIG}.1", ""
    responses = assoc.send_c_find(ident, STUDY_ROOT, msg_id=7)
    for n in range(1, find_fast.BATCH + 1):
        status, match = next(responses)
        assert status.Status == 0xFF00 and match is not None and match.SOPInstanceUID == f"{BIG}.1.{n}"
    return assoc, responses


def test_cancel_mid_query_is_answered_with_cancel(paused: Gateway) -> None:
    """C-FIND, the first batch of matches, C-CANCEL (known to have reached the gateway's socket): the
    query ends with Cancel instead of the other matches, and the association serves on."""
    ae = _scu()
    assoc, responses = _start_paused_query(paused, ae)
    try:
        assoc.send_c_cancel(7, query_model=STUDY_ROOT)
        served = paused.served()
        wait_until(lambda: served.dul.socket.ready, bool, timeout=30, what="the C-CANCEL to reach the gateway")
        _PausingFind.resume.set()
        assert [int(s.Status) for s, _ in responses] == [0xFE00]
        assert paused.slow == [] and int(assoc.send_c_echo().Status) == 0x0000
    finally:
        assoc.release()
        ae.shutdown()


def test_other_pdus_read_mid_query_reach_pynetdicom_afterwards(paused: Gateway) -> None:
    """A C-ECHO-RQ sent while the query is being answered (the peer breaks the one-operation rule):
    read by the fast path while it looks for a cancel, handed to pynetdicom once the query is done —
    so the final C-FIND response comes first, then the echo's."""
    ae = _scu()
    arrived: list[tuple[str, int, int]] = []  # every DIMSE message the client's DUL decodes, in order

    def on_recv(event: Any) -> None:
        cs = event.message.command_set
        arrived.append((type(event.message).__name__, int(cs.MessageIDBeingRespondedTo), int(cs.Status)))

    assoc, responses = _start_paused_query(paused, ae, [(evt.EVT_DIMSE_RECV, on_recv)])
    try:
        primitive = C_ECHO()  # sent as is: pynetdicom's send_c_echo would wait for its own answer
        primitive.MessageID, primitive.AffectedSOPClassUID = 8, Verification
        cx = next(c for c in assoc.accepted_contexts if c.abstract_syntax == Verification)
        assoc.dimse.send_msg(primitive, cx.context_id)
        served = paused.served()
        wait_until(lambda: served.dul.socket.ready, bool, timeout=30, what="the C-ECHO to reach the gateway")
        _PausingFind.resume.set()
        statuses = [int(s.Status) for s, _ in responses]
        assert statuses == [0xFF00] * (40 - find_fast.BATCH) + [0x0000]
        # the echo's answer, whoever takes it off the queue (the client's own reactor may, once the
        # C-FIND is over): seen as it arrives, after the final C-FIND response
        wait_until(lambda: len(arrived) == 42, bool, timeout=30, what="the C-ECHO response")
        assert arrived[-2:] == [("C_FIND_RSP", 7, 0x0000), ("C_ECHO_RSP", 8, 0x0000)]
    finally:
        assoc.release()
        ae.shutdown()
