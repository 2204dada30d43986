"""DIMSE messages written straight to an association's socket as P-DATA-TF PDUs (PS3.8 9.3.5).

pynetdicom sends a message by building its command set through pydicom, then handing every PDU to its
DUL thread (a queue, a wake-up, the state machine, an event, an encode): for a 512 KiB instance to a
peer that takes 16 KiB PDUs, 33 hand-overs. Here the command set is encoded by hand (byte for byte
pynetdicom's: tested) and a stored file is framed into PDUs and written by the sending thread, in
writes of about 1 MiB. The response still comes back through pynetdicom. Only where nothing else
writes to the socket meanwhile (the association's reactor is paused, or this is its own thread) and
never over TLS.
"""

from __future__ import annotations

import os
import ssl
import struct
import threading
import time
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

#: Bytes gathered before one write to the socket.
WRITE_SIZE = 1 << 20
#: C-STORE-RQ (PS3.7 9.3.1.1).
C_STORE_RQ = 0x0001


def implicit(tag: int, fmt: str, value: bytes | int) -> bytes:
    """One element of a command set (Implicit VR Little Endian)."""
    data = value if isinstance(value, bytes) else struct.pack(fmt, value)
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(data)) + data


def uid_value(uid: str) -> bytes:
    raw = uid.encode()
    return raw + b"\0" * (len(raw) & 1)


def command_set(elements: list[bytes]) -> bytes:
    """The elements (in tag order) behind their (0000,0000) Command Group Length."""
    body = b"".join(elements)
    return implicit(0x00000000, "<I", len(body)) + body


def c_store_rq(
    sop_class: str, sop_uid: str, msg_id: int, priority: int = 2,
    originator_aet: str | None = None, originator_id: int | None = None,
) -> bytes:
    """The command set of a C-STORE-RQ with a data set, as pynetdicom encodes it."""
    elements = [
        implicit(0x00000002, "", uid_value(sop_class)),  # Affected SOP Class UID
        implicit(0x00000100, "<H", C_STORE_RQ),  # Command Field
        implicit(0x00000110, "<H", msg_id),  # Message ID
        implicit(0x00000700, "<H", priority),  # Priority
        implicit(0x00000800, "<H", 0x0001),  # Command Data Set Type: a data set follows
        implicit(0x00001000, "", uid_value(sop_uid)),  # Affected SOP Instance UID
    ]
    if originator_aet:
        ae = originator_aet.encode()
        elements.append(implicit(0x00001030, "", ae + b" " * (len(ae) & 1)))  # Move Originator AE
    if originator_id is not None:
        elements.append(implicit(0x00001031, "<H", originator_id))  # Move Originator Message ID
    return command_set(elements)


def pdv_pdu(context_id: int, control: int, fragment: bytes | memoryview) -> bytes:
    """A P-DATA-TF PDU holding one PDV item (header and fragment)."""
    n = len(fragment)
    return struct.pack(">BBIIBB", 0x04, 0, n + 6, n + 2, context_id, control) + bytes(fragment)


def pdus(data: bytes, context_id: int, command: bool, max_pdu: int) -> list[bytes]:
    """`data` as PDUs of one PDV each, fragmented to the peer's maximum PDU length (0: unlimited)."""
    size = max_pdu - 6 if max_pdu else len(data) or 1  # PDV item header: length 4, context 1, control 1
    chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    bit = 0x01 if command else 0x00
    return [pdv_pdu(context_id, bit | (0x02 if n == len(chunks) - 1 else 0), c) for n, c in enumerate(chunks)]


def dataset_offset(fp: Any) -> int | None:
    """Where the data set starts in a Part 10 file (after preamble and file meta); None when its file
    meta has no group length first."""
    head = fp.read(144)
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
        return None
    return 144 + int(struct.unpack_from("<I", head, 140)[0])


def raw_socket(assoc: Any) -> Any:
    """The association's plain TCP socket, or None (closed, or TLS)."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    return None if sock is None or isinstance(sock, ssl.SSLSocket) else sock


def context_for(assoc: Any, sop_class: str, transfer_syntax: str) -> int | None:
    """The accepted context in which this PACS may send `sop_class` in `transfer_syntax`."""
    for cx in assoc.accepted_contexts:
        if cx.abstract_syntax == sop_class and cx.transfer_syntax[0] == transfer_syntax and cx.as_scu:
            return int(cx.context_id)
    return None


def pause(assoc: Any) -> None:
    """Stop the association's reactor at its checkpoint (it must not take the response awaited here):
    waiting on an EventAssociation's `paused` event, else polling as pynetdicom does."""
    assoc._reactor_checkpoint.clear()
    paused = getattr(assoc, "paused", None)
    while not assoc._is_paused:
        if paused is not None:
            paused.wait(0.01)
        else:
            time.sleep(0.0001)


