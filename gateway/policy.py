"""Association policy: who may associate, how many at once, what each node may ask, and how much a
peer can make the gateway buffer or wait.

- Calling-AE allowlist, driven by the node registry (`backend.nodes`): an unknown calling AE title
  is rejected with A-ASSOCIATE-RJ rejected-permanent / service-user / "calling-AE-title-not-
  recognized" (PS3.8 9.3.4, reason 3). `Settings.require_known_callers`: `auto` turns it on unless
  the PACS is embedded and listens on a loopback address.
- Concurrent associations over every worker process (counted in shared memory): one more than
  `max_associations` is rejected-transient / service-provider (presentation) / "local-limit-exceeded"
  (reason 2).
- Operations per node (`RemoteNode.operations`): a C-STORE, C-FIND or C-GET from a registered node
  not allowed that operation is answered 0x0124 "Refused: Not Authorized" (PS3.7 Annex C, a general
  status); C-MOVE contexts are not accepted for a node without `move` (pynetdicom's C-MOVE SCP
  opens the destination association before a handler could refuse).
- The peer's announced maximum PDU length (0 = unlimited, or 4 GB) is capped at `max_send_pdu`: what
  the gateway sends is fragmented to at most that.
- Every received PDU is checked as it arrives (`PduGuard`): a P-DATA-TF longer than `max_pdu`, or any
  other PDU longer than 1 MiB, is answered with an A-ABORT and the connection closed before its
  body is read; a PDU not complete `network_timeout` seconds after its first byte (a trickling
  peer), or a silent socket (`network_timeout` per read), drops the connection. Idle associations
  are aborted by pynetdicom's network timer, silent connections by the ARTIM timer (`acse_timeout`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import multiprocessing
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from pacs.catalog.nodes import NodeRegistry, RemoteNode
from pacs.config import Settings
from pacs.dimse.scu import cap_announced
from pacs.monitoring.metrics import instance_refused
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
)

from gateway.counters import COUNTERS

log = logging.getLogger("gateway")

#: Refused: Not Authorized (PS3.7 Annex C, general status).
NOT_AUTHORIZED = 0x0124
#: The largest PDU other than P-DATA-TF (an A-ASSOCIATE-RQ with every context is ~100 kB).
OTHER_PDU_LIMIT = 1 << 20
P_DATA_TF = 0x04
#: Seconds after which the supervisor deems the counters' lock held by a dead worker.
LOCK_TIMEOUT = 5.0
#: A-ABORT, source service-provider (2), reason invalid-PDU-parameter-value (6).
_ABORT_INVALID_PDU = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 6])
_MOVE_CLASSES = {str(PatientRootQueryRetrieveInformationModelMove),
                 str(StudyRootQueryRetrieveInformationModelMove)}
_OPERATION = {evt.EVT_C_STORE: "store", evt.EVT_C_FIND: "find", evt.EVT_C_GET: "get"}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def known_callers_required(settings: Settings) -> bool:
    value = settings.require_known_callers.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if value != "auto":
        raise ValueError(f"require_known_callers: auto, 1 or 0, not {settings.require_known_callers!r}")
    if settings.backend == "aws":
        return True
    try:
        return not ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        return settings.host != "localhost"


def configure(ae: AE, settings: Settings) -> None:
    """Apply the settings' limits and timeouts to the AE."""
    # pynetdicom's own check counts every connection of this process, associated or not (a peer that
    # has not sent its A-ASSOCIATE-RQ yet, one dropped and waiting out ARTIM): a looser ceiling, so
    # that `AssociationPolicy`, which counts associations over all workers, is the limit that applies.
    ae.maximum_associations = 2 * max(1, settings.max_associations) + 16
    ae.maximum_pdu_size = settings.max_pdu
    ae.network_timeout = settings.network_timeout or None
    ae.acse_timeout = settings.acse_timeout or None
    ae.dimse_timeout = settings.dimse_timeout or None


# -- received PDUs ---------------------------------------------------------------------------------

