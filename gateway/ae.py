"""The gateway's Application Entity: contexts for every storage SOP class (retired ones included) and
transfer syntax, and, when configured, for SOP classes the standard does not define."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, BinaryIO, cast

from pacs.dicom.uids import STORAGE_SOP_CLASSES, is_unknown_sop_class
from pacs.dimse.reactor import EventAE, EventRequestHandler
from pydicom.uid import (
    UID,
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
from pynetdicom import (
    AE,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    _config,
    dimse_messages,
)
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from gateway import commitment, find, get, move, mpps
from gateway.lobby import Lobby
from gateway.spool import TRACKER

log = logging.getLogger("gateway")

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
    if spool:
        fast_spool()
    ae = EventAE(ae_title=ae_title)  # the associations it requests (C-MOVE) are event-driven too
    ae.require_called_aet = True  # an unknown called AE title is rejected at association
    ae.maximum_pdu_size = max_pdu
    ae.maximum_associations = 64
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.add_supported_context(Verification)
    for uid in sorted(STORAGE_SOP_CLASSES):  # the standard's, retired ones included
        # both roles accepted when a requestor proposes SCP/SCU role selection: C-GET sends back on it
        ae.add_supported_context(uid, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    find.add_contexts(ae)
    move.add_contexts(ae)
    get.add_contexts(ae)
    mpps.add_contexts(ae)
    commitment.add_contexts(ae)
    return ae


@lru_cache(maxsize=1024)
def storage_context(uid: str) -> PresentationContext:
    """A supported storage context for `uid`, as `make_ae` adds for the standard's classes."""
    cx = build_context(uid, list[str | UID](TRANSFER_SYNTAXES))
    cx.scu_role = cx.scp_role = True
    return cx


def accept_unknown_sop_classes(event: Event) -> None:
    """EVT_REQUESTED (the A-ASSOCIATE-RQ is in, negotiation not begun): each proposed abstract syntax
    the standard does not define (`is_unknown_sop_class`: a private SOP class, one newer than this
    release) becomes a storage context this association supports, so it is accepted, and its
    C-STOREs stored, like the standard's (setting `accept_unknown_sop_classes`)."""
    assoc = event.assoc
    request = assoc.requestor.primitive
    if request is None:
        return
    supported = assoc.acceptor.supported_contexts  # this association's own list (`SharedContexts`)
    added: set[str] = set()
    for proposed in request.presentation_context_definition_list:
        uid = str(proposed.abstract_syntax)
        if uid not in added and is_unknown_sop_class(uid):
            supported.append(storage_context(uid))
            added.add(uid)


# --- the spooled data set's file: named and headed without tempfile's and pydicom's machinery ---------


class SpoolFile:
    """What pynetdicom spools a received data set into (it wants `NamedTemporaryFile(delete=False)`:
    `name`, `file` (it calls `file.flush()`), `write`, `close`; it removes the file itself after the
    C-STORE handler). Named `{pid}-{n}.dcm` in the temporary directory (the gateway's spool
    directory), created exclusively.

    A spool that cannot be created or written (disk full, no descriptors) never raises: the first
    error is kept in `error`, later writes are dropped, and the C-STORE is answered 0xA700 with it
    (`gateway.handlers`, `gateway.store_fast`). An exception would reach pynetdicom's DUL thread,
    which aborts the association and loses every request queued behind this one."""

    _numbers = itertools.count()

    def __init__(self, *_args: Any, suffix: str = ".dcm", **_kwargs: Any) -> None:
        directory = tempfile.gettempdir()
        self.error: OSError | None = None
        self._file: BinaryIO | None = None
        self.file = self  # pynetdicom flushes `file` after each write
        while True:
            self.name = os.path.join(directory, f"{os.getpid()}-{next(self._numbers)}{suffix}")
            try:
                fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileExistsError:  # left over by an earlier process with the same pid
                continue
            except OSError as exc:
                self.error = exc
                return
        TRACKER.opened(self.name)  # removed when its association ends, if still there
        try:
            self._file = open(fd, "wb")  # noqa: SIM115  # closed by `close`
        except OSError as exc:
            os.close(fd)
            self._fail(exc)

    def write(self, data: Any) -> int:
        if self._file is not None:
            try:
                return self._file.write(data)
            except OSError as exc:
                self._fail(exc)
        return len(data)

    def flush(self) -> None:
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError as exc:
                self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        if self.error is None:
            log.error("cannot spool a received data set to %s: %s", self.name, exc)
            self.error = exc
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    @property
    def failure(self) -> str | None:
        """The reason the data set could not be spooled (an Error Comment), or None."""
        if self.error is None:
            return None
        return f"cannot spool the data set: {self.error.strerror or self.error}"