def send_stored_file(
    assoc: Any, path: Path, sop_class: str, sop_uid: str, transfer_syntax: str, *,
    msg_id: int = 1, priority: int = 2, originator_aet: str | None = None, originator_id: int | None = None,
) -> Dataset | None:
    """C-STORE a Part 10 file as stored and return the response status (pynetdicom's shape: an empty
    Dataset when no response came, the association then aborted); None when this path does not apply
    (TLS, no matching context, an unusual file meta): the caller sends through pynetdicom."""
    sock = raw_socket(assoc)
    context_id = context_for(assoc, sop_class, transfer_syntax)
    if sock is None or context_id is None:
        return None
    with open(path, "rb") as fp:
        start = dataset_offset(fp)
        if start is None:
            return None
        size = os.fstat(fp.fileno()).st_size - start
        fp.seek(start)
        max_pdu = int(assoc.dimse.maximum_pdu_size or 0)
        command = c_store_rq(sop_class, sop_uid, msg_id, priority, originator_aet, originator_id)
        own_thread = threading.current_thread() is assoc
        if not own_thread:  # pause the reactor, as pynetdicom's send_c_store does
            pause(assoc)
        try:
            _write(sock, fp, size, context_id, command, max_pdu)
            _, rsp = assoc.dimse.get_msg(block=True)
        finally:
            if not own_thread:
                assoc._reactor_checkpoint.set()
    if rsp is None:
        assoc._handle_no_response()
        return Dataset()
    return assoc._check_received_status(rsp)  # type: ignore[no-any-return]


def _write(sock: Any, fp: Any, size: int, context_id: int, command: bytes, max_pdu: int) -> None:
    batch = pdus(command, context_id, True, max_pdu)
    fragment = max_pdu - 6 if max_pdu else max(size, 1)
    pending = sum(map(len, batch))
    left = size
    while True:
        piece = fp.read(min(fragment, left)) if left else b""
        left -= len(piece)
        if left and len(piece) < fragment:
            raise OSError("the stored file is shorter than its size")
        batch.append(pdv_pdu(context_id, 0x02 if not left else 0x00, piece))
        pending += len(piece) + 12
        if not left or pending >= WRITE_SIZE:
            sock.sendall(b"".join(batch))
            batch, pending = [], 0
        if not left:
            return


#: Command Field of the retrieve responses sent here: C-GET-RSP, C-MOVE-RSP.
_RSP_FIELDS = {"C_GET": 0x8010, "C_MOVE": 0x8021}
PENDING = 0xFF00


def retrieve_pending_rsp(
    command_field: int, sop_class: str, msg_id: int,
    remaining: int, completed: int, failed: int, warning: int,
) -> bytes:
    """The command set of a Pending C-MOVE-RSP / C-GET-RSP without identifier, as pynetdicom encodes it."""
    return command_set([
        implicit(0x00000002, "", uid_value(sop_class)),  # Affected SOP Class UID
        implicit(0x00000100, "<H", command_field),
        implicit(0x00000120, "<H", msg_id),  # Message ID Being Responded To
        implicit(0x00000800, "<H", 0x0101),  # Command Data Set Type: none
        implicit(0x00000900, "<H", PENDING),
        implicit(0x00001020, "<H", remaining),
        implicit(0x00001021, "<H", completed),
        implicit(0x00001022, "<H", failed),
        implicit(0x00001023, "<H", warning),
    ])


def c_store_success_rsp(sop_class: str, sop_uid: str, msg_id: int) -> bytes:
    """The command set of a C-STORE-RSP with Success and nothing more, as pynetdicom encodes it."""
    return command_set([
        implicit(0x00000002, "", uid_value(sop_class)),  # Affected SOP Class UID
        implicit(0x00000100, "<H", 0x8001),  # Command Field: C-STORE-RSP
        implicit(0x00000120, "<H", msg_id),  # Message ID Being Responded To
        implicit(0x00000800, "<H", 0x0101),  # Command Data Set Type: none
        implicit(0x00000900, "<H", 0x0000),  # Status: Success
        implicit(0x00001000, "", uid_value(sop_uid)),  # Affected SOP Instance UID
    ])


def _fast_command(primitive: Any) -> bytes | None:
    """The hand-encoded command set of the responses sent once per instance, else None."""
    name = type(primitive).__name__
    msg_id = primitive.MessageIDBeingRespondedTo
    if msg_id is None:
        return None
    if name == "C_STORE":
        if primitive.Status != 0x0000 or getattr(primitive, "ErrorComment", None) is not None \
                or getattr(primitive, "OffendingElement", None):
            return None
        return c_store_success_rsp(str(primitive.AffectedSOPClassUID), str(primitive.AffectedSOPInstanceUID),
                                   int(msg_id))
    field = _RSP_FIELDS.get(name)
    if field is None or primitive.Status != PENDING or primitive.Identifier is not None:
        return None
    return retrieve_pending_rsp(
        field, str(primitive.AffectedSOPClassUID), int(msg_id),
        *(int(getattr(primitive, f"Number{n}Suboperations") or 0)
          for n in ("OfRemaining", "OfCompleted", "OfFailed", "OfWarning")),
    )


def fast_responses(assoc: Any) -> None:
    """Send the responses an association sends once per instance — C-STORE Success, Pending C-MOVE/C-GET —
    from a hand-encoded command set: one P-DATA primitive to the DUL, no pydicom encoding. Every other
    message goes through pynetdicom as before."""
    from pynetdicom.pdu_primitives import P_DATA

    dimse = assoc.dimse
    if getattr(dimse, "_fast_responses", False):
        return
    send = dimse.send_msg

    def send_msg(primitive: Any, context_id: int) -> None:
        command = _fast_command(primitive)
        max_pdu = int(dimse.maximum_pdu_size or 0)
        if command is None or (max_pdu and len(command) > max_pdu - 6):
            send(primitive, context_id)
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
        assoc.dul.send_pdu(pdata)

    dimse.send_msg = send_msg
    dimse._fast_responses = True
