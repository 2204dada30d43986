"""C-STORE written straight to the socket (`pacs.dimse.direct`): the same command set as pynetdicom's,
the stored data set byte for byte at the peer, fragmented to the peer's PDU size."""

from __future__ import annotations

import queue
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pacs.dimse.direct import (
    PendingResponder,
    StoreExchange,
    StoreStatus,
    _fast_command,
    c_store_rq,
    c_store_success_rsp,
    dataset_offset,
    frame,
    pdv_items,
    pdv_pdu,
    recv_pdu,
    retrieve_pending_rsp,
    send_stored_file,
    sendmsg_all,
    store_status,
)
from pacs.dimse.reactor import EventAE
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_GET_RSP, C_MOVE_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.mark.parametrize("originator", [(None, None), ("MOVER", 7), ("ODD", 65535)])
def test_command_set_is_pynetdicoms(originator: tuple[str | None, int | None]) -> None:
    p = C_STORE()
    p.MessageID, p.Priority = 513, 2
    p.AffectedSOPClassUID, p.AffectedSOPInstanceUID = CT, "1.2.3.45"
    p.DataSet = BytesIO(b"x")
    if originator[0]:
        p.MoveOriginatorApplicationEntityTitle, p.MoveOriginatorMessageID = originator
    msg = C_STORE_RQ()
    msg.primitive_to_message(p)
    assert c_store_rq(CT, "1.2.3.45", 513, 2, *originator) == encode(msg.command_set, True, True)


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    ds = dcmread(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def peer() -> Iterator[tuple[int, list[Any]]]:
    received: list[Any] = []

    def on_store(event: evt.Event) -> int:
        received.append(event.request)
        return 0x0000

    ae = AE(ae_title="PEER")
    ae.maximum_pdu_size = 4096  # many PDUs per instance
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, JPEGLSLossless])
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    yield server.server_address[1], received
    server.shutdown()


def test_stored_file_arrives_byte_for_byte(stored: Path, peer: tuple[int, list[Any]]) -> None:
    port, received = peer
    ae = EventAE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="PEER")
    assert assoc.is_established
    try:
        meta = dcmread(stored, stop_before_pixels=True).file_meta
        for msg_id in (1, 2):
            status = send_stored_file(assoc, stored, CT, meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID,
                                      msg_id=msg_id, originator_aet="MOVER", originator_id=9)
            assert status is not None and status.Status == 0x0000
        # a syntax the peer did not accept for this association: not this path's to send
        assert send_stored_file(assoc, stored, CT, "1.2.3", JPEGLSLossless) is None
    finally:
        assoc.release()
    with stored.open("rb") as fp:
        start = dataset_offset(fp)
        assert start is not None
        fp.seek(start)
        body = fp.read()
    assert [r.MessageID for r in received] == [1, 2]
    for req in received:
        assert req.DataSet.getvalue() == body
        assert req.MoveOriginatorApplicationEntityTitle == "MOVER" and req.MoveOriginatorMessageID == 9
        assert req.AffectedSOPInstanceUID == meta.MediaStorageSOPInstanceUID


def test_a_file_without_group_length_is_left_to_pynetdicom(tmp_path: Path) -> None:
    odd = tmp_path / "odd.dcm"
    odd.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x01\x00OB\0\0\x02\0\0\0\0\x01")
    with odd.open("rb") as fp:
        assert dataset_offset(fp) is None


@pytest.mark.parametrize(("primitive", "message", "field"), [(C_MOVE, C_MOVE_RSP, 0x8021), (C_GET, C_GET_RSP, 0x8010)])
def test_pending_retrieve_response_is_pynetdicoms(primitive: Any, message: Any, field: int) -> None:
    p = primitive()
    p.MessageIDBeingRespondedTo, p.Status = 7, 0xFF00
    p.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    p.NumberOfRemainingSuboperations, p.NumberOfCompletedSuboperations = 299, 1
    p.NumberOfFailedSuboperations, p.NumberOfWarningSuboperations = 2, 3
    msg = message()
    msg.primitive_to_message(p)
    assert retrieve_pending_rsp(field, "1.2.840.10008.5.1.4.1.2.2.2", 7, 299, 1, 2, 3) == encode(
        msg.command_set, True, True)


