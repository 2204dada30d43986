"""C-FIND SCP: Patient Root and Study Root Query/Retrieve – FIND. Thin: `pacs.services.dimse_query`
parses the identifier and runs the query; this turns its results into C-FIND responses."""

from __future__ import annotations

import logging
import ssl
import struct
import time
from collections.abc import Iterator
from typing import Any

from pacs.dicom.part10 import check_complete
from pacs.dimse.direct import command_set, implicit, pdus, uid_value
from pacs.errors import InvalidDataset
from pacs.services.dimse_query import FindFailure, FindService, Model, parse_identifier
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from gateway.context import GatewayContext
from gateway.status import QUERY_SYNTAXES, UNABLE_TO_PROCESS

log = logging.getLogger("gateway")

SUCCESS = 0x0000
PENDING = 0xFF00
#: Pending, but some optional keys were not supported (ignored for matching).
PENDING_WARNING = 0xFF01
CANCEL = 0xFE00
#: Unable to process: an unexpected error while querying.
QUERY_FAILED = 0xC001

#: Transfer syntaxes whose identifiers `FindService.find_encoded` writes itself.
_DIRECT_SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian})
#: Every this many responses the handler lets the peer's PDUs be read (`_let_peer_speak`).
DRAIN_EVERY = 16
DRAIN_TIMEOUT = 5.0

MODELS = {
    PatientRootQueryRetrieveInformationModelFind: Model.PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelFind: Model.STUDY_ROOT,
}


def add_contexts(ae: AE) -> None:
    # pynetdicom pretty-prints every request and response identifier for its debug log (whatever the
    # log level): a third of a C-FIND's time. Process-wide settings, as `make_ae`'s.
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    for uid in MODELS:
        ae.add_supported_context(uid, QUERY_SYNTAXES)


def check_identifier(encoded: Any, transfer_syntax: str) -> None:
    """FindFailure (0xC000, with the reason) when the identifier's encoding does not add up: an element
    whose length runs past the end (pydicom would read it cut short, and the query be answered as if it
    were whole), or sequences nested too deep to decode (`pacs.dicom.part10.check_complete`)."""
    if transfer_syntax == DeflatedExplicitVRLittleEndian or encoded is None:
        return  # inflated and read by pydicom, which fails on a cut stream
    data = encoded.getvalue() if hasattr(encoded, "getvalue") else bytes(encoded)
    try:
        check_complete(memoryview(data), 0, transfer_syntax)
    except InvalidDataset as exc:
        raise FindFailure(UNABLE_TO_PROCESS, f"identifier: {exc.reason}") from None
    except struct.error:
        raise FindFailure(UNABLE_TO_PROCESS, "identifier: truncated") from None


