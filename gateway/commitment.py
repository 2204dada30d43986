"""Storage Commitment Push Model SCP: N-ACTION in, N-EVENT-REPORT out (PS3.4 J.3).

The N-ACTION is answered at once (success once the request is recorded); a reply thread (a small
pool) then evaluates it (`pacs.services.commitment`, with its bounded wait for the indexer) and, once
the N-ACTION response has left, sends the N-EVENT-REPORT
(Event Type 1: all committed, 2: failures exist) on the same association when it is still open,
otherwise on a new association to the requester's node in the registry, where this gateway asks for
the SCP role of the Storage Commitment context (SCP/SCU role selection: the requester accepts it to
receive the report). With no node registered for the calling AE title the result stays recorded
(`pacs commitment list`) and the reason is logged.
"""

from __future__ import annotations

import itertools
import logging
import queue
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import Any, cast

from pacs.catalog.nodes import RemoteNode
from pacs.dimse.reactor import EventAE
from pacs.services.commitment import (
    NEW_ASSOCIATION,
    REQUEST_STORAGE_COMMITMENT,
    SAME_ASSOCIATION,
    STORAGE_COMMITMENT_SOP_CLASS,
    STORAGE_COMMITMENT_SOP_INSTANCE,
    UNDELIVERED,
    CommitmentRecord,
    CommitmentService,
    InvalidRequest,
    parse_request,
)
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import N_ACTION_RSP
from pynetdicom.dimse_primitives import N_ACTION, N_EVENT_REPORT
from pynetdicom.dsutils import encode
from pynetdicom.events import Event
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT, A_RELEASE

from gateway.context import GatewayContext

log = logging.getLogger("gateway")

SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"]
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
INVALID_ARGUMENT_VALUE = 0x0115
INVALID_OBJECT_INSTANCE = 0x0117
NO_SUCH_SOP_CLASS = 0x0118
NO_SUCH_ACTION = 0x0123
#: How long the reply waits for the N-ACTION response to be sent before giving up on the association.
RESPONSE_WAIT = 30.0
#: How long an N-EVENT-REPORT on the same association may wait for its answer.
REPLY_WAIT = 30.0
_MESSAGE_IDS = itertools.cycle(range(0x8000, 0x10000))  # apart from the low IDs requesters use
#: Evaluations and replies run here, off the association's thread: a few long-lived threads (their
#: catalog connections are reused), each request waiting at most its bounded wait plus a send.
_REPLIES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="commitment")


def add_contexts(ae: AE) -> None:
    """The Storage Commitment context, accepting the requester's SCP/SCU role proposal (a requester
    that asks for the SCP role as well may receive the report on the same association)."""
    ae.add_supported_context(STORAGE_COMMITMENT_SOP_CLASS, SYNTAXES, scu_role=True, scp_role=True)


