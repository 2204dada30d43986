"""One bad message ends one message, never the association (`pacs.dimse.refusals`), on the C-STORE fast
path (`gateway.store_fast`) and on pynetdicom's path alike; SOP classes and UIDs real modalities send
are accepted (`gateway.ae`, `pacs.dicom.uids`).

An in-process gateway (GatewayServer, event-driven reactors, the hooks as `gateway.server.serve_worker`
installs them, or none) over an embedded backend; requests crafted with pynetdicom's primitives, their
values set past its validation where the point is an invalid one.
"""

from __future__ import annotations

import errno
import io
import os
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pacs.backends import Backend, open_backend
from pacs.config import Settings
from pacs.dimse.reactor import EventAE
from pacs.services.ingest import IngestService
from pydicom.dataset import Dataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE, N_ACTION, N_CREATE, N_SET
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from gateway import ae as gateway_ae
from gateway import find_fast, store_fast
from gateway.ae import make_ae, start_server
from gateway.context import GatewayContext
from gateway.handlers import handle_store, handlers
from tests.unit.conftest import build_dataset, to_part10
from tests.unit.test_gateway_syntaxes import free_port

RETIRED_US = "1.2.840.10008.5.1.4.1.1.6"  # Ultrasound Image Storage (Retired)
PRIVATE_CLASS = "1.3.6.1.4.1.9590.100.1.2.424242"  # a private SOP class
GUID = "6f1c2a9e-3b4d-4c5e-8f70-1a2b3c4d5e6f"


@dataclass
class Gateway:
    port: int
    backend: Backend
    path: str
    #: SOP Instance UIDs that went through pynetdicom's path (gateway.handlers.handle_store).
    slow: list[str] = field(default_factory=list)

    def stored(self) -> dict[str, Path]:
        root: Path = self.backend.store.root  # type: ignore[attr-defined]
        return {p.stem: p for p in root.rglob("*.dcm")}

    def spool(self) -> list[Path]:
        assert self.backend.spool_dir is not None
        return list(self.backend.spool_dir.iterdir())


def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, settings: Settings) -> Iterator[Gateway]:
    backend = open_backend(Settings(data_dir=tmp_path / "data"))
    assert backend.spool_dir is not None
    monkeypatch.setattr(tempfile, "tempdir", str(backend.spool_dir))
    ctx = GatewayContext(IngestService(backend.store, uid_policy=settings.uid_policy), backend, settings)
    gw = Gateway(free_port(), backend, path)

    def recorded(event: Any, ingest: IngestService) -> Any:
        gw.slow.append(str(event.request.AffectedSOPInstanceUID))
        return handle_store(event, ingest)

    bindings = [(e, recorded, *rest) if e is evt.EVT_C_STORE else (e, h, *rest) for e, h, *rest in handlers(ctx)]
    ae = make_ae("PACS", spool=True)
    ae.acse_timeout = ae.network_timeout = 120  # only the fix ends an association early
    server = start_server(ae, ("127.0.0.1", gw.port), bindings)
    if path == "fast":
        server.pdata_hook_for = store_fast.combined(store_fast.hook_for(ctx), find_fast.hook_for(ctx))
    try:
        yield gw
    finally:
        server.shutdown()
        ae.shutdown()
        _config.STORE_RECV_CHUNKED_DATASET = False
        backend.close()