def _failure(code: int, comment: str, offending: int | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    if offending is not None:
        ds.OffendingElement = [offending]
    return ds


def _let_peer_speak(assoc: Any) -> None:
    """Wait until what was answered so far has gone out and the PDUs the peer sent meanwhile (a
    C-CANCEL) have been read: pynetdicom's DUL reads only when it has nothing left to send, so a
    handler that outruns the network would never see a cancel."""
    dul = assoc.dul
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline and assoc.is_established:
        if not dul.to_provider_queue.qsize() and dul.event_queue.empty() and not dul.socket.ready:
            return
        time.sleep(0.0005)


def pending_command(sop_class: str, msg_id: int, status: int, *, identifier: bool = True) -> bytes:
    """The command set of a C-FIND-RSP (PS3.7 9.3.2.2), with or without an identifier, Implicit VR
    Little Endian, as pynetdicom encodes it."""
    return command_set([
        implicit(0x00000002, "", uid_value(sop_class)),  # Affected SOP Class UID
        implicit(0x00000100, "<H", 0x8020),  # Command Field: C-FIND-RSP
        implicit(0x00000120, "<H", msg_id),  # Message ID Being Responded To
        implicit(0x00000800, "<H", 0x0001 if identifier else 0x0101),  # Command Data Set Type
        implicit(0x00000900, "<H", status),
    ])


def _skip_final_success(assoc: Any, msg_id: int) -> None:
    """The direct path writes its final Success with the last matches; pynetdicom sends one more after
    the handler: the association's next DIMSE message, if it is that, is dropped (once)."""
    dimse = assoc.dimse
    send = dimse.send_msg

    def send_msg(primitive: Any, context_id: int) -> None:
        del dimse.send_msg  # one shot: the provider's own method again
        if not (isinstance(primitive, C_FIND) and primitive.MessageIDBeingRespondedTo == msg_id
                and primitive.Status == SUCCESS and primitive.Identifier is None):
            send(primitive, context_id)

    dimse.send_msg = send_msg


class _DirectWriter:
    """Pending C-FIND responses written straight to the association's socket as P-DATA-TF PDUs (PS3.8
    9.3.5): the command set encoded once per query, the identifiers by
    `FindService.find_encoded`, several responses per write. pynetdicom's own path costs a pydicom
    encoding of each identifier and of each command set, and a hand-over to its DUL thread per PDU:
    most of a C-FIND's time. Used only while nothing else is being sent on the association (the
    handler runs on the association's thread, which alone queues outgoing DIMSE messages), outside
    TLS, for Little Endian transfer syntaxes. The final Success goes in the last write too (and
    pynetdicom's own is dropped: `_skip_final_success`); Cancel and failures go through pynetdicom."""

    def __init__(self, sock: Any, context_id: int, command: bytes, final: bytes, max_pdu: int,
                 implicit: bool) -> None:
        self.sock = sock
        self.context_id = context_id
        self.implicit = implicit
        self.max_pdu = max_pdu
        self.command = self._pdvs(command, 0x01)
        self.final = self._pdvs(final, 0x01)
        self.pending: list[bytes] = []

    @classmethod
    def open(cls, event: Event, status: int) -> _DirectWriter | None:
        assoc = event.assoc
        sock = getattr(assoc.dul, "socket", None)
        raw = getattr(sock, "socket", None)
        ts = str(event.context.transfer_syntax)
        if raw is None or isinstance(raw, ssl.SSLSocket) or ts not in _DIRECT_SYNTAXES:
            return None
        request = event.request
        sop_class, msg_id = str(request.AffectedSOPClassUID), int(request.MessageID or 0)
        command = pending_command(sop_class, msg_id, status)
        final = pending_command(sop_class, msg_id, SUCCESS, identifier=False)
        _let_peer_speak(assoc)  # whatever pynetdicom still had queued goes out first
        return cls(sock, event.context.context_id, command, final, assoc.dimse.maximum_pdu_size or 0,
                   ts == ImplicitVRLittleEndian)

    def _pdvs(self, data: bytes, command_bit: int) -> bytes:
        """`data` as PDUs of one PDV each, fragmented to the peer's maximum PDU length."""
        return b"".join(pdus(data, self.context_id, bool(command_bit), self.max_pdu))

    def add(self, identifier: bytes) -> None:
        self.pending.append(self.command)
        self.pending.append(self._pdvs(identifier, 0x00))

    def flush(self) -> None:
        if self.pending:
            data, self.pending = b"".join(self.pending), []
            self.sock.send(data)


def _find_direct(event: Event, service: FindService, req: Any, writer: _DirectWriter,
                 caller: str) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """The matches through `writer`: the first at once, then DRAIN_EVERY per write; a C-CANCEL is
    honoured before the next match (what was built and not sent is dropped)."""
    try:
        for n, identifier in enumerate(service.find_encoded(req, implicit=writer.implicit)):
            if event.is_cancelled:
                writer.pending.clear()  # built, not sent: the peer asked for no more
                yield CANCEL, None
                return
            writer.add(identifier)
            if n % DRAIN_EVERY == 0:  # the first match at once, then DRAIN_EVERY at a time
                writer.flush()
                _let_peer_speak(event.assoc)
    except Exception as exc:
        log.exception("C-FIND from %s failed", caller)
        writer.pending.clear()
        yield _failure(QUERY_FAILED, f"query failed: {type(exc).__name__}"), None
        return
    if event.is_cancelled:
        writer.pending.clear()
        yield CANCEL, None
        return
    writer.pending.append(writer.final)  # Success, in the same write as the last matches
    writer.flush()
    _skip_final_success(event.assoc, int(event.request.MessageID or 0))


def handle_find(event: Event, ctx: GatewayContext) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """Pending responses, one per match (0xFF01 when optional keys were ignored), then Success; Cancel
    once a C-CANCEL arrives; a failure with a reason for an identifier this SCP cannot process."""
    caller = event.assoc.requestor.ae_title
    if ctx.backend is None:
        yield _failure(UNABLE_TO_PROCESS, "C-FIND is not served by this gateway (no catalog)"), None
        return
    model = MODELS.get(str(event.request.AffectedSOPClassUID))
    if model is None:
        yield _failure(0x0122, "SOP class not supported"), None
        return
    try:
        check_identifier(getattr(event.request, "Identifier", None), str(event.context.transfer_syntax))
        req = parse_identifier(event.identifier, model)
    except FindFailure as exc:
        log.info("C-FIND from %s refused (0x%04X): %s", caller, exc.status, exc.comment)
        yield _failure(exc.status, exc.comment, exc.offending), None
        return
    except Exception as exc:
        log.info("C-FIND from %s: undecodable identifier: %s", caller, exc)
        yield _failure(UNABLE_TO_PROCESS, f"cannot decode the identifier: {type(exc).__name__}"), None
        return
    service = FindService(ctx.backend.catalog, ctx.settings.partition, ctx.settings.ae_title)
    status = PENDING_WARNING if req.unsupported else PENDING
    writer = _DirectWriter.open(event, status) if FindService.can_encode(req) else None
    if writer is not None:
        yield from _find_direct(event, service, req, writer, caller)
        return
    results: Iterator[Any] = service.find(req)
    try:
        for n, ds in enumerate(results):
            if n and n % DRAIN_EVERY == 0:
                _let_peer_speak(event.assoc)
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield status, ds
    except Exception as exc:
        log.exception("C-FIND from %s failed", caller)
        yield _failure(QUERY_FAILED, f"query failed: {type(exc).__name__}"), None
        return
    if event.is_cancelled:
        yield CANCEL, None
