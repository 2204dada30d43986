"""C-STORE received and answered in the DUL thread, from the received PDUs (`EventDUL.pdata_hook`).

pynetdicom takes every P-DATA-TF PDU of a C-STORE through its PDU decoder (a copy), its state
machine, its DIMSE assembler (another copy, a write, a flush), decodes the command set with pydicom,
queues the message for the association thread, builds an Event and a response primitive, and sends
the response through the DUL thread again. Here the DUL thread that reads the PDUs writes the data
set's fragments straight into the spool file (the same file pynetdicom would write, file meta
included: `gateway.ae.file_meta_bytes`), and once the last one is in, stores it
(`gateway.handlers.store_spooled`: the same ingest, durable before the answer) and writes the
C-STORE-RSP (byte for byte pynetdicom's) to the socket.

Only the plain case: a C-STORE-RQ whose command set comes whole in one PDV, on an accepted context of
its SOP class, on a plain TCP association with nothing else in progress, from a caller allowed to
store, with spooling on. Anything else is left to pynetdicom (`gateway.handlers.handle_store` answers
it as before). Once its data set has begun, a request is this path's to the end: a PDV of another
message in between is a protocol error, and the association is aborted (as pynetdicom's reactor does
on any failure).
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import Any

from pacs.dimse.direct import c_store_success_rsp, command_set, implicit, pdv_pdu, uid_value
from pacs.dimse.pdu import (
    COMMAND_FIELD,
    DATA_SET_TYPE,
    MESSAGE_ID,
    NO_DATA_SET,
    SOP_CLASS,
    SOP_INSTANCE,
    command_fields,
    idle,
    pdv_items,
    uid,
    us,
)
from pacs.monitoring.metrics import dimse_operation

from gateway.ae import SpoolFile, file_meta_bytes
from gateway.context import GatewayContext
from gateway.handlers import store_spooled
from gateway.status import OUT_OF_RESOURCES

log = logging.getLogger("gateway")

C_STORE_RQ = 0x0001


class ProtocolError(Exception):
    """The peer broke the message's framing: the reactor aborts the association."""


def store_rsp(sop_class: str, sop_uid: str, msg_id: int, status: int, comment: str | None) -> bytes:
    """The command set of a C-STORE-RSP, as pynetdicom encodes it (Error Comment with a failure; a
    UID a peer could not decode is not echoed)."""
    if not status and comment is None:
        return c_store_success_rsp(sop_class, sop_uid, msg_id)
    elements = [
        *([implicit(0x00000002, "", uid_value(sop_class))] if _echoable(sop_class) else []),
        implicit(0x00000100, "<H", 0x8001),  # C-STORE-RSP
        implicit(0x00000120, "<H", msg_id),
        implicit(0x00000800, "<H", NO_DATA_SET),
        implicit(0x00000900, "<H", status),
    ]
    if comment is not None:
        text = comment[:64].encode("ascii", "replace")
        elements.append(implicit(0x00000902, "", text + b" " * (len(text) & 1)))  # Error Comment (LO)
    if _echoable(sop_uid):
        elements.append(implicit(0x00001000, "", uid_value(sop_uid)))
    return command_set(elements)


def _echoable(value: str) -> bool:
    """Whether a request's UID may be echoed in its response (optional there): not one a peer could
    not decode (over 64 characters, not printable ASCII)."""
    return 0 < len(value) <= 64 and value.isascii() and value.isprintable()