@pytest.fixture(params=["fast", "pynetdicom"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    yield from serve(tmp_path, monkeypatch, request.param, Settings())


def instance(n: int, **attrs: Any) -> Dataset:
    attrs.setdefault("SOPInstanceUID", f"1.2.826.0.1.3680043.8.498.7.{n}")
    return build_dataset(InstanceNumber=n, **attrs)


def associate(port: int, *extra: str, ae_class: type[AE] = AE) -> Association:
    scu = ae_class(ae_title="MODALITY")
    scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = 60
    for uid in (CTImageStorage, *extra):
        scu.add_requested_context(uid, ExplicitVRLittleEndian)
    for uid in (Verification, StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelMove,
                StudyRootQueryRetrieveInformationModelGet, ModalityPerformedProcedureStep,
                StorageCommitmentPushModel):
        scu.add_requested_context(uid, ExplicitVRLittleEndian)
    assoc = scu.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    return assoc


def context_id(assoc: Association, abstract_syntax: str) -> int:
    return next(cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == abstract_syntax)


def exchange(assoc: Association, request: Any, cx_id: int) -> Any:
    """Send a request primitive as it is and take its (final) response, as pynetdicom's send_* do."""
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:  # as pynetdicom's send_* wait for their reactor
        time.sleep(0.001)
    try:
        assoc.dimse.send_msg(request, cx_id)
        while True:
            _, rsp = assoc.dimse.get_msg(block=True)
            assert rsp is not None, "no answer within the DIMSE timeout"
            if rsp.Status is None or rsp.Status >> 8 not in (0xFF,):
                return rsp
    finally:
        assoc._reactor_checkpoint.set()


def raw_store(assoc: Association, ds: Dataset, *, sop_class: str | None = None, sop_uid: str | None = None,
              msg_id: int = 99, tail: bytes = b"") -> Any:
    """A C-STORE-RQ whose Affected SOP Class / Instance UIDs are whatever the test says (set past
    pynetdicom's checks), on the CT context, with `ds` (Explicit VR LE, then `tail`) as its data set."""
    req = C_STORE()
    req.MessageID = msg_id
    req.Priority = 2
    req._affected_sop_class_uid = UID(sop_class if sop_class is not None else ds.SOPClassUID)
    req._affected_sop_instance_uid = UID(sop_uid if sop_uid is not None else ds.SOPInstanceUID) or None
    req.DataSet = io.BytesIO(encode(ds, False, True) + tail)
    return exchange(assoc, req, context_id(assoc, CTImageStorage))


def _store_as(assoc: Association, ds: Dataset) -> int:
    status: int = assoc.send_c_store(pydicom.dcmread(io.BytesIO(to_part10(ds)))).Status
    return status


def echo_works(assoc: Association) -> bool:
    return assoc.is_established and assoc.send_c_echo().Status == 0


# -- item 1: a bad SOP class fails its message, not the association ----------------------------------


def test_a_c_store_with_sop_class_31_fails_alone(gateway: Gateway) -> None:
    """Good, Affected SOP Class `31`, good on one association: both good ones stored, the bad one
    answered 0x0122 with an Error Comment, the association still serving (before: A-ABORT, and the
    second good one lost)."""
    first, bad, second = instance(1), instance(2), instance(3)
    assoc = associate(gateway.port)
    try:
        assert _store_as(assoc, first) == 0
        rsp = raw_store(assoc, bad, sop_class="31")
        assert rsp.Status == 0x0122
        assert "31" in rsp.ErrorComment
        assert _store_as(assoc, second) == 0
        assert echo_works(assoc)
    finally:
        assoc.release()
    stored = gateway.stored()
    assert first.SOPInstanceUID in stored and second.SOPInstanceUID in stored
    assert bad.SOPInstanceUID not in stored
    if gateway.path == "fast":  # the good ones on the fast path, the bad one handed to pynetdicom
        assert gateway.slow == []
    assert gateway.spool() == []


def test_a_c_store_of_another_storage_class_on_a_context_is_stored(gateway: Gateway) -> None:
    """A sender whose file meta and data set disagree (dcmsend sends the data set's class on the file's
    context): the class is a storage class of the standard, so the instance is stored."""
    mr = instance(4, SOPClassUID="1.2.840.10008.5.1.4.1.1.4", Modality="MR")
    assoc = associate(gateway.port)
    try:
        assert raw_store(assoc, mr).Status == 0
        assert echo_works(assoc)
    finally:
        assoc.release()
    assert mr.SOPInstanceUID in gateway.stored()


def _identifier() -> io.BytesIO:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = "1.2.3"
    return io.BytesIO(encode(ds, False, True))


def _requests() -> dict[str, tuple[str, Any]]:
    """One request of each DIMSE service the gateway offers, its SOP class `31`, and its context."""
    echo = C_ECHO()
    find = C_FIND()
    move = C_MOVE()
    move.MoveDestination = "NOWHERE"
    get = C_GET()
    for req in (find, move, get):
        req.Identifier = _identifier()
    create = N_CREATE()
    create.AffectedSOPInstanceUID = "1.2.3.4"
    create.AttributeList = _identifier()
    nset = N_SET()
    nset.RequestedSOPInstanceUID = "1.2.3.4"
    nset.ModificationList = _identifier()
    action = N_ACTION()
    action.RequestedSOPInstanceUID = "1.2.840.10008.1.20.1.1"
    action.ActionTypeID = 1
    action.ActionInformation = _identifier()
    return {
        "C-ECHO": (Verification, echo), "C-FIND": (StudyRootQueryRetrieveInformationModelFind, find),
        "C-MOVE": (StudyRootQueryRetrieveInformationModelMove, move),
        "C-GET": (StudyRootQueryRetrieveInformationModelGet, get),
        "N-CREATE": (ModalityPerformedProcedureStep, create), "N-SET": (ModalityPerformedProcedureStep, nset),
        "N-ACTION": (StorageCommitmentPushModel, action),
    }


@pytest.mark.parametrize("service", list(_requests()))
def test_every_service_answers_an_unknown_sop_class(gateway: Gateway, service: str) -> None:
    context, req = _requests()[service]
    req.MessageID = 7
    if isinstance(req, (N_SET, N_ACTION)):
        req._requested_sop_class_uid = UID("31")
    else:
        req._affected_sop_class_uid = UID("31")
    assoc = associate(gateway.port)
    try:
        rsp = exchange(assoc, req, context_id(assoc, context))
        assert rsp.MessageIDBeingRespondedTo == 7
        assert rsp.Status == 0x0122
        assert echo_works(assoc)
        good = instance(5)
        assert _store_as(assoc, good) == 0
    finally:
        assoc.release()
    assert good.SOPInstanceUID in gateway.stored()


# -- item 7: a C-STORE without a SOP Instance UID is answered ----------------------------------------


def test_a_c_store_without_sop_instance_uid_is_answered(gateway: Gateway) -> None:
    """Before: no answer at all (pynetdicom drops the request), the sender waits for its timeout."""
    assoc = associate(gateway.port)
    try:
        rsp = raw_store(assoc, instance(6), sop_uid="")
        assert rsp.Status == 0xC000
        assert "AffectedSOPInstanceUID" in rsp.ErrorComment
        good = instance(7)
        assert _store_as(assoc, good) == 0
    finally:
        assoc.release()
    assert list(gateway.stored()) == [good.SOPInstanceUID]
    assert gateway.spool() == []


# -- item 2: UIDs that are not UIDs --------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "reason"), [
    ("1.2.3/../../x", "path separator"), ("1.2\x003", "NUL"), ("1." + "2" * 70, "64"),
])
def test_unsafe_instance_uids_are_refused_with_a_reason(gateway: Gateway, bad: str, reason: str) -> None:
    """A path, a NUL, more than 64 characters: refused with a failure status and a reason (over 64
    characters pynetdicom cannot even decode the command: before, the association was aborted),
    nothing stored, the association goes on."""
    assoc = associate(gateway.port)
    try:
        rsp = raw_store(assoc, instance(8, SOPInstanceUID=bad), sop_uid=bad)
        assert rsp.Status in (0xA900, 0xC000)
        assert reason in rsp.ErrorComment
        good = instance(9)
        assert _store_as(assoc, good) == 0
    finally:
        assoc.release()
    assert list(gateway.stored()) == [good.SOPInstanceUID]
    assert gateway.spool() == []


