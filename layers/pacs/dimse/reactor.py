"""Event-driven reactors for pynetdicom associations: the gateway's (acceptors) and ours (requestors).

pynetdicom 3.0 runs two polling loops per association: the DUL thread sleeps 1 ms whenever it has
nothing to do, and the association thread sleeps 1 ms between looks at its DIMSE queue. Every
C-STORE therefore waits up to a millisecond twice (the received data set reaching the handler, the
response reaching the socket) and an idle association wakes 2,000 times a second.

Here both loops wait on what they are waiting for instead: the DUL thread in `poll()` on its
socket and a wake-up pipe that is written when a primitive is queued for it (or it is told to
stop); the association thread on an event set when a DIMSE message, an ACSE primitive or the DUL's
exit arrives. Timers (ARTIM, network idle) are still checked at least every `IDLE_WAIT` seconds.
An acceptor whose connection goes before its A-ASSOCIATE-RQ arrives ends at once (pynetdicom waits
out the ACSE timeout, holding a thread and an association slot).
The loop bodies are pynetdicom's (3.0.4, pinned), with only the waits changed. Acceptors come from
`EventRequestHandler` (the gateway's server uses it), requestors from `EventAE.associate`.

Two ways around pynetdicom's per-PDU machinery, for the hot paths that need them:
- `EventDUL.pdata_hook`: sees each P-DATA-TF PDU received on an established association as bytes,
  in the DUL thread, and may take it (the C-FIND fast path answers a query there);
  `EventDUL.feed` hands PDUs it held back to pynetdicom after all.
- `EventDUL.borrowed()`: the DUL stops reading its socket so that one thread may exchange
  messages on it directly (a C-MOVE's C-STORE sub-operations).
PDUs are read in pieces as large as the socket gives (pynetdicom reads 4 KiB at a time).

One bad message ends one message (`pacs.dimse.refusals`): a request pynetdicom would abort the
association for, or drop unanswered, is answered with a failure status instead. A PDU of an unknown
type is answered with an A-ABORT and the connection closed at once: its length cannot be trusted, so
nothing after it can be read as a PDU.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from ssl import SSLContext
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dimse_primitives import C_CANCEL, N_EVENT_REPORT
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, P_DATA
from pynetdicom.transport import AddressInformation, AssociationSocket, RequestHandler

from pacs.dimse import refusals

log = logging.getLogger("gateway")

#: The longest a reactor sleeps without an event: the granularity of its timers and kill checks.
IDLE_WAIT = 0.01
#: The largest piece asked of the socket at once while reading a PDU.
RECV_SIZE = 1 << 20
#: PDU types (PS3.8 9.3): 0x01 A-ASSOCIATE-RQ ... 0x07 A-ABORT; 0x04 P-DATA-TF.
PDU_TYPES = range(0x01, 0x08)
P_DATA_TF = 0x04
#: How long `borrowed()` waits for the DUL thread to stop reading.
BORROW_TIMEOUT = 5.0


def recv_exactly(sock: Any, n: int) -> bytes:
    """`n` bytes from the socket, or fewer when the peer closed the connection first."""
    parts: list[bytes] = []
    left = n
    while left:
        data = sock.recv(min(left, RECV_SIZE))
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class WakingQueue(queue.Queue[Any]):
    """A queue that calls `wake` after every put."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class Checkpoint(threading.Event):
    """The association's reactor checkpoint: clearing it (a user thread pausing the reactor to send
    a request) wakes the reactor, so it pauses at once instead of at its next timeout."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake
        self.set()

    def clear(self) -> None:
        super().clear()
        self._wake.set()


class EventDUL(DULServiceProvider):
    """A DUL provider whose reactor sleeps in `poll()` on its socket and a wake-up pipe."""

    #: Called in the DUL thread with each P-DATA-TF PDU (bytes, header included) received while the
    #: association is established; True when it took the PDU, which pynetdicom then never sees.
    pdata_hook: Callable[[bytes], bool] | None = None
    #: Set once the transport connection is gone (the state machine back in Sta1 after Evt17/18).
    disconnected: bool = False

    def __init__(self, assoc: EventAssociation) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stopping = False
        self._parked = False
        self._parked_ack = threading.Event()
        self._poller = select.poll()
        self._poll_fd = -2  # the socket descriptor `_poller` watches (-1: none; -2: not set up)
        self._readable = False
        #: A PDU of an unknown type was received: the stream cannot be read further (see `_reactor`);
        #: "closing" once the close is queued.
        self._unframed: bool | str = False
        super().__init__(assoc)
        self.to_provider_queue = WakingQueue(self.poke)
        self.to_user_queue = WakingQueue(assoc.activity.set)

    @property  # type: ignore[override]
    def _kill_thread(self) -> bool:
        return self._stopping

    @_kill_thread.setter
    def _kill_thread(self, value: bool) -> None:
        self._stopping = value
        if value:
            self.poke()

    def poke(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"!")

    def _wait(self) -> None:
        """Until the socket is readable, a primitive is queued, or IDLE_WAIT has passed (while the
        socket is borrowed: until a primitive is queued or IDLE_WAIT has passed)."""
        sock = cast(AssociationSocket | None, self.socket)
        raw = sock.socket if sock is not None and sock._is_connected and not self._parked else None
        if isinstance(raw, ssl.SSLSocket) and raw.pending():
            return  # TLS data already decrypted and buffered: poll() cannot see it
        try:
            fd = raw.fileno() if raw is not None else -1
            if fd != self._poll_fd:  # not select(): descriptors above 1024 are fine
                self._poller = select.poll()
                self._poller.register(self._wake_r, select.POLLIN)
                if fd >= 0:
                    self._poller.register(fd, select.POLLIN)
                self._poll_fd = fd
            ready = self._poller.poll(IDLE_WAIT * 1000)
        except (OSError, ValueError):  # closed under us: the loop notices (Evt17)
            self._poll_fd = -2
            time.sleep(IDLE_WAIT)
            return
        for what, _ in ready:
            if what == self._wake_r:
                with contextlib.suppress(BlockingIOError, OSError):
                    while os.read(self._wake_r, 4096):
                        pass
            else:
                self._readable = True  # `_is_transport_event` need not ask the socket again

    def _is_transport_event(self) -> bool:
        """pynetdicom's, without its select() when the last poll() saw the socket readable."""
        if self._unframed:
            return False  # the A-ABORT goes out, then the connection is closed (`_reactor`)
        if self._readable:
            self._readable = False
            if not self._parked and self.state_machine.current_state != "Sta13":
                self._read_pdu_data()
                return True
        return super()._is_transport_event()

    def _read_pdu_data(self) -> None:
        """pynetdicom's `_read_pdu_data` (same FSM events on failure), reading in large pieces, with
        `pdata_hook` offered each P-DATA-TF PDU first."""
        sock = cast(AssociationSocket, self.socket).socket
        try:
            head = recv_exactly(sock, 6)
            if len(head) < 6:
                self.event_queue.put("Evt17")  # transport connection closed
                return
            pdu_type, _, length = struct.unpack(">BBL", head)
            if pdu_type not in PDU_TYPES:
                log.error("Unknown PDU type received '0x%02X': aborting the association", pdu_type)
                self._unframed = True
                self.event_queue.put("Evt19")  # unrecognised PDU
                return
            body = recv_exactly(sock, length)
        except (OSError, TimeoutError) as exc:
            log.error("Connection closed before the entire PDU was received: %s", exc)
            self.event_queue.put("Evt17")
            return
        if len(body) != length:
            log.error("The received PDU is shorter than expected (%d of %d bytes)", len(body) + 6, length + 6)
            self.event_queue.put("Evt17")
            return
        pdu = head + body
        hook = self.pdata_hook
        if hook is not None and pdu_type == P_DATA_TF and self.state_machine.current_state == "Sta6" \
                and hook(pdu):
            return
        self.feed(pdu)

    def feed(self, pdu: bytes) -> None:
        """Hand a received PDU to pynetdicom: decoded, then its FSM event queued — in that order, so
        that a borrowing thread may call this too (the DUL never takes the event before its PDU)."""
        try:
            decoded, event = self._decode_pdu(bytearray(pdu))
        except Exception as exc:
            log.error("Unable to decode the received PDU data: %s", exc)
            self.event_queue.put("Evt19")
        else:
            self._recv_pdu.put(decoded)
            self.event_queue.put(event)
        if threading.current_thread() is not self:
            self.poke()

    @contextlib.contextmanager
    def borrowed(self) -> Iterator[Any]:
        """The association's socket for the calling thread alone: this DUL stops reading it until
        the block ends (it still sends what is queued for it, and its idle timer is kept fresh: the
        borrower times its own reads). A PDU the borrower reads and does not want goes to `feed`."""
        self._parked_ack.clear()
        self._parked = True
        self.poke()
        try:
            if self.is_alive() and threading.current_thread() is not self \
                    and not self._parked_ack.wait(BORROW_TIMEOUT):
                raise TimeoutError("the association's DUL did not stop reading its socket")
            yield cast(AssociationSocket, self.socket).socket
        finally:
            self._parked = False
            self.poke()

    def run_reactor(self) -> None:
        """pynetdicom's DUL loop, waiting in `_wait()` instead of sleeping 1 ms."""
        try:
            self._reactor()
        finally:
            assoc = cast(EventAssociation, self.assoc)
            assoc.activity.set()  # the association notices the DUL has stopped
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _reactor(self) -> None:
        self._idle_timer.start()
        self.socket = cast(AssociationSocket, self.socket)
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                idle = True
            if idle:
                self._wait()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            if self._parked:  # `borrowed()`: another thread reads the socket
                self._readable = False  # what a poll saw is the borrower's now
                self._parked_ack.set()
                self._idle_timer.restart()
            try:
                if self._process_recv_primitive():  # a primitive to encode and send
                    pass
                elif not self._parked and self._is_transport_event():  # a PDU to receive and decode
                    self._idle_timer.restart()
            except Exception:
                log.exception("DUL reactor failed: aborting the association")
                # As pynetdicom does: bypass the state machine, send an A-ABORT, stop both reactors
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                with contextlib.suppress(Exception):
                    self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False
            if self._unframed is True and self.state_machine.current_state == "Sta13":
                # The A-ABORT is sent (AA-1, AA-8); what follows the unknown PDU's header cannot be
                # framed, so the connection is closed now (AA-2, as when ARTIM expires) instead of
                # reading its leftover bytes as the next PDU until the network timeout.
                self._unframed = "closing"  # still nothing read from the socket
                self.event_queue.put("Evt18")
            if self.state_machine.current_state == "Sta1" and event in ("Evt17", "Evt18"):
                self.disconnected = True  # the connection is gone (closed by the peer, or ARTIM)
                cast(EventAssociation, self.assoc).activity.set()


class EventDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, except that a received request whose command values pynetdicom
    cannot set on its primitive (a UID over 64 characters…) is queued to be answered with a failure
    (`refusals.lenient_primitive`) instead of aborting the association."""

    def receive_primitive(self, primitive: P_DATA) -> None:
        """pynetdicom's (3.0.4), but for the failure of `message_to_primitive`."""
        if self.message is None:
            self.message = DIMSEMessage()
        if not self.message.decode_msg(primitive, self.assoc):
            return
        evt.trigger(self.assoc, evt.EVT_DIMSE_RECV, {"message": self.message})
        context_id = cast(int, self.message.context_id)
        try:
            d_primitive: Any = self.message.message_to_primitive()
        except Exception as exc:
            d_primitive = refusals.lenient_primitive(self.message, exc)
            if d_primitive is None:
                log.exception("Received an invalid DIMSE message")
                self.dul.event_queue.put("Evt19")
                return
        if isinstance(d_primitive, C_CANCEL) and len(self.cancel_req) < 10:
            self.cancel_req[cast(int, d_primitive.MessageIDBeingRespondedTo)] = d_primitive
        elif isinstance(d_primitive, N_EVENT_REPORT) and d_primitive.is_valid_request:
            threading.Thread(target=self.assoc._serve_request, args=(d_primitive, context_id),
                             daemon=True).start()
        else:
            self.msg_queue.put((context_id, d_primitive))
        message, self.message = self.message, None
        message.encoded_command_set = io.BytesIO()
        message.data_set = io.BytesIO()
        message._data_set_file = None
        message._data_set_path = None


