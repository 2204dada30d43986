"""C-FIND answered in the DUL thread, from the received PDUs (`pacs.dimse.reactor.EventDUL.pdata_hook`).

pynetdicom hands a C-FIND-RQ through its PDU and DIMSE decoders, a queue, its association thread and
its service class, decodes the identifier with pydicom, then sends each response through the DUL
thread again: most of a small query's latency. Here the DUL thread that read the request answers
it: the command set read with a small walker, the identifier parsed from its bytes
(`parse_encoded`), the catalog queried, the responses encoded (`FindService.find_encoded`) and
written to the socket BATCH at a time, the last ones with the final Success.

Only the plain case: a C-FIND-RQ of a Query/Retrieve FIND model in Implicit or Explicit VR Little
Endian, on an association with nothing else in progress, from a caller allowed to query, with an
identifier `parse_encoded` reads and the request's character set can encode. Anything else (a
failure to report, a character set that needs pydicom, another message in between) is handed back
to pynetdicom untouched (`EventDUL.feed`): `gateway.find` answers it as before. A C-CANCEL that
arrives while matches are sent ends the query with Cancel (0xFE00); any other PDU read meanwhile is
passed to pynetdicom once the query is answered.
"""

from __future__ import annotations

import logging
import select
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any

from pacs.dimse.direct import command_set, implicit, pdus, uid_value
from pacs.dimse.pdu import (
    COMMAND_FIELD,
    DATA_SET_TYPE,
    MESSAGE_ID,
    NO_DATA_SET,
    RESPONDED_TO,
    SOP_CLASS,
    command_fields,
    idle,
    pdv_items,
    uid,
    us,
)
from pacs.dimse.reactor import P_DATA_TF, recv_exactly
from pacs.monitoring.metrics import dimse_operation
from pacs.services.dimse_query import FindService, parse_encoded
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.context import GatewayContext
from gateway.find import CANCEL, MODELS, PENDING, PENDING_WARNING, QUERY_FAILED, SUCCESS, pending_command

log = logging.getLogger("gateway")

C_FIND_RQ = 0x0020
C_CANCEL_RQ = 0x0FFF
_SYNTAXES = {ImplicitVRLittleEndian: True, ExplicitVRLittleEndian: False}
#: Pending responses gathered before one write and a look for a C-CANCEL (a smaller answer goes out in
#: one write, with its final response).
BATCH = 16


def failure_command(sop_class: str, msg_id: int, status: int, comment: str) -> bytes:
    """The command set of a final C-FIND-RSP with a failure status and an Error Comment."""
    text = comment[:64].encode("ascii", "replace")
    return command_set([
        implicit(0x00000002, "", uid_value(sop_class)),
        implicit(0x00000100, "<H", 0x8020),  # C-FIND-RSP
        implicit(0x00000120, "<H", msg_id),
        implicit(0x00000800, "<H", NO_DATA_SET),
        implicit(0x00000900, "<H", status),
        implicit(0x00000902, "", text + b" " * (len(text) & 1)),  # Error Comment (LO)
    ])