def test_a_guid_instance_is_stored_under_its_prefix(gateway: Gateway) -> None:
    """A key-safe non-UID (a GUID with dashes) as SOP Instance UID: stored (default UID policy), under
    its series' prefix."""
    guid = instance(10, SOPInstanceUID=GUID)
    assoc = associate(gateway.port)
    try:
        assert raw_store(assoc, guid).Status == 0
    finally:
        assoc.release()
    path = gateway.stored()[GUID]
    root: Path = gateway.backend.store.root  # type: ignore[attr-defined]
    assert path.relative_to(root).as_posix() == (
        f"default/studies/{guid.StudyInstanceUID}/series/{guid.SeriesInstanceUID}/instances/{GUID}.dcm")
    assert pydicom.dcmread(path).SOPInstanceUID == GUID


def test_the_strict_uid_policy_refuses_a_guid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for gw in serve(tmp_path, monkeypatch, "fast", Settings(uid_policy="strict")):
        assoc = associate(gw.port)
        try:
            rsp = raw_store(assoc, instance(11, SOPInstanceUID=GUID))
            assert rsp.Status == 0xA900 and "strict" in rsp.ErrorComment
            assert echo_works(assoc)
        finally:
            assoc.release()
        assert gw.stored() == {}


# -- item 2: retired and unknown storage SOP classes ---------------------------------------------------


