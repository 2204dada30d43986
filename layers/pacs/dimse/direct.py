"""DIMSE messages written straight to an association's socket as P-DATA-TF PDUs (PS3.8 9.3.5).

pynetdicom sends a message by building its command set through pydicom, then handing every PDU to its
DUL thread (a queue, a wake-up, the state machine, an event, an encode): for a 512 KiB instance to a
peer that takes 16 KiB PDUs, 33 hand-overs. Here the command set is encoded by hand (byte for byte
pynetdicom's: tested) and a stored file is framed into PDUs and written by the sending thread. Only
where nothing else writes to the socket meanwhile (the association's reactor is paused, or this is its
own thread) and never over TLS.

Two ways to send a stored file: `send_stored_file` writes it and lets the response come back through
pynetdicom (its DUL thread decodes it); `StoreExchange` (used by the C-MOVE loop in
`pacs.dimse.retrieve`) also reads the response itself from the socket it borrowed from the association's
DUL (`EventDUL.borrowed`), framing each file with `sendmsg` over slices of one reusable buffer and
reading the response's status with a small command-set walker (`command_elements`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from pydicom.dataset import Dataset

from pacs.dimse.reactor import recv_exactly

log = logging.getLogger("pacs.dimse")

#: Bytes gathered before one write to the socket.
WRITE_SIZE = 1 << 20
#: C-STORE-RQ (PS3.7 9.3.1.1).
C_STORE_RQ = 0x0001
_PDV_HEADER = struct.Struct(">BBIIBB")  # P-DATA-TF PDU header and one PDV item header


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
    head, tail = _c_store_rq_parts(sop_class, priority, originator_aet, originator_id)
    uid = uid_value(sop_uid)
    body_length = len(head) + 10 + 20 + 8 + len(uid) + len(tail)  # + Message ID, Priority and Type, UID
    return b"".join((
        _GROUP_LENGTH.pack(0, 0, 4, body_length), head,
        _US.pack(0, 0x0110, 2, msg_id),  # Message ID
        _US.pack(0, 0x0700, 2, priority) + _US.pack(0, 0x0800, 2, 0x0001),  # Priority; a data set follows
        _ELEMENT.pack(0, 0x1000, len(uid)), uid,  # Affected SOP Instance UID
        tail,
    ))


_GROUP_LENGTH = struct.Struct("<HHII")
_US = struct.Struct("<HHIH")
_ELEMENT = struct.Struct("<HHI")


@functools.lru_cache(maxsize=64)
def _c_store_rq_parts(
    sop_class: str, priority: int, originator_aet: str | None, originator_id: int | None,
) -> tuple[bytes, bytes]:
    """The elements of a C-STORE-RQ before its Message ID and after its SOP Instance UID."""
    head = implicit(0x00000002, "", uid_value(sop_class)) + implicit(0x00000100, "<H", C_STORE_RQ)
    tail = b""
    if originator_aet:
        ae = originator_aet.encode()
        tail += implicit(0x00001030, "", ae + b" " * (len(ae) & 1))  # Move Originator AE
    if originator_id is not None:
        tail += implicit(0x00001031, "<H", originator_id)  # Move Originator Message ID
    return head, tail


def pdv_pdu(context_id: int, control: int, fragment: bytes | memoryview) -> bytes:
    """A P-DATA-TF PDU holding one PDV item (header and fragment)."""
    n = len(fragment)
    return struct.pack(">BBIIBB", 0x04, 0, n + 6, n + 2, context_id, control) + bytes(fragment)


def pdus(data: bytes, context_id: int, command: bool, max_pdu: int) -> list[bytes]:
    """`data` as PDUs of one PDV each, fragmented to the peer's maximum PDU length (0: unlimited)."""
    n = len(data)
    if n and (not max_pdu or n <= max_pdu - 6):  # one PDU
        return [_PDV_HEADER.pack(0x04, 0, n + 6, n + 2, context_id, 0x03 if command else 0x02) + data]
    size = max_pdu - 6 if max_pdu else len(data) or 1  # PDV item header: length 4, context 1, control 1
    chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    bit = 0x01 if command else 0x00
    return [pdv_pdu(context_id, bit | (0x02 if n == len(chunks) - 1 else 0), c) for n, c in enumerate(chunks)]


def dataset_offset(fp: Any) -> int | None:
    """Where the data set starts in a Part 10 file (after preamble and file meta); None when its file
    meta has no group length first."""
    return dataset_start(fp.read(144))