def _uid_value(uid: str) -> bytes:
    raw = uid.encode("ascii", "replace")  # a non-ASCII UID is refused by ingest, not by an exception
    return raw + b"\0" * (len(raw) & 1)


def _short(tag: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _ae_value(ae_title: str) -> bytes:
    raw = ae_title.strip().encode("ascii", "replace")
    return raw + b" " * (len(raw) & 1)


def file_meta_bytes(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str,
                    calling_ae: str = "") -> bytes:
    """The file meta information group pynetdicom writes before a spooled data set (through pydicom's
    `create_file_meta` and `write_file_meta_info`), byte for byte, encoded here; with `calling_ae`,
    (0002,0016) Source Application Entity Title too (who sent it, as dcm4chee-arc records it), as
    pydicom writes that element."""
    version = PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
    source = _ae_value(calling_ae)
    body = b"".join((
        struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",
        _short(0x00020002, b"UI", _uid_value(sop_class_uid)),
        _short(0x00020003, b"UI", _uid_value(sop_instance_uid)),
        _short(0x00020010, b"UI", _uid_value(transfer_syntax)),
        _short(0x00020012, b"UI", _uid_value(PYNETDICOM_IMPLEMENTATION_UID)),
        _short(0x00020013, b"SH", version + b" " * (len(version) & 1)),
        _short(0x00020016, b"AE", source) if source else b"",
    ))
    return _short(0x00020000, b"UL", struct.pack("<I", len(body))) + body


#: The association whose DIMSE message pynetdicom is decoding in this thread (`_decode_msg`): the
#: spooled file's meta names its calling AE title.
_DECODING = threading.local()


def _create_file_meta(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    assoc = getattr(_DECODING, "assoc", None)
    calling = str(getattr(assoc.requestor, "ae_title", "") or "") if assoc is not None else ""
    return file_meta_bytes(str(sop_class_uid), str(sop_instance_uid), str(transfer_syntax), calling)


_PYNETDICOM_DECODE_MSG = dimse_messages.DIMSEMessage.decode_msg


def _decode_msg(self: Any, primitive: Any, assoc: Any = None) -> bool:
    """pynetdicom's `DIMSEMessage.decode_msg`, with `assoc` known to `_create_file_meta` meanwhile."""
    _DECODING.assoc = assoc
    try:
        return bool(_PYNETDICOM_DECODE_MSG(self, primitive, assoc))
    finally:
        _DECODING.assoc = None


def _write_file_meta_info(fp: Any, file_meta: Any, *args: Any, **kwargs: Any) -> None:
    if isinstance(file_meta, bytes):
        fp.write(file_meta)
    else:  # not ours: pydicom's own
        _PYDICOM_WRITE_FILE_META_INFO(fp, file_meta, *args, **kwargs)


_PYDICOM_WRITE_FILE_META_INFO = dimse_messages.write_file_meta_info
_PYNETDICOM_DECODE = dimse_messages.decode


def _decode_command_set(data: Any, is_implicit: bool, is_little: bool) -> Any:
    """pynetdicom's command set decoding, with the Affected SOP Class and Instance UIDs of a C-STORE-RQ
    made empty when absent: pynetdicom reads them to head the spooled file and would fail the whole
    association without them; empty, the request is answered with a failure
    (`pacs.dimse.refusals`)."""
    command = _PYNETDICOM_DECODE(data, is_implicit, is_little)
    if command.get("CommandField") == 0x0001:
        for keyword in ("AffectedSOPClassUID", "AffectedSOPInstanceUID"):
            if keyword not in command:
                setattr(command, keyword, "")
    return command


def fast_spool() -> None:
    """pynetdicom's C-STORE spooling (`STORE_RECV_CHUNKED_DATASET`) without `NamedTemporaryFile`
    (random names, a wrapper per file) and without building and writing the file meta through pydicom
    datasets (a fifth of a C-STORE's CPU in the gateway, measured): the same file, byte for byte, with
    the calling AE title as (0002,0016) Source Application Entity Title (`_decode_msg`); a C-STORE-RQ
    without its SOP Class or Instance UID is answered, not fatal (`_decode_command_set`).
    Process-wide, like pynetdicom's `_config` (its names in `pynetdicom.dimse_messages`, used there
    only to spool a received C-STORE data set)."""
    dimse_messages.NamedTemporaryFile = SpoolFile  # type: ignore[attr-defined,assignment]
    dimse_messages.create_file_meta = _create_file_meta  # type: ignore[attr-defined,assignment]
    dimse_messages.write_file_meta_info = _write_file_meta_info  # type: ignore[attr-defined]
    dimse_messages.decode = _decode_command_set  # type: ignore[assignment]  # command sets only
    dimse_messages.DIMSEMessage.decode_msg = _decode_msg  # type: ignore[method-assign]


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
    #: This server serves an inherited socket (shared with other processes).
    inherits = False
    #: The listen backlog (socketserver's default is 5): a burst of connections (a port scan, many
    #: modalities at once) waits in it rather than having its SYNs dropped (a retry 1 s later).
    request_queue_size = 1024
    #: The workers' shared counts (gateway.policy.AssociationCounter); None: a single server.
    counter: Any = None
    #: What each accepted connection goes through (gateway.policy.ConnectionGuard: PDU limits,
    #: timeouts, TLS): `wrap(sock)` here, `ready(sock)` (the TLS handshake) in its own thread.
    guard: Any = None
    #: Each new association's `EventDUL.pdata_hook` comes from this (None: pynetdicom's path alone);
    #: `gateway.server` sets the C-STORE and C-FIND fast paths here.
    pdata_hook_for: Callable[[Any], Callable[[bytes], bool] | None] | None = None
    #: Accepted connections wait here for their first byte (`gateway.lobby.Lobby`; `start_server`
    #: makes one when a guard is given); None: each connection gets its thread at once.
    lobby: Lobby | None = None
    #: Stopping does not wait for connection threads (a TLS handshake may last the network timeout);
    #: the worker waits for, then aborts, the associations themselves.
    block_on_close = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("request_handler", EventRequestHandler)  # event-driven reactors
        super().__init__(*args, **kwargs)
        self.contexts = SharedContexts(self.contexts)

    def server_bind(self) -> None:
        self.inherits = self.inherited_socket is not None
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
        client.setblocking(True)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def process_request(self, request: Any, client_address: Any) -> None:
        """Through the lobby (`gateway.lobby`: no thread until the peer sends its first byte), when
        there is one."""
        if self.lobby is not None:
            self.lobby.enter(request, client_address)
        else:
            self.admit(request, client_address)

    def admit(self, request: Any, client_address: Any) -> None:
        """Serve a connection: `guard.wrap` it, then its association in a thread of its own."""
        if self.counter is not None:
            self.counter.connected(+1)
        try:
            if self.guard is not None:
                request = self.guard.wrap(request)
            super().process_request(request, client_address)
        except BaseException:
            if self.counter is not None:
                self.counter.connected(-1)
            raise

    def server_close(self) -> None:
        if self.lobby is not None:
            self.lobby.stop()
        if self.inherits:  # closed here only: a shutdown() would stop the other workers' listening too
            assert self.socket is not None
            self.socket.close()
        else:
            super().server_close()

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
    if guard is not None:
        server.lobby = Lobby(server.admit, timeout=guard.silent_timeout, per_source=guard.per_source)
    ae._servers.append(server)  # as ae.start_server does: server.shutdown() removes it
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="gateway-acceptor", daemon=True
    ).start()
    return server
