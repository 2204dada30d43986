"""The gateway's Application Entity: contexts for every storage SOP class and transfer syntax."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, cast

from pacs.dimse.reactor import EventAE, EventRequestHandler
from pydicom.uid import (
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000MCLossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE, _config
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import _STORAGE_CLASSES, Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from gateway import commitment, find, get, move, mpps

#: pynetdicom accepts, per presentation context, the first of these that the sender proposed. So
#: lossless compressed syntaxes come first (a compressed image stays as the modality holds it), then
#: Explicit VR LE (keeps VRs), Implicit, Deflated; Implicit before Big Endian, or dcmtk's default
#: context [Big Endian, Implicit] would byte-swap native images. Lossy ones come after, never chosen
#: over a lossless one.
_PREFERRED = [
    JPEGLSLossless, RLELossless, JPEG2000Lossless, HTJ2KLossless, HTJ2KLosslessRPCL, JPEGLosslessSV1,
    JPEGLossless, JPEG2000MCLossless,
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
]
#: Every transfer syntax pydicom knows, native and compressed (JPEG, JPEG-LS, JPEG 2000, HTJ2K,
#: RLE, MPEG-2/-4, HEVC, deflated, big endian): objects are stored as received.
TRANSFER_SYNTAXES = _PREFERRED + [ts for ts in AllTransferSyntaxes if ts not in _PREFERRED]


def make_ae(ae_title: str, *, max_pdu: int = 1 << 20, spool: bool = False) -> AE:
    """The AE; `spool` makes pynetdicom write each received data set to a file (a process-wide
    pynetdicom setting) instead of assembling it in memory."""
    _config.LOG_HANDLER_LEVEL = "none"  # no per-PDU logging on the hot path
    _config.STORE_RECV_CHUNKED_DATASET = spool
    ae = EventAE(ae_title=ae_title)  # the associations it requests (C-MOVE) are event-driven too
    ae.require_called_aet = True  # an unknown called AE title is rejected at association
    ae.maximum_pdu_size = max_pdu
    ae.maximum_associations = 64
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.add_supported_context(Verification)
    for uid in _STORAGE_CLASSES.values():
        # both roles accepted when a requestor proposes SCP/SCU role selection: C-GET sends back on it
        ae.add_supported_context(uid, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    find.add_contexts(ae)
    move.add_contexts(ae)
    get.add_contexts(ae)
    mpps.add_contexts(ae)
    commitment.add_contexts(ae)
    return ae


class SharedContexts(list[PresentationContext]):
    """The server's supported contexts, shared by all its associations.

    pynetdicom deep-copies them for every association (26 ms of CPU under the GIL for 171 SOP
    classes x 39 transfer syntaxes, measured here); negotiation only reads them, so one list is shared.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        return list(self)


#: How long a worker holding more connections than another waits before accept() (seconds).
BALANCE_DELAY = 0.002


class GatewayServer(ThreadedAssociationServer):
    """An association server that may serve a listening socket inherited from a parent process
    (pre-forked workers share the DICOM port), sets TCP_NODELAY on every connection, and shares
    its presentation contexts between associations."""

    inherited_socket: socket.socket | None = None
    #: The workers' shared counts (gateway.policy.AssociationCounter); None: a single server.
    counter: Any = None
    #: What each accepted connection goes through (gateway.policy.ConnectionGuard: PDU limits,
    #: timeouts, TLS): `wrap(sock)` here, `ready(sock)` (the TLS handshake) in its own thread.
    guard: Any = None
    #: Stopping does not wait for connection threads (a TLS handshake may last the network timeout);
    #: the worker waits for, then aborts, the associations themselves.
    block_on_close = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("request_handler", EventRequestHandler)  # event-driven reactors
        super().__init__(*args, **kwargs)
        self.contexts = SharedContexts(self.contexts)

    def server_bind(self) -> None:
        if self.inherited_socket is None:
            super().server_bind()
            return
        assert self.socket is not None
        self.socket.close()
        self.socket = self.inherited_socket
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self.inherited_socket is None:
            super().server_activate()

    def get_request(self) -> Any:
        if self.counter is not None and self.counter.busier():
            # Workers share the listening socket and race for accept(): one that already holds more
            # connections than another lets it win this one (its accept() then fails with EAGAIN),
            # so parallel associations spread over the workers' GILs instead of piling onto one.
            time.sleep(BALANCE_DELAY)
        client, address = super().get_request()
        if self.counter is not None:
            self.counter.connected(+1)
        client.setblocking(True)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.guard is not None:
            client = self.guard.wrap(client)
        return client, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if self.guard is not None and not self.guard.ready(request):
                self.shutdown_request(request)
                return
            super().process_request_thread(request, client_address)
        finally:
            if self.counter is not None:
                self.counter.connected(-1)


def start_server(
    ae: AE, address: tuple[str, int], evt_handlers: list[Any], *, sock: socket.socket | None = None,
    guard: Any = None, counter: Any = None,
) -> GatewayServer:
    """Serve in a background thread (like `AE.start_server(block=False)`) with a GatewayServer,
    on `address` or on an already listening `sock`, each connection through `guard`."""
    GatewayServer.inherited_socket = sock
    server = ae.make_server(address, evt_handlers=evt_handlers, server_class=GatewayServer)
    server = cast(GatewayServer, server)
    server.guard = guard
    server.counter = counter
    ae._servers.append(server)  # as ae.start_server does: server.shutdown() removes it
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="gateway-acceptor", daemon=True
    ).start()
    return server