class StoreFastPath:
    """One association's hook: C-STORE-RQs received and answered in its DUL thread."""

    def __init__(self, assoc: Any, ctx: GatewayContext,
                 refusal: Callable[[Any, str], str | None] | None = None) -> None:
        self.assoc = assoc
        self.ctx = ctx
        self.refusal = refusal
        #: The request being received: context ID, message ID, SOP class, SOP instance; None between.
        self.request: tuple[int, int, str, str] | None = None
        self.file: SpoolFile | None = None
        self.started, self.received = 0.0, 0  # the request's arrival and data set bytes (metrics)

    def __call__(self, pdu: bytes) -> bool:
        items = pdv_items(pdu)
        if items is None:
            if self.request is None:
                return False
            self._drop()
            raise ProtocolError("a malformed P-DATA-TF PDU in the middle of a C-STORE data set")
        view = memoryview(pdu)
        if self.request is None:
            cx, control, start, end = items[0]
            if control & 0x03 != 0x03 or not self._start(cx, view[start:end]):
                return False  # pynetdicom's
            items = items[1:]
        context_id = self.request[0]  # type: ignore[index]
        assert self.file is not None
        for n, (cx, control, start, end) in enumerate(items):
            if control & 0x01 or cx != context_id or (control & 0x02 and n != len(items) - 1):
                self._drop()
                raise ProtocolError("another message's PDV in the middle of a C-STORE data set")
            self.file.write(view[start:end])  # never raises: a spool error is kept (`SpoolFile`)
            self.received += end - start
            if control & 0x02:
                self._answer()
        return True

    def _start(self, context_id: int, command: memoryview) -> bool:
        fields = command_fields(command)
        if fields is None or us(fields, COMMAND_FIELD) != C_STORE_RQ \
                or us(fields, DATA_SET_TYPE) in (None, NO_DATA_SET):
            return False
        msg_id = us(fields, MESSAGE_ID)
        sop_class, sop_uid = uid(fields, SOP_CLASS), uid(fields, SOP_INSTANCE)
        assoc = self.assoc
        cx = next((c for c in assoc.accepted_contexts if c.context_id == context_id), None)
        if msg_id is None or not sop_uid or not (sop_class + sop_uid).isascii() or cx is None \
                or cx.abstract_syntax != sop_class \
                or not idle(assoc) \
                or (self.refusal is not None and self.refusal(assoc, "store") is not None):
            return False
        self.request = (context_id, msg_id, sop_class, sop_uid)
        self.started, self.received = time.perf_counter(), 0
        self.file = SpoolFile()
        self.file.write(b"\0" * 128 + b"DICM" + file_meta_bytes(sop_class, sop_uid, cx.transfer_syntax[0],
                                                                 assoc.requestor.ae_title))
        return True

    def _answer(self) -> None:
        context_id, msg_id, sop_class, sop_uid = self.request  # type: ignore[misc]
        file = self.file
        assert file is not None
        self.request, self.file = None, None
        comment: str | None
        try:
            file.close()
            failure = file.failure
            if failure is not None:  # disk full…: this request fails, the association goes on
                status, comment = OUT_OF_RESOURCES, failure
            else:
                status, comment = store_spooled(self.ctx.ingest, file.name, self.assoc.requestor.ae_title)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(file.name)  # the stored object is a link to it, or nothing was stored
        dimse_operation("C-STORE", status, time.perf_counter() - self.started, self.received)
        response = pdv_pdu(context_id, 0x03, store_rsp(sop_class, sop_uid, msg_id, status, comment))
        try:
            self.assoc.dul.socket.socket.sendall(response)
        except OSError as exc:  # the peer went away: the DUL notices on its next read
            log.info("C-STORE from %s: the answer could not be sent: %s", self.assoc.requestor.ae_title, exc)

    def _drop(self) -> None:
        file, self.file, self.request = self.file, None, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()
            with contextlib.suppress(OSError):
                os.unlink(file.name)


def hook_for(ctx: GatewayContext, refusal: Callable[[Any, str], str | None] | None = None
             ) -> Callable[[Any], StoreFastPath | None]:
    """A fast path for each plain-TCP association when the gateway spools (TLS ones, and in-memory
    receiving, keep pynetdicom's path)."""

    def make(assoc: Any) -> StoreFastPath | None:
        backend = ctx.backend
        if backend is None or backend.spool_dir is None or not ctx.settings.spool_received \
                or isinstance(assoc.dul.socket.socket, ssl.SSLSocket):
            return None
        return StoreFastPath(assoc, ctx, refusal)

    return make


def combined(*makers: Callable[[Any], Any]) -> Callable[[Any], Callable[[bytes], bool] | None]:
    """Several `pdata_hook_for` factories as one: each PDU goes to the hook in the middle of a
    message (its `request` set), else to each hook in turn until one takes it."""

    def make(assoc: Any) -> Callable[[bytes], bool] | None:
        hooks = [h for h in (m(assoc) for m in makers) if h is not None]
        if len(hooks) <= 1:
            return hooks[0] if hooks else None
        current: list[Any] = [None]

        def hook(pdu: bytes) -> bool:
            busy = current[0]
            if busy is not None:
                taken = bool(busy(pdu))
                if getattr(busy, "request", None) is None:
                    current[0] = None
                return taken
            for h in hooks:
                if h(pdu):
                    if getattr(h, "request", None) is not None:
                        current[0] = h
                    return True
            return False

        return hook

    return make