def dataset_start(head: bytes | memoryview) -> int | None:
    """`dataset_offset` of a Part 10 object's first bytes (at least 144)."""
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


@contextlib.contextmanager
def reactor_paused(assoc: Any) -> Iterator[None]:
    """The association's reactor held at its checkpoint (unless this is its own thread), so that the
    caller takes the response off the DIMSE queue itself, as pynetdicom's send_c_store does."""
    own_thread = threading.current_thread() is assoc
    if not own_thread:
        pause(assoc)
    try:
        yield
    finally:
        if not own_thread:
            assoc._reactor_checkpoint.set()


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
        with reactor_paused(assoc):
            _write(sock, fp, size, context_id, command, max_pdu)
            _, rsp = assoc.dimse.get_msg(block=True)
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


#: Buffers given to one sendmsg() (the system's IOV_MAX is 1024).
IOV_BATCH = 512


def sendmsg_all(sock: Any, buffers: list[Any]) -> None:
    """Write the buffers (bytes, memoryviews) in order, gathered by sendmsg, resuming after a partial
    write (a socket with a timeout may write part of what it was given)."""
    i, n = 0, len(buffers)
    while i < n:
        batch = buffers[i:i + IOV_BATCH]
        sent = sock.sendmsg(batch)
        for buf in batch:
            size = len(buf)
            if sent < size:
                buffers[i] = memoryview(buf)[sent:]
                break
            sent -= size
            i += 1


def frame(data: memoryview, context_id: int, command: bytes, max_pdu: int) -> list[Any]:
    """A command set and its data set as P-DATA-TF PDUs of one PDV each, fragmented to the peer's maximum
    PDU length (0: unlimited): headers and slices of `data`, for `sendmsg_all` (nothing copied)."""
    buffers: list[Any] = pdus(command, context_id, True, max_pdu)
    size = len(data)
    fragment = max_pdu - 6 if max_pdu else max(size, 1)
    if not size:
        buffers.append(_PDV_HEADER.pack(0x04, 0, 6, 2, context_id, 0x02))
        return buffers
    full = _PDV_HEADER.pack(0x04, 0, fragment + 6, fragment + 2, context_id, 0x00)
    for start in range(0, size, fragment):
        end = start + fragment
        if end >= size:
            n = size - start
            buffers.append(_PDV_HEADER.pack(0x04, 0, n + 6, n + 2, context_id, 0x02))
        else:
            buffers.append(full)
        buffers.append(data[start:end])
    return buffers


def recv_pdu(sock: Any) -> bytes:
    """One PDU (header included) read from the socket, never more; fewer bytes than its header announces
    (or none) when the peer closed the connection first. TimeoutError as the socket's timeout says."""
    head = sock.recv(6)
    if len(head) < 6:
        head += recv_exactly(sock, 6 - len(head)) if head else b""
        if len(head) < 6:
            return head
    length = int(struct.unpack_from(">I", head, 2)[0])
    body = sock.recv(length)
    if len(body) < length and body:
        body += recv_exactly(sock, length - len(body))
    return head + body


def pdv_items(pdu: bytes) -> list[tuple[int, int, bytes]]:
    """(context ID, message control header, fragment) of each PDV item of a P-DATA-TF PDU; ValueError
    when the items do not fill the PDU exactly."""
    items: list[tuple[int, int, bytes]] = []
    i, n = 6, len(pdu)
    while i < n:
        if i + 6 > n:
            raise ValueError("truncated PDV item")
        length = int(struct.unpack_from(">I", pdu, i)[0])
        if length < 2 or i + 4 + length > n:
            raise ValueError("PDV item longer than its PDU")
        items.append((pdu[i + 4], pdu[i + 5], pdu[i + 6:i + 4 + length]))
        i += 4 + length
    return items


def command_elements(command: bytes) -> dict[int, bytes]:
    """The elements of a command set (Implicit VR Little Endian) by tag, their raw values; ValueError
    when they do not fill it exactly."""
    found: dict[int, bytes] = {}
    i, n = 0, len(command)
    while i < n:
        if i + 8 > n:
            raise ValueError("truncated command element")
        group, element, length = struct.unpack_from("<HHI", command, i)
        i += 8
        if i + length > n:
            raise ValueError("command element longer than its command set")
        found[(group << 16) | element] = command[i:i + length]
        i += length
    return found


class StoreStatus(NamedTuple):
    """A C-STORE-RSP's status (None: no response came, the association was lost or aborted) and its
    Error Comment / Offending Element, for the log."""

    status: int | None
    comment: str = ""