class FindFastPath:
    """One association's hook: C-FIND-RQs answered in its DUL thread (see the module docstring)."""

    def __init__(
        self, assoc: Any, ctx: GatewayContext, refusal: Callable[[Any, str], str | None] | None = None,
        service: type[FindService] = FindService,
    ) -> None:
        self.assoc = assoc
        self.ctx = ctx
        self.refusal = refusal
        self.service = service
        self.held: list[bytes] = []  # the request's PDUs so far (handed back if it is not ours)
        self.data: list[bytes] = []  # its identifier's fragments
        self.request: tuple[int, int, str, bool] | None = None  # context ID, message ID, SOP class, implicit
        self.started = 0.0
        self._poller = select.poll()
        self._poller.register(assoc.dul.socket.socket.fileno(), select.POLLIN)

    # -- assembling the request ----------------------------------------------------------------

    def __call__(self, pdu: bytes) -> bool:
        taken = self._take(pdu)
        while self.request is not None:  # the identifier's next PDU, when it is already there
            following = self._ready_pdu()
            if following is None:
                break  # the DUL thread waits for it, as for any PDU
            if following[0] != P_DATA_TF:
                return self._give_back(following)
            self._take(following)
        return taken

    def _ready_pdu(self) -> bytes | None:
        """The next PDU if the socket has bytes to read now (one poll, no wait)."""
        sock = self.assoc.dul.socket.socket
        if not self._poller.poll(0):
            return None
        head = recv_exactly(sock, 6)
        length = struct.unpack(">I", head[2:6])[0] if len(head) == 6 else -1
        body = recv_exactly(sock, length) if length >= 0 else b""
        if len(body) != length:  # closed mid-PDU: the DUL sees the end of the connection next
            self._give_back()
            return None
        return head + body

    def _take(self, pdu: bytes) -> bool:
        offsets = pdv_items(pdu)
        if offsets is None:
            return self._give_back(pdu)
        items = [(cx, control, pdu[start:end]) for cx, control, start, end in offsets]
        if self.request is None:
            if self.assoc.dimse.message is not None or not self._start(*items[0]):
                return False  # pynetdicom's: a message it is assembling, or not a plain C-FIND-RQ
            items = items[1:]
        self.held.append(pdu)
        context_id = self.request[0]  # type: ignore[index]
        for n, (cx, control, fragment) in enumerate(items):
            if control & 0x01 or cx != context_id or (control & 0x02 and n != len(items) - 1):
                return self._give_back()  # not an identifier alone: pynetdicom's business
            self.data.append(fragment)
            if control & 0x02:
                return self._answer()
        return True  # the identifier continues in the next PDU

    def _start(self, context_id: int, control: int, fragment: bytes) -> bool:
        if control & 0x03 != 0x03:
            return False  # not a whole command set in one fragment
        fields = command_fields(fragment)
        if fields is None or us(fields, COMMAND_FIELD) != C_FIND_RQ \
                or us(fields, DATA_SET_TYPE) in (None, NO_DATA_SET):
            return False
        msg_id = us(fields, MESSAGE_ID)
        sop_class = uid(fields, SOP_CLASS)
        cx = next((c for c in self.assoc.accepted_contexts if c.context_id == context_id), None)
        if msg_id is None or cx is None or cx.abstract_syntax != sop_class or sop_class not in MODELS \
                or cx.transfer_syntax[0] not in _SYNTAXES:
            return False
        self.request = (context_id, msg_id, sop_class, _SYNTAXES[cx.transfer_syntax[0]])
        self.data = []
        self.started = time.perf_counter()  # for the metrics
        return True

    def _give_back(self, pdu: bytes | None = None) -> bool:
        """Everything held (and `pdu`) to pynetdicom, in order."""
        held = self.held + ([pdu] if pdu is not None else [])
        self.held, self.data, self.request = [], [], None
        for raw in held:
            self.assoc.dul.feed(raw)
        return True

    # -- answering -----------------------------------------------------------------------------

    def _answer(self) -> bool:
        context_id, msg_id, sop_class, is_implicit = self.request  # type: ignore[misc]
        assoc, backend = self.assoc, self.ctx.backend
        if backend is None or not idle(assoc) \
                or (self.refusal is not None and self.refusal(assoc, "find") is not None):
            return self._give_back()
        try:
            req = parse_encoded(b"".join(self.data), MODELS[sop_class], implicit=is_implicit)
        except Exception:  # FindFailure, or anything unforeseen: reported by gateway.find, through pynetdicom
            req = None
        if req is None or not FindService.can_encode(req):
            return self._give_back()
        self.held, self.data, self.request = [], [], None
        settings = self.ctx.settings
        service = self.service(backend.catalog, settings.partition, settings.ae_title)
        status = PENDING_WARNING if req.unsupported else PENDING
        writer = _Writer(assoc, context_id, sop_class, msg_id, status, self._poller)
        final, sent = SUCCESS, 0  # for the metrics
        try:
            for n, identifier in enumerate(service.find_encoded(req, implicit=is_implicit), 1):
                writer.add(identifier)
                sent += len(identifier)
                if n % BATCH == 0:  # a look for a C-CANCEL, then the batch out
                    if writer.cancelled():
                        writer.finish(final := CANCEL)
                        break
                    writer.flush()
            else:
                writer.finish(SUCCESS)
        except OSError as exc:  # the peer went away: the DUL notices on its next read
            log.info("C-FIND from %s: the answer could not be sent: %s", assoc.requestor.ae_title, exc)
        except Exception as exc:
            log.exception("C-FIND from %s failed", assoc.requestor.ae_title)
            writer.finish(final := QUERY_FAILED, f"query failed: {type(exc).__name__}")
        dimse_operation("C-FIND", final, time.perf_counter() - self.started, sent, "sent")
        for raw in writer.later:  # what the peer sent meanwhile, in order
            assoc.dul.feed(raw)
        return True