class EventAssociation(Association):
    """An association whose reactor waits for DIMSE messages, ACSE primitives or its DUL's exit,
    instead of polling every millisecond."""

    activity: threading.Event
    paused: threading.Event
    #: True while the reactor takes a DIMSE message off its queue or serves one.
    serving: bool = False

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self._use_events()

    @classmethod
    def adopt(cls, assoc: Association) -> EventAssociation:
        """Turn a new, not yet started association into an EventAssociation."""
        assoc.__class__ = cls
        adopted = cast(EventAssociation, assoc)
        adopted._use_events()
        return adopted

    def _use_events(self) -> None:
        self.activity = threading.Event()
        #: Set while the reactor waits at its checkpoint (`_is_paused`, as an event to wait on).
        self.paused = threading.Event()
        self.dul = EventDUL(self)  # replaces the default provider, never started
        self.acse_timeout = self.acse_timeout  # re-applied: these setters configure the DUL's timers
        self.network_timeout = self.network_timeout
        self.dimse.__class__ = EventDIMSE
        self.dimse.msg_queue = WakingQueue(self.activity.set)
        self._reactor_checkpoint = Checkpoint(self.activity)

    def _serve_request(self, msg: Any, context_id: int) -> None:
        """pynetdicom's, answering with a failure (`refusals`) where it would abort the association or
        not answer: a request it could not decode, one lacking a required value, one whose SOP class
        no service serves on its context, one whose service raised."""
        cx = self._accepted_cx.get(context_id)
        is_request = getattr(msg, "MessageIDBeingRespondedTo", None) is None \
            and getattr(msg, "MessageID", None) is not None
        if self._sent_release or cx is None or not is_request:
            super()._serve_request(msg, context_id)  # ignored, or aborted: a context never accepted
            return
        refusal: tuple[int, str] | None = getattr(msg, "_pacs_refusal", None)
        service: Any = None
        if refusal is None:
            lacking = refusals.missing(msg)
            if lacking:
                refusal = refusals.malformed_status(msg), f"no {', '.join(lacking)}"
        if refusal is None:
            service, reason = refusals.service_for(msg, str(cx.abstract_syntax))
            if service is None:
                refusal = refusals.SOP_CLASS_NOT_SUPPORTED, reason
        if refusal is not None:
            refusals.refuse(self, msg, context_id, *refusal)
            return
        try:
            self.dimse.cancel_req = {}
            self._is_paused = True  # as pynetdicom: the SCP may call one of the send_* methods
            service(self).SCP(msg, cx)
            self._is_paused = False
            self.dimse.cancel_req = {}
        except Exception as exc:
            self._is_paused = False
            log.exception("%s from %s failed", type(msg).__name__, self.requestor.ae_title)
            if not self.is_established:
                return
            try:
                refusals.refuse(self, msg, context_id, refusals.PROCESSING_FAILURE,
                                f"internal error: {type(exc).__name__}")
            except Exception:
                log.exception("the failure could not be answered: aborting the association")
                self.abort()

    def run_reactor(self) -> None:
        """pynetdicom's, except that an acceptor stops waiting for the A-ASSOCIATE-RQ as soon as the
        connection is gone (the peer closed it, or ARTIM expired): pynetdicom waits out the whole
        ACSE timeout, holding its thread and one of the AE's association slots."""
        if not self.is_acceptor:
            super().run_reactor()
            return
        if not self._started_dul:
            self.dul.start()
            self._started_dul = True
            self._dul_ready.wait()
        primitive = self._await_request()
        if primitive is not None:
            self.requestor.primitive = primitive
            evt.trigger(self, evt.EVT_REQUESTED, {})
            if not self.is_aborted and not self.is_rejected:  # EVT_REQUESTED may reject or abort
                self.acse.negotiate_association()
            if self.is_established:
                self._run_reactor()
        else:
            self.kill()
        sock = cast(AssociationSocket, self.dul.socket)
        if self._server and sock.socket:
            self._server.shutdown_request(sock.socket)

    def _await_request(self) -> A_ASSOCIATE | None:
        """The A-ASSOCIATE-RQ, or None when the connection closed or the ACSE timeout passed first."""
        dul = cast(EventDUL, self.dul)
        deadline = None if self.acse_timeout is None else time.monotonic() + self.acse_timeout
        while True:
            primitive = dul.receive_pdu(wait=False)
            if primitive is not None:
                return primitive if isinstance(primitive, A_ASSOCIATE) else None
            if dul.disconnected or not dul.is_alive() \
                    or (deadline is not None and time.monotonic() > deadline):
                return None
            self.activity.wait(IDLE_WAIT)
            self.activity.clear()

    def _run_reactor(self) -> None:
        """pynetdicom's reactor loop (association.py), waiting on `activity`."""
        self._is_paused = False
        while not self._kill:
            self.activity.wait(IDLE_WAIT)
            self.activity.clear()
            # A user thread pauses the reactor (clear the checkpoint, wait for `_is_paused`) before it
            # sends a request and takes the response off the DIMSE queue itself. pynetdicom's loop can
            # pass a checkpoint cleared just after `wait()` returned, while the user already saw
            # `_is_paused`, and then take the user's response: re-check after unpausing.
            while True:
                self._is_paused = True
                self.paused.set()
                self._reactor_checkpoint.wait()
                self.paused.clear()
                self._is_paused = False
                if self._reactor_checkpoint.is_set():
                    break
            while self._reactor_checkpoint.is_set():  # every complete message, not one per wake-up
                self.serving = True
                context_id, msg = self.dimse.get_msg(block=False)
                if not msg:
                    self.serving = False
                    break
                try:
                    self._serve_request(msg, cast(int, context_id))
                finally:
                    self.serving = False
                if self._kill:
                    return
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)  # so EVT_ACSE_RECV fires for subscribers
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class EventRequestHandler(RequestHandler):
    """The server's request handler, creating EventAssociations (pynetdicom's
    `RequestHandler._create_association`, otherwise unchanged; contexts are shared, not copied,
    as `GatewayServer.contexts` explains)."""

    def _create_association(self) -> Association:
        assoc = EventAssociation(self.ae, "acceptor")
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(AssociationSocket(assoc, client_socket=self.request))
        acceptor = assoc.acceptor
        acceptor.maximum_length = self.ae.maximum_pdu_size
        acceptor.ae_title = self.server.ae_title
        acceptor.address_info = self.local
        acceptor.implementation_class_uid = self.ae.implementation_class_uid
        acceptor.implementation_version_name = self.ae.implementation_version_name
        acceptor.supported_contexts = list(self.server.contexts)
        assoc.requestor.address_info = self.remote
        hook_for = getattr(self.server, "pdata_hook_for", None)  # see `EventDUL.pdata_hook`
        if hook_for is not None:
            cast(EventDUL, assoc.dul).pdata_hook = hook_for(assoc)
        for event, bound in self.server._handlers.items():
            if event.is_intervention and bound:
                assoc.bind(event, *bound)
            elif isinstance(event, evt.NotificationEvent):
                for handler in cast(list[tuple[Any, Any]], bound):
                    assoc.bind(event, handler[0], handler[1])
        return assoc



class EventAE(AE):
    """An AE whose requested associations run on event-driven reactors and set TCP_NODELAY."""

    def _create_socket(
        self, assoc: Association, address: AddressInformation, tls_args: tuple[SSLContext, str] | None
    ) -> AssociationSocket:
        EventAssociation.adopt(assoc)  # called by AE.associate before anything starts
        sock = super()._create_socket(assoc, address, tls_args)
        if sock.socket is not None:
            sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