#: `StoreExchange.write`: the request was not sent (the caller sends it through pynetdicom).
NOT_SENT = StoreStatus(None, "not sent")
C_STORE_RSP = 0x8001
_STATUS, _OFFENDING, _COMMENT, _FIELD = 0x00000900, 0x00000901, 0x00000902, 0x00000100


def store_status(command: bytes) -> StoreStatus | None:
    """The status of a C-STORE-RSP command set; None when it is not one (or not readable)."""
    try:
        elements = command_elements(command)
    except ValueError:
        return None
    field, status = elements.get(_FIELD), elements.get(_STATUS)
    if field is None or len(field) != 2 or int.from_bytes(field, "little") != C_STORE_RSP \
            or status is None or len(status) != 2:
        return None
    notes = []
    if _COMMENT in elements:
        notes.append(elements[_COMMENT].rstrip(b" \0").decode("latin-1"))
    offending = elements.get(_OFFENDING, b"")
    if len(offending) >= 4:
        tags = struct.unpack(f"<{len(offending) // 4 * 2}H", offending[: len(offending) // 4 * 4])
        pairs = (f"({tags[k]:04X},{tags[k + 1]:04X})" for k in range(0, len(tags), 2))
        notes.append("offending " + ", ".join(pairs))
    return StoreStatus(int.from_bytes(status, "little"), "; ".join(notes))


class StoreExchange:
    """C-STOREs of stored objects over a requested association, exchanged on its socket by the calling
    thread: the socket is borrowed from the association's DUL (`EventDUL.borrowed`) for as long as
    instances go this way, each object framed with `sendmsg` over slices of one reusable buffer, its
    C-STORE-RSP read and its status parsed here. Plain TCP and event-driven associations only (`open`).

    `send` returns None when this path does not apply to an object (no context for its stored syntax,
    a file meta without group length, the socket could not be borrowed): the caller sends it through
    pynetdicom, after `give_back()`. Anything on the socket other than the awaited response goes back to
    pynetdicom: an A-ABORT or A-RELEASE-RQ (the sub-operation then has no response), a response in an
    unusual shape (pynetdicom decodes it and delivers it as usual). No response within the association's
    DIMSE timeout, or the connection lost: the association is aborted, as pynetdicom would."""

    def __init__(self, assoc: Any) -> None:
        self.assoc = assoc
        self.max_pdu = int(assoc.dimse.maximum_pdu_size or 0)
        self.timeout = assoc.dimse_timeout
        self._contexts = {
            (cx.abstract_syntax, cx.transfer_syntax[0]): int(cx.context_id)
            for cx in reversed(assoc.accepted_contexts) if cx.as_scu and cx.transfer_syntax
        }
        self._lease: Any = None
        self._sock: Any = None
        self._blocking_timeout: float | None = None
        self._buffer = bytearray()
        #: The connection is gone or going (lost, aborted, or the peer sent A-ABORT / A-RELEASE-RQ):
        #: nothing more is sent, whatever pynetdicom's state says yet.
        self.ended = False

    @classmethod
    def open(cls, assoc: Any) -> StoreExchange | None:
        if raw_socket(assoc) is None or not callable(getattr(assoc.dul, "borrowed", None)):
            return None
        return cls(assoc)

    def context_for(self, sop_class: str, transfer_syntax: str) -> int | None:
        return self._contexts.get((sop_class, transfer_syntax))

    def _socket(self) -> Any:
        """The borrowed socket; None when the connection is already closed."""
        if self._sock is None:
            lease = self.assoc.dul.borrowed()
            sock = lease.__enter__()  # TimeoutError when the DUL did not stop reading
            if sock is None:
                lease.__exit__(None, None, None)
                return None
            try:
                self._blocking_timeout = sock.gettimeout()
                sock.settimeout(self.timeout)  # a peer that stops reading or answering: a DIMSE timeout
            except OSError:  # closed meanwhile (pynetdicom handling the peer's A-ABORT)
                lease.__exit__(None, None, None)
                self.ended = True
                return None
            self._lease, self._sock = lease, sock
        return self._sock

    def give_back(self) -> None:
        """The socket back to the association's DUL (it reads again)."""
        if self._lease is not None:
            lease, sock, self._lease, self._sock = self._lease, self._sock, None, None
            with contextlib.suppress(OSError):
                sock.settimeout(self._blocking_timeout)
            lease.__exit__(None, None, None)

    def _load(self, source: Path | str | bytes) -> memoryview:
        if isinstance(source, bytes):
            return memoryview(source)
        with open(source, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if len(self._buffer) < size:
                self._buffer = bytearray(size)
            view = memoryview(self._buffer)[:size]
            done = 0
            while done < size:
                n = f.readinto(view[done:])
                if not n:
                    raise OSError(f"{source}: shorter than its size")
                done += n
        return view

    def send(
        self, source: Path | str | bytes, sop_class: str, sop_uid: str, transfer_syntax: str, *, msg_id: int,
        priority: int = 2, originator_aet: str | None = None, originator_id: int | None = None,
    ) -> StoreStatus | None:
        """C-STORE a Part 10 object (a file, or its bytes) as stored; its status, or None when this path
        does not apply. OSError when the file cannot be read (nothing was sent)."""
        frames = self.frames(source, sop_class, sop_uid, transfer_syntax, msg_id=msg_id, priority=priority,
                             originator_aet=originator_aet, originator_id=originator_id)
        if frames is None:
            return None
        outcome = self.write(frames)
        if outcome is NOT_SENT:
            return None
        return outcome if outcome is not None else self.read()

    def frames(
        self, source: Path | str | bytes, sop_class: str, sop_uid: str, transfer_syntax: str, *, msg_id: int,
        priority: int = 2, originator_aet: str | None = None, originator_id: int | None = None,
    ) -> list[Any] | None:
        """The C-STORE-RQ of a Part 10 object (a file, read into this exchange's buffer: valid until the
        next call; or its bytes) as PDUs for `write`; None when this path does not apply (no context for
        its stored syntax, a file meta without group length). OSError when the file cannot be read."""
        context_id = self.context_for(sop_class, transfer_syntax)
        if context_id is None:
            return None
        data = self._load(source)
        start = dataset_start(data[:144])
        if start is None:
            return None
        command = c_store_rq(sop_class, sop_uid, msg_id, priority, originator_aet, originator_id)
        return frame(data[start:], context_id, command, self.max_pdu)

    def write(self, frames: list[Any]) -> StoreStatus | None:
        """Send a request framed by `frames`: None when it went (its response is for `read`); else the
        outcome of a sub-operation that has no response (the connection lost: the association aborted),
        or NOT_SENT (the socket could not be borrowed: pynetdicom's to send)."""
        if self.ended:
            return StoreStatus(None, "the connection is closed")
        try:
            sock = self._socket()
        except TimeoutError:
            return NOT_SENT
        if sock is None:
            return StoreStatus(None, "the connection is closed")
        try:
            sendmsg_all(sock, frames)
        except TimeoutError:
            return self._lost("the peer took nothing within the DIMSE timeout")
        except OSError as exc:
            return self._lost(f"connection lost: {exc}")
        return None

    def read(self) -> StoreStatus:
        """The response to the request `write` sent."""
        sock = self._sock
        if sock is None:
            return StoreStatus(None, "the connection is closed")
        try:
            return self._response(sock)
        except TimeoutError:
            return self._lost("no C-STORE response within the DIMSE timeout")
        except OSError as exc:
            return self._lost(f"connection lost: {exc}")

    def _lost(self, why: str) -> StoreStatus:
        log.error("C-STORE to %s: %s", self.assoc.acceptor.ae_title, why)
        self.ended = True
        self.give_back()
        self.assoc.abort()
        return StoreStatus(None, why)

    def _response(self, sock: Any) -> StoreStatus:
        """Read the C-STORE-RSP: the command set's fragments, PDU after PDU, up to the last one."""
        read: list[bytes] = []
        fragments: list[bytes] = []
        while True:
            pdu = recv_pdu(sock)
            if len(pdu) < 6 or len(pdu) < 6 + int(struct.unpack_from(">I", pdu, 2)[0]):
                return self._lost("connection closed by the peer")
            read.append(pdu)
            if pdu[0] != 0x04:  # an A-ABORT, A-RELEASE-RQ...: pynetdicom's to handle
                return self._hand_over(read, wait=False)
            try:
                items = pdv_items(pdu)
            except ValueError:
                return self._hand_over(read, wait=False)  # pynetdicom finds it invalid too, and aborts
            for n, (_, control, fragment) in enumerate(items):
                if not control & 0x01 or (control & 0x02 and n != len(items) - 1):
                    return self._hand_over(read, wait=True)  # a data set, or more after the command
                fragments.append(fragment)
                if control & 0x02:
                    status = store_status(b"".join(fragments))
                    return status if status is not None else self._hand_over(read, wait=True)

    def _hand_over(self, read: list[bytes], *, wait: bool) -> StoreStatus:
        """What was read goes to pynetdicom (the DUL still lent, so in order), the socket back to the DUL;
        with `wait`, the response is then awaited as pynetdicom delivers it."""
        for pdu in read:
            self.assoc.dul.feed(pdu)
        self.give_back()
        if not wait:  # an A-ABORT or A-RELEASE-RQ: the association is ending
            self.ended = True
            return StoreStatus(None, f"PDU type 0x{read[-1][0]:02X} instead of a C-STORE response")
        return _await_response(self.assoc)

    def close(self) -> None:
        self.give_back()


def _await_response(assoc: Any) -> StoreStatus:
    """The next DIMSE message pynetdicom delivers on the association, as a C-STORE status (its reactor
    paused meanwhile, as pynetdicom's send_c_store does)."""
    with reactor_paused(assoc):
        _, rsp = assoc.dimse.get_msg(block=True)
    if rsp is None:
        assoc._handle_no_response()
        return StoreStatus(None, "no response")
    status = assoc._check_received_status(rsp)
    notes = [str(status.ErrorComment)] if "ErrorComment" in status else []
    return StoreStatus(int(status.Status) if "Status" in status else None, "; ".join(notes))


class PendingResponder:
    """The Pending responses of one C-MOVE / C-GET (remaining, completed, failed, warning counts), written
    straight to the requestor's socket from the association's own thread, where the handler runs and
    which alone queues its DIMSE messages: nothing else writes to the socket meanwhile (the DUL only
    sends what is queued). The command set is encoded once; only the counts change. Over TLS, or when a
    response would not fit one PDU, each goes through pynetdicom (`fast_responses` encodes it)."""

    _COUNTS = struct.Struct("<HHIHHHIHHHIHHHIH")

    def __init__(self, assoc: Any, context_id: int, command_field: int, sop_class: str, msg_id: int) -> None:
        self.assoc = assoc
        self.context_id = context_id
        self.command_field = command_field
        self.sop_class = sop_class
        self.msg_id = msg_id
        self.sock = raw_socket(assoc)
        command = retrieve_pending_rsp(command_field, sop_class, msg_id, 0, 0, 0, 0)
        max_pdu = int(assoc.dimse.maximum_pdu_size or 0)
        if max_pdu and len(command) > max_pdu - 6:
            self.sock = None
        self.head = pdv_pdu(context_id, 0x03, command)[:-self._COUNTS.size]
        if self.sock is not None:
            _quiet(assoc)

    def pending(self, remaining: int, completed: int, failed: int, warning: int) -> None:
        if self.sock is None:
            self._via_pynetdicom(remaining, completed, failed, warning)
            return
        try:
            self.sock.sendall(self.head + self._COUNTS.pack(0, 0x1020, 2, remaining, 0, 0x1021, 2, completed,
                                                            0, 0x1022, 2, failed, 0, 0x1023, 2, warning))
        except OSError as exc:  # the requestor is gone: its DUL sees it too, the loop stops on it
            log.info("Pending response not sent: %s", exc)
            self.sock = None

    def _via_pynetdicom(self, remaining: int, completed: int, failed: int, warning: int) -> None:
        from pynetdicom.dimse_primitives import C_GET, C_MOVE

        rsp = C_MOVE() if self.command_field == _RSP_FIELDS["C_MOVE"] else C_GET()
        rsp.MessageIDBeingRespondedTo = self.msg_id
        rsp.AffectedSOPClassUID = self.sop_class
        rsp.Status = PENDING
        rsp.NumberOfRemainingSuboperations = remaining
        rsp.NumberOfCompletedSuboperations = completed
        rsp.NumberOfFailedSuboperations = failed
        rsp.NumberOfWarningSuboperations = warning
        self.assoc.dimse.send_msg(rsp, self.context_id)


#: How long `_quiet` waits for an association's DUL to send what was queued for it.
QUIET_TIMEOUT = 5.0


def _quiet(assoc: Any) -> None:
    """Until the association's DUL has nothing queued to send (nor a state-machine event to act on)."""
    dul = assoc.dul
    deadline = time.monotonic() + QUIET_TIMEOUT
    while (not dul.to_provider_queue.empty() or not dul.event_queue.empty()) and time.monotonic() < deadline \
            and assoc.is_established:
        time.sleep(0.0005)


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

    from pacs.monitoring.dimse import response_sent

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
        response_sent(assoc, int(primitive.MessageIDBeingRespondedTo), int(primitive.Status))

    dimse.send_msg = send_msg
    dimse._fast_responses = True