class PduGuard:
    """A socket mixin that follows the PDU framing of what it receives (type, reserved, 4-byte
    length) and enforces the size limits and the per-PDU deadline (see the module docstring)."""

    _data_limit: int = 0
    _other_limit: int = OTHER_PDU_LIMIT
    _pdu_seconds: float = 0.0
    _header: bytearray
    _left: int = 0
    _deadline: float = 0.0

    def guard(self, *, max_pdu: int, pdu_seconds: float) -> None:
        self._data_limit = max_pdu
        self._other_limit = max(OTHER_PDU_LIMIT, max_pdu)
        self._pdu_seconds = pdu_seconds
        self._header = bytearray()
        self._left = 0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:  # type: ignore[override]
        data: bytes = super().recv(bufsize, flags)  # type: ignore[misc]
        if data:
            self._follow(data)
        return data

    def _follow(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._left:
                step = min(self._left, n - i)
                self._left -= step
                i += step
                continue
            if not self._header:
                self._deadline = time.monotonic() + self._pdu_seconds
            step = min(6 - len(self._header), n - i)
            self._header += data[i:i + step]
            i += step
            if len(self._header) == 6:
                kind, length = self._header[0], int.from_bytes(self._header[2:6], "big")
                limit = self._data_limit if kind == P_DATA_TF else self._other_limit
                self._header.clear()
                if limit and length > limit:
                    self._refuse(f"a PDU (type 0x{kind:02X}) of {length} bytes, over the limit of {limit}")
                self._left = length
        if self._pdu_seconds and (self._left or self._header) and time.monotonic() > self._deadline:
            self.refused = True
            COUNTERS.reject("pdu-timeout", _peer_of(self),
                            f"dropping {{peer}}: a PDU took over {self._pdu_seconds:.0f} s to arrive")
            raise TimeoutError(f"a PDU took over {self._pdu_seconds:.0f} s to arrive")

    #: True once this socket was refused (counted here, not again when it closes).
    refused: bool = False

    def _refuse(self, what: str) -> None:
        self.refused = True
        COUNTERS.reject("pdu-limit", _peer_of(self), f"aborting an association with {{peer}}: {what}")
        with contextlib.suppress(OSError):
            super().sendall(_ABORT_INVALID_PDU)  # type: ignore[misc]
        raise ConnectionAbortedError(what)


class GuardedSocket(PduGuard, socket.socket):
    """A plain TCP connection with `PduGuard`."""


class ConnectionGuard:
    """What the gateway's server does with each accepted socket: `wrap` it (guard, timeout, TLS
    without the handshake) in the accepting thread, then `ready` (the TLS handshake) in the
    connection's own thread."""

    def __init__(self, settings: Settings, tls: ssl.SSLContext | None = None) -> None:
        self.max_pdu = settings.max_pdu
        self.timeout = float(settings.network_timeout) or None
        self.tls = tls
        #: How long, and how many per source address, connections may wait silent in the lobby.
        self.silent_timeout = float(settings.acse_timeout) or None
        self.per_source = max(0, settings.max_silent_per_source)

    def wrap(self, sock: socket.socket) -> socket.socket:
        guarded: socket.socket = GuardedSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        guarded.settimeout(self.timeout)
        if self.tls is not None:
            guarded = self.tls.wrap_socket(guarded, server_side=True, do_handshake_on_connect=False)
        if isinstance(guarded, PduGuard):
            guarded.guard(max_pdu=self.max_pdu, pdu_seconds=self.timeout or 0.0)
        return guarded

    def ready(self, sock: socket.socket) -> bool:
        if isinstance(sock, ssl.SSLSocket):
            from gateway.tls import handshake

            return handshake(sock)
        return True


# -- associations -----------------------------------------------------------------------------------

class AssociationCounter:
    """Live associations of each worker process, in shared memory created before the workers fork:
    each worker publishes its own count; the limit applies to the sum."""

    def __init__(self, workers: int = 1) -> None:
        # Raw arrays and plain locks (not an RLock per array): `release` may free a lock that a
        # killed worker held, which an RLock forbids.
        self._counts: Any = multiprocessing.Array("i", max(1, workers), lock=False)
        #: Open connections of each worker (from accept to close): what `busier` balances on.
        self._connections: Any = multiprocessing.Array("i", max(1, workers), lock=False)
        self._counts_lock: Any = multiprocessing.Lock()
        self._connections_lock: Any = multiprocessing.Lock()
        self.index = 0

    def release(self, index: int) -> None:
        """Worker `index` died: its associations and connections no longer count. Called by the
        supervisor; a lock the dead worker held (it is taken for microseconds) is freed."""
        for counts, lock in ((self._counts, self._counts_lock), (self._connections, self._connections_lock)):
            if not lock.acquire(timeout=LOCK_TIMEOUT):
                log.warning("gateway worker %d died holding the association counter's lock: freed", index)
            counts[index] = 0
            lock.release()

    @property
    def lock(self) -> Any:
        return self._counts_lock

    def others(self) -> int:
        return sum(c for i, c in enumerate(self._counts) if i != self.index)

    def publish(self, count: int) -> None:
        self._counts[self.index] = count

    def total(self) -> int:
        return sum(self._counts)

    def connected(self, delta: int) -> None:
        """This worker opened (+1) or closed (-1) a connection."""
        with self._connections_lock:
            self._connections[self.index] += delta

    def busier(self) -> bool:
        """Another worker holds fewer connections than this one (it should take the next)."""
        counts = list(self._connections)
        own = counts[self.index]
        return any(c < own for i, c in enumerate(counts) if i != self.index)


class AssociationPolicy:
    """The association-level rules, bound to one worker's AE: `handlers()` for the server,
    `guard(bindings)` around the DIMSE handlers, `refresh()` now and then."""

    def __init__(self, settings: Settings, nodes: NodeRegistry | None,
                 counter: AssociationCounter | None = None) -> None:
        self.settings = settings
        self.nodes = nodes
        self.counter = counter or AssociationCounter()
        self.require_known = known_callers_required(settings)
        #: Admitted associations and their node (None: an unregistered caller, the allowlist off).
        self._admitted: weakref.WeakKeyDictionary[Association, RemoteNode | None] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()
        self._rejected_here: weakref.WeakSet[Association] = weakref.WeakSet()

    def handlers(self) -> list[tuple[Any, ...]]:
        return [(evt.EVT_REQUESTED, self.on_requested), (evt.EVT_CONN_CLOSE, self.on_closed),
                (evt.EVT_REJECTED, self.on_rejected)]

    # association set-up
    def on_requested(self, event: Event) -> None:
        assoc = event.assoc
        request = assoc.requestor.primitive
        assert request is not None  # EVT_REQUESTED: the A-ASSOCIATE-RQ has arrived
        calling = str(request.calling_ae_title).strip()
        try:
            node = self.nodes.get_node(calling) if self.nodes is not None else None
        except Exception:
            log.exception("node registry lookup of %r failed", calling)
            if self.require_known:
                self._reject(assoc, (0x02, 0x01, 0x01), "registry-unavailable",
                             f"{calling}: the node registry is unavailable")
                return
            node = None
        if node is None and self.require_known:
            self._reject(assoc, (0x01, 0x01, 0x03), "unknown-caller",
                         f"calling AE title {calling!r} is not a registered node")
            return
        with self.counter.lock:  # never held while waiting on the peer (EVT_CONN_CLOSE takes it)
            own = self._live()
            full = own + self.counter.others() >= self.settings.max_associations
            if not full:
                with self._lock:
                    self._admitted[assoc] = node
                self.counter.publish(own + 1)
        if full:
            self._reject(assoc, (0x02, 0x03, 0x02), "association-limit",
                         f"{calling}: {self.settings.max_associations} associations already open")
            return
        self._cap_send_pdu(assoc)
        if node is not None and "move" not in node.operations:
            assoc.acceptor.supported_contexts = [
                cx for cx in assoc.acceptor.supported_contexts if cx.abstract_syntax not in _MOVE_CLASSES
            ]

    def on_closed(self, event: Event) -> None:
        assoc = event.assoc
        sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
        if assoc.requestor.primitive is None and not getattr(sock, "refused", False):
            COUNTERS.reject("incomplete-request", _address(assoc),
                            "connection from {peer} closed before its A-ASSOCIATE-RQ was complete")
        self.refresh()

    def on_rejected(self, event: Event) -> None:
        """Count and log pynetdicom's own rejections (a wrong called AE title, ...)."""
        assoc = event.assoc
        if assoc in self._rejected_here:
            return
        rj = assoc.acceptor.primitive
        rsd = "?" if rj is None else f"{rj.result}/{rj.result_source}/{rj.diagnostic}"
        request = assoc.requestor.primitive
        called = str(request.called_ae_title).strip() if request is not None else "?"
        COUNTERS.reject("rejected", _address(assoc),
                        f"association from {{peer}} rejected ({rsd}), called AE {called!r}")

    def refresh(self) -> None:
        """Publish this worker's live count (associations that ended leave it)."""
        with self.counter.lock:
            self.counter.publish(self._live())

    def _live(self) -> int:
        with self._lock:
            return sum(1 for a in list(self._admitted)
                       if a.is_alive() and not (a.is_released or a.is_aborted or a.is_rejected))

    def _reject(self, assoc: Association, rsd: tuple[int, int, int], label: str, why: str) -> None:
        self._rejected_here.add(assoc)
        COUNTERS.reject(label, _address(assoc),
                        f"association from {{peer}} rejected ({'/'.join(map(str, rsd))}): {why}")
        assoc.acse.send_reject(*rsd)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()  # as pynetdicom does: returns once the A-ASSOCIATE-RJ is out and the peer gone

    def _cap_send_pdu(self, assoc: Association) -> None:
        request = assoc.requestor.primitive
        cap_announced(request.user_information if request is not None else None,
                      self.settings.max_send_pdu)

    # DIMSE requests
    def node_of(self, assoc: Association) -> RemoteNode | None:
        with self._lock:
            return self._admitted.get(assoc)

    def refusal(self, assoc: Association, operation: str) -> str | None:
        """Why `operation` is refused on this association, or None when it is allowed."""
        node = self.node_of(assoc)
        if node is None or operation in node.operations:
            return None
        allowed = ", ".join(sorted(node.operations)) or "none"
        return f"{node.ae_title} may not {operation} (allowed: {allowed})"

    def guard(self, bindings: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The handler bindings with the C-STORE, C-FIND and C-GET handlers checking operations."""
        guarded: list[tuple[Any, ...]] = []
        for event, handler, *rest in bindings:
            operation = _OPERATION.get(event)
            if operation is not None:
                handler = self._guarded(operation, handler)
            guarded.append((event, handler, *rest))
        return guarded

    def _guarded(self, operation: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        policy = self

        if operation == "store":
            def store(event: Event, *args: Any) -> Any:
                reason = policy.refusal(event.assoc, operation)
                if reason is not None:
                    log.warning("C-STORE refused: %s", reason)
                    instance_refused("not-authorized")
                    return refused(reason)
                return handler(event, *args)
            return store

        def query(event: Event, *args: Any) -> Iterator[Any]:
            reason = policy.refusal(event.assoc, operation)
            if reason is None:
                yield from handler(event, *args)
                return
            log.warning("C-%s refused: %s", operation.upper(), reason)
            if operation == "get":
                yield 1  # pynetdicom's C-GET SCP wants a sub-operation count before any status
            yield refused(reason), None
        return query


def _address(assoc: Association) -> Any:
    info = assoc.requestor.address_info
    return (info.address, info.port) if info is not None else "a peer"


def _peer_of(sock: Any) -> Any:
    try:
        return sock.getpeername()
    except OSError:
        return "a peer"


def refused(reason: str) -> Dataset:
    ds = Dataset()
    ds.Status = NOT_AUTHORIZED
    ds.ErrorComment = reason[:64]
    return ds
