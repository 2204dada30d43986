"""C-STORE written straight to the socket (`pacs.dimse.direct`): the same command set as pynetdicom's,
the stored data set byte for byte at the peer, fragmented to the peer's PDU size."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pacs.dimse.direct import (
    _fast_command,
    c_store_rq,
    c_store_success_rsp,
    dataset_offset,
    retrieve_pending_rsp,
    send_stored_file,
)
from pacs.dimse.reactor import EventAE
from pydicom import dcmread
from pydicom.data import get_testdata_file
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