def _failure(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


def event_information(record: CommitmentRecord, ae_title: str) -> Dataset:
    """The N-EVENT-REPORT Event Information (PS3.4 Table J.3-2)."""
    ds = Dataset()
    ds.TransactionUID = record.transaction_uid
    if record.committed:
        ds.RetrieveAETitle = ae_title
        ds.ReferencedSOPSequence = []
        for ref in record.committed:
            item = Dataset()
            item.ReferencedSOPClassUID = ref.sop_class_uid
            item.ReferencedSOPInstanceUID = ref.sop_instance_uid
            ds.ReferencedSOPSequence.append(item)
    if record.failed:
        ds.FailedSOPSequence = []
        for fail in record.failed:
            item = Dataset()
            item.ReferencedSOPClassUID = fail.sop_class_uid
            item.ReferencedSOPInstanceUID = fail.sop_instance_uid
            item.FailureReason = fail.reason
            ds.FailedSOPSequence.append(item)
    return ds


def handle_n_action(event: Event, ctx: GatewayContext) -> tuple[int | Dataset, Dataset | None]:
    req = cast(N_ACTION, event.request)
    if req.RequestedSOPClassUID != STORAGE_COMMITMENT_SOP_CLASS:
        return _failure(NO_SUCH_SOP_CLASS, f"N-ACTION of {req.RequestedSOPClassUID} is not served"), None
    if req.ActionTypeID != REQUEST_STORAGE_COMMITMENT:
        return _failure(NO_SUCH_ACTION, f"no action type {req.ActionTypeID}"), None
    if req.RequestedSOPInstanceUID != STORAGE_COMMITMENT_SOP_INSTANCE:
        well_known = STORAGE_COMMITMENT_SOP_INSTANCE
        return _failure(INVALID_OBJECT_INSTANCE, f"use the well-known instance {well_known}"), None
    backend = ctx.backend
    if backend is None or backend.commitments is None:
        return _failure(PROCESSING_FAILURE, "storage commitment is not configured on this gateway"), None
    requester = event.assoc.requestor.ae_title
    try:
        info = event.action_information
        items = [(i.get("ReferencedSOPClassUID"), i.get("ReferencedSOPInstanceUID"))
                 for i in info.get("ReferencedSOPSequence", None) or []]
        transaction_uid, refs = parse_request(info.get("TransactionUID"), items)
    except InvalidRequest as exc:
        log.warning("storage commitment from %s refused: %s", requester, exc)
        return _failure(INVALID_ARGUMENT_VALUE, str(exc)), None
    except Exception as exc:
        log.warning("storage commitment from %s: cannot read the action information: %s", requester, exc)
        return _failure(INVALID_ARGUMENT_VALUE, f"cannot read the action information: {exc}"), None
    service = CommitmentService(backend.catalog, backend.store, backend.commitments, ctx.settings.partition)
    try:
        record = service.accept(transaction_uid, requester, refs)
    except Exception as exc:
        log.exception("storage commitment %s from %s not recorded", transaction_uid, requester)
        return _failure(PROCESSING_FAILURE, f"internal error: {type(exc).__name__}"), None
    sent = ResponseSent(event.assoc)
    _REPLIES.submit(Reply(ctx, service, event.assoc, record, sent.event).run)
    return SUCCESS, None


class ResponseSent:
    """Set once the N-ACTION response has left: the N-EVENT-REPORT must not overtake it. The reply
    thread starts inside the handler, before pynetdicom sends the response (EVT_DIMSE_SENT fires as
    it is encoded, on the association's thread; EVT_PDU_SENT when the DUL has written its P-DATA)."""

    def __init__(self, assoc: Association) -> None:
        self.event = threading.Event()
        self._encoded = False
        assoc.bind(evt.EVT_DIMSE_SENT, self._on_dimse)
        assoc.bind(evt.EVT_PDU_SENT, self._on_pdu)

    def _on_dimse(self, event: Event) -> None:
        if not self._encoded and isinstance(event.message, N_ACTION_RSP):
            self._encoded = True

    def _on_pdu(self, event: Event) -> None:
        if self._encoded and not self.event.is_set() and isinstance(event.pdu, P_DATA_TF):
            self.event.set()


class Reply:
    """Evaluates one request and delivers its N-EVENT-REPORT (same association, else a new one)."""

    def __init__(self, ctx: GatewayContext, service: CommitmentService, assoc: Association,
                 record: CommitmentRecord, response_sent: threading.Event) -> None:
        self.ctx, self.service, self.assoc, self.record = ctx, service, assoc, record
        self.response_sent = response_sent

    def run(self) -> None:
        record = self.record
        try:
            record = self.service.evaluate(record)
            report = event_information(record, self.ctx.settings.ae_title)
            if self._send_same(report, record.event_type):
                delivery, note = SAME_ASSOCIATION, ""
            else:
                delivery, note = self._send_new(report, record.event_type)
            record = self.service.delivered(record, delivery, note)
        except Exception as exc:
            log.exception("storage commitment %s: reply failed", record.transaction_uid)
            try:
                self.service.delivered(record, UNDELIVERED, f"reply failed: {type(exc).__name__}: {exc}")
            except Exception:
                log.exception("storage commitment %s: cannot record the failure", record.transaction_uid)
        log.info("storage commitment %s from %s: %d committed, %d failed, %s", record.transaction_uid,
                 record.requester, len(record.committed), len(record.failed), record.delivery)

    def _send_same(self, report: Dataset, event_type: int) -> bool:
        """Send on the requester's association while it is open; False when it is closing or closed,
        or did not answer before it started closing (a modality may release right after the
        N-ACTION response: the report then goes on a new association)."""
        assoc = self.assoc
        if not self.response_sent.wait(RESPONSE_WAIT):
            log.warning("storage commitment %s: the N-ACTION response was not seen leaving",
                        self.record.transaction_uid)
            return False
        if not _open(assoc):
            return False
        try:
            status = send_event_report(assoc, report, event_type)
        except Exception as exc:
            log.info("storage commitment %s: not sent on the same association: %s",
                     self.record.transaction_uid, exc)
            return False
        return _answered(status, self.record, "the same association")

    def _send_new(self, report: Dataset, event_type: int) -> tuple[str, str]:
        backend, requester = self.ctx.backend, self.record.requester
        nodes = backend.nodes if backend is not None else None
        node = nodes.get_node(requester) if nodes is not None else None
        if node is None:
            note = f"the association was closed and no node is registered for AE {requester!r}"
            log.warning("storage commitment %s: result kept, not sent: %s", self.record.transaction_uid, note)
            return UNDELIVERED, note
        assoc = self._associate(node)
        if assoc is None or not assoc.is_established:
            note = f"association to {node.ae_title} at {node.host}:{node.port} was not accepted"
            log.warning("storage commitment %s: %s", self.record.transaction_uid, note)
            return UNDELIVERED, note
        try:
            rsp, _ = assoc.send_n_event_report(report, event_type, STORAGE_COMMITMENT_SOP_CLASS,
                                               STORAGE_COMMITMENT_SOP_INSTANCE)
            status = getattr(rsp, "Status", None)
            delivered = _answered(None if status is None else int(status), self.record,
                                  f"a new association to {node.ae_title}")
        finally:
            if assoc.is_established:
                assoc.release()
        if not delivered:
            return UNDELIVERED, f"{node.ae_title} did not answer the N-EVENT-REPORT"
        return NEW_ASSOCIATION, f"sent to {node.ae_title} at {node.host}:{node.port}"

    def _associate(self, node: RemoteNode) -> Association | None:
        settings = self.ctx.settings
        ae = EventAE(ae_title=settings.ae_title)  # event-driven reactors, TCP_NODELAY, as every SCU here
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(STORAGE_COMMITMENT_SOP_CLASS, SYNTAXES)
        kwargs: dict[str, Any] = {"ae_title": node.ae_title,
                                  "ext_neg": [build_role(STORAGE_COMMITMENT_SOP_CLASS, scp_role=True)]}
        if node.tls:  # the node's certificate checked against PACS_TLS_CA (else the system's CAs)
            ca, cert, key = (getattr(settings, f"tls_{n}", "") or None for n in ("ca", "cert", "key"))
            tls = ssl.create_default_context(cafile=ca)
            tls.check_hostname = False  # nodes are known by AE title and address
            tls.minimum_version = ssl.TLSVersion.TLSv1_2
            if cert:
                tls.load_cert_chain(cert, key)
            kwargs["tls_args"] = (tls, None)
        try:
            return ae.associate(node.host, node.port, **kwargs)
        except Exception:
            log.exception("storage commitment: cannot associate with %s", node.ae_title)
            return None


def _open(assoc: Association) -> bool:
    """Established, and no A-RELEASE / A-ABORT waiting in the DUL (peeked: the association's reactor
    must still take it; pynetdicom's `acse.is_release_requested()` would consume it)."""
    if not assoc.is_established or assoc.is_released or assoc.is_aborted:
        return False
    return not isinstance(assoc.dul.peek_next_pdu(), A_RELEASE | A_ABORT | A_P_ABORT)


def send_event_report(assoc: Association, report: Dataset, event_type: int) -> int | None:
    """Send an N-EVENT-REPORT on an acceptor's association from another thread and wait for its
    answer; returns its status, or None when the association began closing (or `REPLY_WAIT` passed)
    first.

    `Association.send_n_event_report` waits for the answer for the whole DIMSE timeout, even when
    the peer has meanwhile asked to release (a requester ignores DIMSE messages while it releases),
    and its caller cannot stop it. This is the same exchange (pynetdicom 3.0.4's: pause the
    association's reactor, send, read the DIMSE queue, resume), watching the association while it
    waits. Messages that arrive meanwhile go back to the queue for the reactor."""
    context = next((cx for cx in assoc.accepted_contexts
                    if cx.abstract_syntax == STORAGE_COMMITMENT_SOP_CLASS), None)
    if context is None or context.context_id is None:
        return None
    syntax = context.transfer_syntax[0]
    data = encode(report, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    if data is None:
        raise ValueError("cannot encode the Event Information")
    req = N_EVENT_REPORT()
    req.MessageID = next(_MESSAGE_IDS)
    req.AffectedSOPClassUID = STORAGE_COMMITMENT_SOP_CLASS
    req.AffectedSOPInstanceUID = STORAGE_COMMITMENT_SOP_INSTANCE
    req.EventTypeID = event_type
    req.EventInformation = BytesIO(data)
    others: list[Any] = []
    assoc._reactor_checkpoint.clear()  # pynetdicom's pause, as its send_*() methods do
    try:
        deadline = time.monotonic() + REPLY_WAIT
        while not assoc._is_paused:
            if time.monotonic() > deadline or not _open(assoc):
                return None
            time.sleep(0.001)
        if not _open(assoc):
            return None
        assoc.dimse.send_msg(req, context.context_id)
        while time.monotonic() < deadline:
            try:
                cx_id, msg = assoc.dimse.msg_queue.get(timeout=0.05)
            except queue.Empty:
                if not _open(assoc):
                    return None
                continue
            if isinstance(msg, N_EVENT_REPORT) and msg.MessageIDBeingRespondedTo == req.MessageID:
                return int(msg.Status) if msg.Status is not None else None
            others.append((cx_id, msg))
        return None
    finally:
        for item in others:
            assoc.dimse.msg_queue.put(item)
        assoc._reactor_checkpoint.set()


def _answered(status: int | None, record: CommitmentRecord, where: str) -> bool:
    """True when the requester answered the N-EVENT-REPORT (any status: it has the report)."""
    code = status
    if code is None:
        log.info("storage commitment %s: no answer on %s", record.transaction_uid, where)
        return False
    if code != SUCCESS:
        log.warning("storage commitment %s: %s answered the N-EVENT-REPORT with 0x%04X",
                    record.transaction_uid, where, code)
    return True