def test_store_success_response_is_pynetdicoms_and_only_success_is_hand_encoded() -> None:
    p = C_STORE()
    p.MessageIDBeingRespondedTo, p.Status = 9, 0x0000
    p.AffectedSOPClassUID, p.AffectedSOPInstanceUID = CT, "1.2.3.456"
    msg = C_STORE_RSP()
    msg.primitive_to_message(p)
    assert _fast_command(p) == c_store_success_rsp(CT, "1.2.3.456", 9) == encode(msg.command_set, True, True)
    p.Status = 0xA700
    assert _fast_command(p) is None  # failures keep pynetdicom's encoding (Error Comment and all)
    p.Status, p.ErrorComment = 0x0000, "a note"
    assert _fast_command(p) is None


# -- the C-MOVE loop's pieces: framing, response parsing, StoreExchange, PendingResponder ------------------


class Trickle:
    """A socket that takes at most `step` bytes per sendmsg (as one with a timeout may)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.data = bytearray()

    def sendmsg(self, buffers: list[Any]) -> int:
        room, sent = self.step, 0
        for buf in buffers:
            piece = bytes(buf)[:room]
            self.data += piece
            room -= len(piece)
            sent += len(piece)
            if not room:
                break
        return sent


def reassemble(stream: bytes) -> list[tuple[int, int, bytes]]:
    """Every PDV item of a stream of P-DATA-TF PDUs."""
    items, i = [], 0
    while i < len(stream):
        length = int.from_bytes(stream[i + 2:i + 6], "big")
        items += pdv_items(stream[i:i + 6 + length])
        i += 6 + length
    return items


@pytest.mark.parametrize(("size", "max_pdu", "step"), [(100_000, 4096, 777), (4090, 4096, 10_000), (0, 4096, 5),
                                                       (70_000, 0, 1 << 20), (8180, 4096, 1)])
def test_frame_sent_in_pieces_is_the_command_then_the_data_set(size: int, max_pdu: int, step: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    command = c_store_rq(CT, "1.2.3", 5)
    sock = Trickle(step)
    sendmsg_all(sock, frame(memoryview(data), 3, command, max_pdu))
    items = reassemble(bytes(sock.data))
    assert all(cx == 3 for cx, _, _ in items)
    assert max_pdu == 0 or all(len(frag) <= max_pdu - 6 for _, _, frag in items)
    commands = [i for i in items if i[1] & 0x01]
    datasets = [i for i in items if not i[1] & 0x01]
    assert b"".join(f for _, _, f in commands) == command and commands[-1][1] == 0x03
    assert b"".join(f for _, _, f in datasets) == data
    assert [c for _, c, _ in datasets] == [0x00] * (len(datasets) - 1) + [0x02]


def test_store_status_reads_pynetdicoms_response() -> None:
    p = C_STORE()
    p.MessageIDBeingRespondedTo, p.Status = 9, 0xA700
    p.AffectedSOPClassUID, p.AffectedSOPInstanceUID = CT, "1.2.3.456"
    p.ErrorComment = "disk full"
    p.OffendingElement = [0x00100010, 0x7FE00010]
    msg = C_STORE_RSP()
    msg.primitive_to_message(p)
    status = store_status(encode(msg.command_set, True, True))
    assert status == StoreStatus(0xA700, "disk full; offending (0010,0010), (7FE0,0010)")
    assert store_status(c_store_success_rsp(CT, "1.2.3", 1)) == StoreStatus(0x0000, "")
    assert store_status(c_store_rq(CT, "1.2.3", 1)) is None  # not a C-STORE-RSP
    assert store_status(c_store_success_rsp(CT, "1.2.3", 1)[:-3]) is None  # truncated


@pytest.mark.parametrize("counts", [(299, 1, 0, 0), (0, 65535, 7, 1), (12, 3, 4, 5)])
@pytest.mark.parametrize("field", [0x8021, 0x8010])
def test_pending_responder_writes_pynetdicoms_pending(counts: tuple[int, int, int, int], field: int) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        dul = SimpleNamespace(socket=SimpleNamespace(socket=ours), to_provider_queue=queue.Queue(),
                              event_queue=queue.Queue())
        assoc = SimpleNamespace(dul=dul, dimse=SimpleNamespace(maximum_pdu_size=16384), is_established=True)
        responder = PendingResponder(assoc, 5, field, "1.2.840.10008.5.1.4.1.2.2.2", 7)
        responder.pending(*counts)
        expected = pdv_pdu(5, 0x03, retrieve_pending_rsp(field, "1.2.840.10008.5.1.4.1.2.2.2", 7, *counts))
        assert recv_pdu(theirs) == expected


@dataclass
class Answering:
    """A Storage SCP answering per SOP Instance UID (default Success), maximum PDU 4096; `abort_at`: the
    SOP Instance UID at which it aborts the association instead of answering."""

    port: int
    statuses: dict[str, Dataset | int] = field(default_factory=dict)
    received: list[Any] = field(default_factory=list)
    abort_at: str | None = None


@pytest.fixture
def answering() -> Iterator[Answering]:
    peer = Answering(0)

    def on_store(event: evt.Event) -> Dataset | int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid == peer.abort_at:
            event.assoc.abort()
            return 0x0000
        peer.received.append(event.request)
        return peer.statuses.get(uid, 0x0000)

    ae = AE(ae_title="PEER")
    ae.maximum_pdu_size = 4096
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, JPEGLSLossless])
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    peer.port = server.server_address[1]
    yield peer
    server.shutdown()


def _copies(stored: Path, n: int) -> list[tuple[Path, str]]:
    out = []
    for k in range(n):
        ds = dcmread(stored)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = stored.parent / f"copy{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append((path, str(ds.SOPInstanceUID)))
    return out


def _body(path: Path) -> bytes:
    with path.open("rb") as fp:
        start = dataset_offset(fp)
        assert start is not None
        fp.seek(start)
        return fp.read()


def test_store_exchange_sends_as_stored_and_reads_each_status(stored: Path, answering: Answering) -> None:
    files = _copies(stored, 4)
    refused = Dataset()
    refused.Status, refused.ErrorComment = 0xA700, "no room"
    answering.statuses = {files[1][1]: refused, files[2][1]: 0xB000}
    ae = EventAE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", answering.port, ae_title="PEER")
    assert assoc.is_established
    exchange = StoreExchange.open(assoc)
    assert exchange is not None
    try:
        got = []
        for n, (path, uid) in enumerate(files):
            source: Path | bytes = path if n % 2 == 0 else path.read_bytes()  # a file, or bytes (S3)
            got.append(exchange.send(source, CT, uid, ExplicitVRLittleEndian, msg_id=n + 1,
                                     originator_aet="MOVER", originator_id=9))
        assert exchange.send(stored, CT, "1.2.3", JPEGLSLossless, msg_id=9) is None  # not accepted: not ours
        exchange.give_back()
        # the association is pynetdicom's again: its own send_c_store works
        assert assoc.send_c_store(dcmread(files[0][0])).Status == 0x0000
    finally:
        exchange.close()
        assoc.release()
        ae.shutdown()
    assert got == [StoreStatus(0), StoreStatus(0xA700, "no room"), StoreStatus(0xB000), StoreStatus(0)]
    assert [r.AffectedSOPInstanceUID for r in answering.received[:4]] == [uid for _, uid in files]
    for req, (path, _) in zip(answering.received, files, strict=False):
        assert req.DataSet.getvalue() == _body(path)
        assert req.MoveOriginatorApplicationEntityTitle == "MOVER" and req.MoveOriginatorMessageID == 9


def test_store_exchange_when_the_peer_aborts(stored: Path, answering: Answering) -> None:
    files = _copies(stored, 3)
    answering.abort_at = files[1][1]
    ae = EventAE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", answering.port, ae_title="PEER")
    exchange = StoreExchange.open(assoc)
    assert exchange is not None
    try:
        first = exchange.send(files[0][0], CT, files[0][1], ExplicitVRLittleEndian, msg_id=1)
        second = exchange.send(files[1][0], CT, files[1][1], ExplicitVRLittleEndian, msg_id=2)
        assert exchange.ended  # whatever pynetdicom has made of the A-ABORT yet
        third = exchange.send(files[2][0], CT, files[2][1], ExplicitVRLittleEndian, msg_id=3)
    finally:
        exchange.close()
        ae.shutdown()
    assert first == StoreStatus(0)
    assert second is not None and second.status is None  # no response: the sub-operation failed
    assert third == StoreStatus(None, "the connection is closed")  # nothing sent after the abort
    assert files[2][1] not in [r.AffectedSOPInstanceUID for r in answering.received]
    for _ in range(500):  # the A-ABORT went to pynetdicom, which ends the association
        if not assoc.is_established:
            break
        time.sleep(0.01)
    assert not assoc.is_established