@pytest.mark.parametrize("sop_class", [RETIRED_US, "1.2.840.10008.5.1.4.1.1.5", PRIVATE_CLASS])
def test_retired_and_private_storage_classes_are_accepted(gateway: Gateway, sop_class: str) -> None:
    """Before: "No Acceptable Presentation Contexts" for all three."""
    ds = instance(12, SOPClassUID=sop_class, Modality="US")
    assoc = associate(gateway.port, sop_class)
    try:
        assert any(cx.abstract_syntax == sop_class for cx in assoc.accepted_contexts)
        assert _store_as(assoc, ds) == 0
    finally:
        assoc.release()
    assert ds.SOPInstanceUID in gateway.stored()


def test_unknown_classes_can_be_refused_by_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for gw in serve(tmp_path, monkeypatch, "fast", Settings(accept_unknown_sop_classes=0)):
        assoc = associate(gw.port, PRIVATE_CLASS, RETIRED_US, "1.2.840.10008.5.1.4.31")
        try:
            accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
            assert RETIRED_US in accepted  # the standard's, retired or not, always
            assert PRIVATE_CLASS not in accepted
            assert "1.2.840.10008.5.1.4.31" not in accepted  # a known non-storage class we do not serve
        finally:
            assoc.release()


def test_a_known_non_storage_class_stays_refused(gateway: Gateway) -> None:
    assoc = associate(gateway.port, "1.2.840.10008.5.1.4.31")  # Modality Worklist FIND
    try:
        assert "1.2.840.10008.5.1.4.31" not in {cx.abstract_syntax for cx in assoc.accepted_contexts}
    finally:
        assoc.release()


# -- item 7: an unknown PDU type ends the connection at once -------------------------------------------


def test_an_unknown_pdu_type_is_aborted_and_closed_at_once(gateway: Gateway) -> None:
    """A PDU of type 0x09 with a 2-byte body: A-ABORT, then the connection closed (before: the body's
    bytes were read as the next PDU header, and the connection held until the network timeout)."""
    assoc = associate(gateway.port, ae_class=EventAE)
    try:
        with assoc.dul.borrowed() as sock:  # type: ignore[attr-defined]
            sock.settimeout(10)
            sock.sendall(struct.pack(">BBL", 0x09, 0, 2) + b"ab")
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
        assert received[:1] == b"\x07" and len(received) == 10  # A-ABORT, then end of stream
    finally:
        assoc.abort()


# -- item 7: identifiers that lie, sequences nested too deep -------------------------------------------


def nested(depth: int) -> bytes:
    """Content Sequence (0040,A730) nested `depth` levels, every sequence and item of undefined length
    (Explicit VR Little Endian)."""
    sq = b"\x40\x00\x30\xa7SQ\x00\x00\xff\xff\xff\xff"
    item, item_end, seq_end = b"\xfe\xff\x00\xe0\xff\xff\xff\xff", b"\xfe\xff\x0d\xe0\x00\x00\x00\x00", \
        b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    return (sq + item) * depth + (item_end + seq_end) * depth


