"""The C-STORE SCU side: sending stored instances or local files to a remote node.

Used by C-MOVE (sub-operations on a new association), C-GET (on the requestor's association), `pacs
store`, and later routing. The contexts proposed and the syntax each instance goes in are
`pacs.dimse.proposals`' business: per SOP class the stored syntaxes, the node's preferred syntax and the
alternatives a codec can produce. An instance goes as stored when the peer accepted that syntax and the
node prefers nothing else it accepted (a local file is then streamed in PDU-sized chunks, never
decoded); otherwise it is read, one instance at a time, and transcoded (`pacs.codecs.transcode`) to the
best accepted syntax a codec produces for it — the next one when an encoder refuses this instance.
TCP_NODELAY is set on the requestor's socket as soon as it connects.

    with StoreSender(node, "PACS", [(sop_class, syntax), ...], store=backend.store) as sender:
        status = sender.send("default/studies/.../x.dcm")   # a key of the store, or a Path
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID
from pynetdicom import _config, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext

from pacs.catalog.nodes import RemoteNode
from pacs.codecs import TranscodeError, transcode
from pacs.dimse.proposals import MAX_CONTEXTS, NATIVE, candidates, proposed_contexts, sending_syntax
from pacs.dimse.reactor import EventAE
from pacs.dimse.tls import client_context
from pacs.storage.port import BlobStore

__all__ = [
    "MAX_CONTEXTS",
    "NATIVE",
    "SendError",
    "StoreSender",
    "load_for",
    "prepare_requestor",
    "presentation_of",
    "proposed_contexts",
    "read_header",
    "sending_syntax",
]


class SendError(Exception):
    """The instance was not sent: no acceptable presentation context, unreadable or untranscodable
    data, or the association is gone."""


def set_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN handler: TCP_NODELAY on the socket of a requested association (small DIMSE
    messages otherwise wait for the peer's delayed ACK)."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def keep_responses(assoc: Association) -> None:
    """Guard a requested association against pynetdicom's pause race: its reactor may pass its checkpoint
    just before an SCU call pauses it, then take that call's response off the queue and drop it
    ("Received unexpected C-STORE service message"), leaving the call to wait for the DIMSE timeout. A
    response the reactor takes is put back for the call waiting for it (this side sends requests only)."""
    serve = assoc._serve_request

    def serve_request(msg: Any, context_id: int) -> None:
        if msg.is_valid_response:
            assoc.dimse.msg_queue.put((context_id, msg))
            time.sleep(0.001)  # let the waiting call take it before the reactor looks again
            return
        serve(msg, context_id)

    assoc._serve_request = serve_request  # type: ignore[method-assign]


def prepare_requestor(event: Event) -> None:
    """EVT_CONN_OPEN handler of the associations this PACS requests: TCP_NODELAY, responses kept."""
    set_nodelay(event)
    keep_responses(event.assoc)


def read_header(path: Path) -> tuple[str, str, str]:
    """(SOP Class UID, SOP Instance UID, Transfer Syntax UID) of a Part 10 file, from its meta."""
    try:
        meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
        return str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID), \
            str(meta.TransferSyntaxUID)
    except (InvalidDicomError, AttributeError, OSError) as exc:
        raise SendError(f"{path}: not a DICOM Part 10 file ({exc})") from exc


def load_for(
    accepted: Sequence[PresentationContext], data: BinaryIO | Path, sop_class: str, stored: str,
    preferred: str | None = None,
) -> Dataset:
    """The instance read from `data`, transcoded when it goes in another syntax than its stored one:
    the first of `proposals.candidates` a codec produces for it. SendError naming why when none does
    (no accepted context, or each accepted syntax refused by its codec for this instance)."""
    targets = candidates(accepted, sop_class, stored, preferred)
    if not targets:
        raise SendError(f"the peer accepted no context for SOP class {sop_class} that "
                        f"{UID(stored).name} can be sent in")
    failures: list[str] = []
    for target in targets:
        if not isinstance(data, Path):
            data.seek(0)
        try:
            ds = dcmread(data)
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise SendError(f"cannot read the stored instance: {exc}") from exc
        if target == stored:
            return ds
        try:
            return transcode(ds, target, new_uid=False)  # the same instance in another syntax (PS3.5 8.2)
        except TranscodeError as exc:
            detail = " ".join(str(exc).split())  # one line: it goes to logs, CLI lines, Error Comments
            failures.append(f"{UID(target).keyword or target} ({detail})")
    raise SendError("cannot transcode to " + ", ".join(failures))


class StoreSender:
    """An association to `node` sending instances one by one (a context manager).

    `presentation`: the (SOP class, transfer syntax) pairs of what will be sent, for the proposal;
    the node's preferred syntax (`RemoteNode.preferred_syntax`) is proposed and used when accepted.
    `send(source)` takes a key of `store` or a local Path and returns the peer's C-STORE status;
    SendError when the instance could not be sent (the association stays usable unless it is gone).
    """

    def __init__(
        self,
        node: RemoteNode,
        calling_ae: str,
        presentation: Iterable[tuple[str, str]],
        *,
        store: BlobStore | None = None,
        max_pdu: int = 1 << 20,
        timeout: float = 60.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.node = node
        self.store = store
        self.preferred = node.preferred_syntax or None
        self.contexts = proposed_contexts(presentation, self.preferred)
        self.ae = EventAE(ae_title=calling_ae)  # event-driven reactors, TCP_NODELAY
        self.ae.acse_timeout = timeout
        self.ae.dimse_timeout = timeout
        self.ae.network_timeout = timeout
        self.ae.connection_timeout = timeout
        self.max_pdu = max_pdu
        self.tls = tls if tls is not None or not node.tls else client_context()  # the system's CAs
        self.assoc: Association | None = None
        #: The last C-STORE response (its Error Comment, Offending Element…), None before the first.
        self.response: Dataset | None = None

    def __enter__(self) -> StoreSender:
        _config.LOG_HANDLER_LEVEL = "none"
        tls_args = (self.tls, self.node.host) if self.tls is not None else None
        assoc = self.ae.associate(
            self.node.host, self.node.port, self.contexts, ae_title=self.node.ae_title,
            max_pdu=self.max_pdu, tls_args=tls_args, evt_handlers=[(evt.EVT_CONN_OPEN, prepare_requestor)],
        )
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
            raise SendError(f"association with {self.node.ae_title}@{self.node.host}:{self.node.port} {why}")
        self.assoc = assoc
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None
        self.ae.shutdown()

    @property
    def established(self) -> bool:
        return self.assoc is not None and self.assoc.is_established

    def send(self, source: str | Path) -> int:
        """Send one instance (a key of the store, or a Part 10 file); the peer's C-STORE status."""
        if self.assoc is None or not self.assoc.is_established:
            raise SendError(f"the association with {self.node.ae_title} is gone")
        path = Path(source) if isinstance(source, Path) else self._local_path(source)
        if path is not None:
            sop_class, _, stored = read_header(path)
            accepted = self.assoc.accepted_contexts
            if sending_syntax(accepted, sop_class, stored, self.preferred) == stored:
                return self._send(path)  # streamed from the file as stored, never decoded
            return self._send(load_for(accepted, path, sop_class, stored, self.preferred))
        assert self.store is not None and isinstance(source, str)
        stream = BytesIO(self.store.get(source))  # one instance in memory, read in one request
        try:
            meta = dcmread(stream, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
            sop_class, stored = str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)
        except (InvalidDicomError, AttributeError, OSError) as exc:
            raise SendError(f"{source}: not a DICOM Part 10 object ({exc})") from exc
        stream.seek(0)
        return self._send(load_for(self.assoc.accepted_contexts, stream, sop_class, stored, self.preferred))

    def _local_path(self, key: str) -> Path | None:
        """The file behind a store key when the store is a local filesystem (sent without a copy)."""
        if self.store is None:
            raise SendError(f"{key!r}: no store to read it from")
        local = getattr(self.store, "path", None)
        return Path(local(key)) if callable(local) else None

    def _send(self, what: Dataset | Path) -> int:
        assert self.assoc is not None
        if isinstance(what, Path):
            # pynetdicom's documented switch: a dataset given as a path is sent from the file in chunks,
            # which needs the exact stored syntax to be accepted (checked by the caller).
            _config.STORE_SEND_CHUNKED_DATASET = True
        try:
            rsp = self.assoc.send_c_store(what)
        except (ValueError, AttributeError, RuntimeError) as exc:
            raise SendError(str(exc)) from exc
        self.response = rsp if isinstance(rsp, Dataset) else None
        status = rsp.get("Status") if isinstance(rsp, Dataset) else None
        if status is None:
            raise SendError(f"no C-STORE response from {self.node.ae_title} (timeout or association lost)")
        return int(status)


def presentation_of(paths: Iterable[Path]) -> list[tuple[str, str]]:
    """The (SOP class, transfer syntax) pairs of local files, for a StoreSender's proposal."""
    pairs: dict[tuple[str, str], None] = {}
    for p in paths:
        sop_class, _, syntax = read_header(p)
        pairs[(sop_class, syntax)] = None
    return list(pairs)