class _Writer:
    """Pending responses, gathered and written in batches, and the final response."""

    def __init__(self, assoc: Any, context_id: int, sop_class: str, msg_id: int, status: int,
                 poller: Any) -> None:
        self.sock = assoc.dul.socket.socket
        self.context_id = context_id
        self.sop_class, self.msg_id = sop_class, msg_id
        self.max_pdu = int(assoc.dimse.maximum_pdu_size or 0)
        self.command = self._pdus(pending_command(sop_class, msg_id, status), True)
        self.pending: list[bytes] = []
        self.later: list[bytes] = []  # PDUs read while answering, for pynetdicom afterwards
        self._poller = poller  # the socket's, for POLLIN

    def _pdus(self, data: bytes, command: bool) -> bytes:
        return b"".join(pdus(data, self.context_id, command, self.max_pdu))

    def add(self, identifier: bytes) -> None:
        self.pending += (self.command, self._pdus(identifier, False))

    def flush(self) -> None:
        self.sock.sendall(b"".join(self.pending))
        self.pending.clear()

    def finish(self, status: int, comment: str = "") -> None:
        """The final response after what is pending (dropped on Cancel: the peer asked for no more)."""
        if status == CANCEL:
            self.pending.clear()
        final = failure_command(self.sop_class, self.msg_id, status, comment) if comment \
            else pending_command(self.sop_class, self.msg_id, status, identifier=False)
        self.pending.append(self._pdus(final, True))
        self.sock.sendall(b"".join(self.pending))
        self.pending.clear()

    def cancelled(self) -> bool:
        """Whether a C-CANCEL-RQ for this request has arrived (every PDU waiting is read: other
        ones are kept for pynetdicom)."""
        while self._poller.poll(0):
            head = recv_exactly(self.sock, 6)
            if len(head) < 6:
                return False  # closed: the DUL sees it on its next read
            body = recv_exactly(self.sock, struct.unpack(">I", head[2:6])[0])
            pdu = head + body
            if head[0] == P_DATA_TF and self._is_cancel(pdu):
                return True
            self.later.append(pdu)
        return False

    def _is_cancel(self, pdu: bytes) -> bool:
        items = pdv_items(pdu)
        if not items or len(items) != 1 or items[0][1] & 0x03 != 0x03:
            return False
        fields = command_fields(pdu[items[0][2]:items[0][3]])
        return fields is not None and us(fields, COMMAND_FIELD) == C_CANCEL_RQ \
            and us(fields, RESPONDED_TO) == self.msg_id


def hook_for(ctx: GatewayContext, refusal: Callable[[Any, str], str | None] | None = None
             ) -> Callable[[Any], FindFastPath | None]:
    """What a GatewayServer's `pdata_hook_for` is set to: a fast path for each plain-TCP association
    (TLS ones keep pynetdicom's path)."""

    def make(assoc: Any) -> FindFastPath | None:
        if ctx.backend is None or isinstance(assoc.dul.socket.socket, ssl.SSLSocket):
            return None
        return FindFastPath(assoc, ctx, refusal)

    return make