def find_request(identifier: bytes) -> C_FIND:
    req = C_FIND()
    req.MessageID = 21
    req.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
    req.Identifier = io.BytesIO(identifier)
    return req


def _study_query() -> bytes:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    return encode(ds, False, True)


@pytest.mark.parametrize("service", ["C-FIND", "C-GET"])
def test_an_identifier_with_a_lying_length_fails(gateway: Gateway, service: str) -> None:
    """Patient ID (0010,0020) announcing 100 bytes, 4 sent: before, pydicom read it cut short and the
    query was answered Success."""
    lying = _study_query() + b"\x10\x00\x20\x00LO\x64\x00PID1"
    req: Any = find_request(lying)
    sop_class = StudyRootQueryRetrieveInformationModelFind
    if service == "C-GET":
        req, sop_class = C_GET(), StudyRootQueryRetrieveInformationModelGet
        req.MessageID, req.AffectedSOPClassUID, req.Identifier = 22, sop_class, io.BytesIO(lying)
    assoc = associate(gateway.port)
    try:
        rsp = exchange(assoc, req, context_id(assoc, sop_class))
        assert rsp.Status == 0xC000
        assert "truncated" in rsp.ErrorComment
        assert echo_works(assoc)
    finally:
        assoc.release()


@pytest.mark.parametrize("depth", [600, 3000])
def test_sequences_nested_too_deep_are_refused_with_a_reason(gateway: Gateway, depth: int) -> None:
    """A C-STORE data set and a C-FIND identifier with sequences nested `depth` levels: 0xC000 naming the
    limit (before: a RecursionError, answered 0x0110 "internal error"), the association goes on."""
    ds = instance(13)
    assoc = associate(gateway.port)
    try:
        rsp = raw_store(assoc, ds, tail=nested(depth))
        assert rsp.Status == 0xC000 and "nested" in rsp.ErrorComment
        rsp = exchange(assoc, find_request(_study_query() + nested(depth)),
                       context_id(assoc, StudyRootQueryRetrieveInformationModelFind))
        assert rsp.Status == 0xC000 and "nested" in rsp.ErrorComment
        assert echo_works(assoc)
    finally:
        assoc.release()
    assert gateway.stored() == {}


def test_sequences_nested_within_the_limit_are_stored(gateway: Gateway) -> None:
    ds = instance(14)
    assoc = associate(gateway.port)
    try:
        assert raw_store(assoc, ds, tail=nested(100)).Status == 0
    finally:
        assoc.release()
    assert ds.SOPInstanceUID in gateway.stored()


# -- audit: a spool file that cannot be written fails its C-STORE alone ----------------------------------


@pytest.mark.parametrize("fails", ["write", "flush"])
def test_a_full_spool_fails_that_c_store_alone(gateway: Gateway, monkeypatch: pytest.MonkeyPatch, fails: str) -> None:
    """ENOSPC while a data set is spooled (its writes, or their flush): that C-STORE answered 0xA700 with
    the reason, the next one stored (before: the exception reached the DUL thread, which aborted the
    association)."""
    full = [False]

    class FullDisk:
        def __init__(self, real: Any) -> None:
            self.real = real

        def _check(self, what: str) -> None:
            if full[0] and fails == what:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def write(self, data: Any) -> int:
            self._check("write")
            return int(self.real.write(data))

        def flush(self) -> None:
            self._check("flush")
            self.real.flush()

        def close(self) -> None:
            self.real.close()
            self._check("flush")  # closing flushes what is buffered

    real_open = open
    monkeypatch.setattr(gateway_ae, "open", lambda *a, **k: FullDisk(real_open(*a, **k)), raising=False)
    assoc = associate(gateway.port)
    try:
        full[0] = True
        rsp = raw_store(assoc, instance(15))
        assert rsp.Status == 0xA700 and "No space left" in rsp.ErrorComment
        full[0] = False
        assert _store_as(assoc, instance(16)) == 0
    finally:
        assoc.release()
    assert list(gateway.stored()) == [instance(16).SOPInstanceUID]
    assert gateway.spool() == []
