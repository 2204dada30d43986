"""The C-STORE sub-operations of a C-MOVE or C-GET, as pynetdicom's retrieve handlers yield them.

pynetdicom runs the retrieve protocol (Pending responses with remaining/completed/failed/warning
counts, the final Success / Warning 0xB000 / Failure 0xA702 with the Failed SOP Instance UID List,
Cancel 0xFE00 with counts) and sends each data set yielded with a Pending status over the store
association: on a new one to the destination for C-MOVE, on the requestor's own for C-GET. Here each
instance is read from the store and, when it goes in another syntax than its stored one (the node's
preferred syntax, or the best accepted one a codec produces when the stored one was refused:
`pacs.dimse.proposals`), transcoded (`pacs.dimse.sender.load_for`): one instance in memory at a time.
An instance no accepted syntax can be produced for fails its sub-operation alone. From a local store,
an instance the peer accepts as stored is streamed from its file (`StoredFile`, `stream_stored_files`).

A C-MOVE to a plain-TCP destination runs its sub-operations here instead (`move_sub_operations`): the
whole loop in the handler's first step, each stored object sent and its response read on the store
association's socket (`pacs.dimse.direct.StoreExchange`), each Pending C-MOVE-RSP written straight to the
requestor's socket (`PendingResponder`), the final response (Success, Warning 0xB000 or Failure 0xA702
with the Failed SOP Instance UID List, Cancel 0xFE00) sent through pynetdicom, whose own final response
for a loop it did not see is dropped. Instances the destination takes only transcoded, and anything
unusual, still go through pynetdicom's send_c_store within that loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import _config
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.dsutils import encode
from pynetdicom.status import STATUS_FAILURE, STATUS_SUCCESS, STATUS_WARNING, STORAGE_SERVICE_CLASS_STATUS

from pacs.catalog.records import InstanceRow
from pacs.dimse.direct import NOT_SENT, PendingResponder, StoreExchange, StoreStatus, send_stored_file
from pacs.dimse.sender import SendError, load_for, sending_syntax
from pacs.errors import PacsError
from pacs.monitoring.metrics import dimse_bytes
from pacs.storage.port import BlobStore

log = logging.getLogger("pacs.dimse")

PENDING = 0xFF00
CANCEL = 0xFE00
#: Failure: Out of resources, unable to perform sub-operations (the store association is gone).
UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702

Response = tuple[int | Dataset, Dataset | None]


def status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]  # LO
    return ds


def stored(store: BlobStore, key: str) -> BinaryIO | Path:
    """A stored instance to read: its file when the store is local, else its bytes (one instance)."""
    local = getattr(store, "path", None)
    if callable(local):
        return Path(local(key))
    return BytesIO(store.get(key))


class StoredFile(Dataset):
    """An instance the peer accepted in its stored syntax: what pynetdicom's retrieve loop needs (SOP
    Class and Instance UIDs) and the stored file, streamed as is by `stream_stored_files`."""

    def __init__(self, row: InstanceRow, path: Path) -> None:
        super().__init__()
        self.SOPClassUID = row.sop_class_uid
        self.SOPInstanceUID = row.sop_uid
        self.stored_path = path
        self.stored_syntax = row.transfer_syntax_uid


def stream_stored_files(assoc: Association, originator_aet: str | None = None) -> None:
    """Make the association's `send_c_store` send a StoredFile from its file, never decoded: framed into
    PDUs and written by the sending thread (`pacs.dimse.direct`), or where that does not apply (TLS)
    through pynetdicom's STORE_SEND_CHUNKED_DATASET path; and, for C-MOVE, name the AE that asked for the
    move as the Move Originator (pynetdicom would name this PACS)."""
    if getattr(assoc, "_streams_stored_files", False):
        return
    send = assoc.send_c_store

    def send_c_store(dataset: Any, msg_id: int = 1, priority: int = 2, originator_aet: str | None = None,
                     originator_id: int | None = None) -> Dataset:
        originator_aet = move_originator or originator_aet
        if isinstance(dataset, StoredFile):
            rsp = send_stored_file(
                assoc, dataset.stored_path, dataset.SOPClassUID, dataset.SOPInstanceUID,
                dataset.stored_syntax, msg_id=msg_id, priority=priority, originator_aet=originator_aet,
                originator_id=originator_id,
            )
            if rsp is not None:
                return rsp
            _config.STORE_SEND_CHUNKED_DATASET = True
            dataset = dataset.stored_path
        return send(dataset, msg_id=msg_id, priority=priority,
                    originator_aet=originator_aet, originator_id=originator_id)

    move_originator = originator_aet
    assoc.send_c_store = send_c_store  # type: ignore[method-assign]
    assoc._streams_stored_files = True  # type: ignore[attr-defined]


def unsendable(row: InstanceRow) -> Dataset:
    """A stand-in for an instance that cannot be sent: pynetdicom fails its sub-operation (no transfer
    syntax to send it in) and lists its SOP Instance UID as failed."""
    ds = Dataset()
    ds.SOPClassUID = row.sop_class_uid
    ds.SOPInstanceUID = row.sop_uid
    return ds


def sub_operations(
    rows: Sequence[InstanceRow],
    store: BlobStore,
    store_assoc: Callable[[], Association | None],
    is_cancelled: Callable[[], bool],
    preferred: str | None = None,
) -> Iterator[Response]:
    """(Pending, data set) for each instance; Cancel once a C-CANCEL arrived; a failure once the store
    association is gone (the instances not sent count as failed). `preferred`: the receiving node's
    preferred transfer syntax."""
    as_stored: dict[tuple[str, str], bool] = {}  # (SOP class, stored syntax): sent as stored
    for row in rows:
        if is_cancelled():
            yield CANCEL, None
            return
        assoc = store_assoc()
        if assoc is None or not assoc.is_established:
            yield status(UNABLE_TO_PERFORM_SUBOPERATIONS, "the store association is gone"), None
            return
        try:
            source = stored(store, row.key)
            accepted, stored_as = assoc.accepted_contexts, row.transfer_syntax_uid
            key = (row.sop_class_uid, stored_as)
            if key not in as_stored:
                as_stored[key] = sending_syntax(accepted, *key, preferred) == stored_as
            if isinstance(source, Path) and getattr(assoc, "_streams_stored_files", False) and as_stored[key]:
                ds: Dataset = StoredFile(row, source)
            else:
                ds = load_for(accepted, source, row.sop_class_uid, row.transfer_syntax_uid, preferred)
        except (SendError, PacsError, OSError) as exc:
            log.warning("C-STORE sub-operation for %s not attempted: %s", row.sop_uid, exc)
            ds = unsendable(row)
        yield PENDING, ds


SUCCESS = 0x0000
#: Warning: one or more sub-operations failed or gave a warning.
SUB_OPERATIONS_WARNING = 0xB000
C_MOVE_RSP = 0x8021


@dataclass
class Tally:
    """The sub-operations of one retrieve: what remains, what completed, failed, gave a warning."""

    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    def count(self, status: int | None, sop_uid: str) -> None:
        kind = STORAGE_SERVICE_CLASS_STATUS.get(status, (STATUS_FAILURE, ""))[0] if status is not None \
            else STATUS_FAILURE  # no response, or a status the Storage service does not define: failed
        self.remaining -= 1
        if kind == STATUS_SUCCESS:
            self.completed += 1
        elif kind == STATUS_WARNING:
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(sop_uid)


def move_sub_operations(
    event: Any, rows: Sequence[InstanceRow], store: BlobStore, store_assoc: Association,
    preferred: str | None = None,
) -> bool:
    """Run a C-MOVE's C-STORE sub-operations over `store_assoc` and send its final response; False (nothing
    done) when the store association is not one this loop sends on (TLS, or not event-driven): pynetdicom's
    loop (`sub_operations`) then runs. Called in the C-MOVE handler once pynetdicom has associated with the
    destination: the handler then ends without yielding, and pynetdicom's final response is dropped.

    While the destination takes an instance, this thread writes the previous instance's Pending response
    and reads the next instance's file: the next request goes as soon as a response is read."""
    exchange = StoreExchange.open(store_assoc)
    if exchange is None or not store_assoc.is_established:
        return False
    move = event.assoc
    req = event.request
    msg_id = int(req.MessageID)
    sop_class = str(req.AffectedSOPClassUID)
    responder = PendingResponder(move, int(event.context.context_id), C_MOVE_RSP, sop_class, msg_id)
    tally = Tally(len(rows))
    owed = False  # a Pending response for the last sub-operation counted, not yet written

    def pending() -> None:
        nonlocal owed
        if owed:
            responder.pending(tally.remaining, tally.completed, tally.failed, tally.warning)
            owed = False

    requests = move.dul.to_user_queue  # where an A-ABORT or A-RELEASE-RQ from the requestor lands
    final: tuple[int, str] | None = None
    sender = _Sender(exchange, store_assoc, store, str(move.requestor.ae_title).strip(), msg_id, preferred)
    try:
        item = sender.prepare(rows[0], 0) if rows else None
        for n, row in enumerate(rows):
            assert item is not None and item.row is row
            if not move.is_established or (
                    requests.queue and (move.acse.is_aborted() or move.acse.is_release_requested())):
                log.info("C-MOVE: the requestor went away; %d sub-operations not attempted", tally.remaining)
                return _end(store_assoc, exchange)
            if event.is_cancelled:
                pending()
                final = CANCEL, ""
                break
            if not store_assoc.is_established or exchange.ended:
                pending()
                final = UNABLE_TO_PERFORM_SUBOPERATIONS, "the store association is gone"
                for left in rows[n:]:  # never attempted: failed too
                    tally.count(None, left.sop_uid)
                break
            outcome = sender.write(item)
            pending()  # the previous one's, while the destination takes this one
            later = sender.prepare(rows[n + 1], n + 1) if n + 1 < len(rows) else None
            result = sender.outcome(item, outcome)
            tally.count(result, row.sop_uid)
            if result == SUCCESS:
                dimse_bytes("C-MOVE", "sent", row.size)  # metrics: what went to the destination
            owed = True
            item = later
        else:
            pending()
    finally:
        exchange.close()
    store_assoc.release()
    if not move.is_established:
        return True
    if final is None:
        final = (SUCCESS if not (tally.failed or tally.warning) else UNABLE_TO_PERFORM_SUBOPERATIONS
                 if tally.failed == len(rows) else SUB_OPERATIONS_WARNING), sender.reason
    _send_final(event, tally, *final)
    return True


def _end(store_assoc: Association, exchange: StoreExchange) -> bool:
    exchange.close()
    store_assoc.release()
    return True


@dataclass
class _Item:
    """One sub-operation, prepared: the object's source, and its request as PDUs when it goes directly
    (else None: pynetdicom sends it), or why it cannot be attempted."""

    row: InstanceRow
    msg_id: int
    source: Path | str | bytes | None = None
    frames: list[Any] | None = None
    error: str = ""


#: `_Sender.write`: not written here (pynetdicom's turn, or nothing to send).
_LATER = StoreStatus(None, "later")


class _Sender:
    """The sub-operations: a stored object goes to the destination directly when it goes as stored
    (`StoreExchange`), else (transcoded, or an unusual object) through pynetdicom's send_c_store; each
    yields the C-STORE status (None: failed without one)."""

    def __init__(self, exchange: StoreExchange, assoc: Association, store: BlobStore, originator: str,
                 originator_id: int, preferred: str | None = None) -> None:
        self.exchange = exchange
        self.assoc = assoc
        self.store = store
        self.originator = originator
        self.originator_id = originator_id
        self.local = getattr(store, "path", None)
        self.accepted = assoc.accepted_contexts
        self.preferred = preferred
        #: Why the first sub-operation that could not be attempted was not (the final Error Comment).
        self.reason = ""
        self._syntax: dict[tuple[str, str], str | None] = {}
        self._dirs: dict[str, str] = {}

    def _as_stored(self, row: InstanceRow) -> bool:
        key = (row.sop_class_uid, row.transfer_syntax_uid)
        if key not in self._syntax:
            self._syntax[key] = sending_syntax(self.accepted, *key, self.preferred)
        return self._syntax[key] == row.transfer_syntax_uid

    def _path(self, key: str) -> Path | str:
        """The file of a stored object: the store's `path` for the first of each directory, then joined
        here (a series' instances share one; the store's path parsing costs more than a send)."""
        folder, _, name = key.rpartition("/")
        known = self._dirs.get(folder)
        if known is not None and name not in ("", ".", ".."):
            return known + name
        assert callable(self.local)
        full = os.fspath(self.local(key))
        if full.endswith("/" + name) and name not in ("", ".", ".."):
            self._dirs[folder] = full[: len(full) - len(name)]
        return Path(full)

    def prepare(self, row: InstanceRow, n: int) -> _Item:
        """The `n`th sub-operation's object read, and framed when it goes directly (its file read into
        the exchange's buffer: prepared after the previous one was written)."""
        msg_id = self.originator_id + n + 1  # as pynetdicom numbers them
        item = _Item(row, msg_id if msg_id <= 0xFFFF else msg_id - 0xFFFF)
        try:
            item.source = self._path(row.key) if callable(self.local) else self.store.get(row.key)
            if self._as_stored(row):
                item.frames = self.exchange.frames(
                    item.source, row.sop_class_uid, row.sop_uid, row.transfer_syntax_uid, msg_id=item.msg_id,
                    originator_aet=self.originator, originator_id=self.originator_id)
        except (PacsError, OSError) as exc:
            item.error = str(exc)
        return item

    def write(self, item: _Item) -> StoreStatus | None:
        """Send the prepared request when it goes directly: None when it went (the response is for
        `outcome` to read), else the outcome without a response, or _LATER."""
        if item.frames is None or item.error:
            return _LATER
        outcome = self.exchange.write(item.frames)
        return _LATER if outcome is NOT_SENT else outcome

    def outcome(self, item: _Item, written: StoreStatus | None) -> int | None:
        """The sub-operation's status: the response to what `write` sent, or (_LATER) the object sent
        through pynetdicom now."""
        row = item.row
        if written is None:
            result = self.exchange.read()
        elif written is not _LATER:
            result = written
        else:
            return self._via_pynetdicom(item)
        if result.status != SUCCESS:
            why = "no response" if result.status is None else f"status 0x{result.status:04X}"
            log.warning("C-STORE sub-operation for %s: %s%s", row.sop_uid, why,
                        f" ({result.comment})" if result.comment else "")
        return result.status

    def _via_pynetdicom(self, item: _Item) -> int | None:
        row = item.row
        if item.error or item.source is None:
            return self._not_attempted(row, item.error)
        self.exchange.give_back()  # pynetdicom's turn: its DUL reads the socket again
        source = Path(item.source) if isinstance(item.source, str) else item.source
        try:
            if self._as_stored(row) and isinstance(source, Path):
                ds: Dataset = StoredFile(row, source)  # streamed by `stream_stored_files`
            else:
                data = source if isinstance(source, Path) else BytesIO(source)
                ds = load_for(self.accepted, data, row.sop_class_uid, row.transfer_syntax_uid, self.preferred)
        except (SendError, OSError) as exc:
            return self._not_attempted(row, str(exc))
        try:
            rsp = self.assoc.send_c_store(ds, msg_id=item.msg_id, originator_aet=self.originator,
                                          originator_id=self.originator_id)
            return int(rsp.Status)
        except Exception as exc:  # as pynetdicom's loop: an exception (or no status) is a failure
            log.warning("C-STORE sub-operation for %s failed: %s", row.sop_uid, exc)
            return None


    def _not_attempted(self, row: InstanceRow, why: str) -> int | None:
        log.warning("C-STORE sub-operation for %s not attempted: %s", row.sop_uid, why)
        if not self.reason:
            self.reason = why
        return None


def _send_final(event: Any, tally: Tally, code: int, comment: str) -> None:
    """The C-MOVE's final response through pynetdicom, then pynetdicom's own (a Success with no counts,
    for a loop it did not see) dropped."""
    req = event.request
    rsp = C_MOVE()
    rsp.MessageIDBeingRespondedTo = req.MessageID
    rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
    rsp.Status = code
    if comment:
        rsp.ErrorComment = comment[:64]  # type: ignore[assignment]
    if code == CANCEL:
        rsp.NumberOfRemainingSuboperations = tally.remaining
    rsp.NumberOfCompletedSuboperations = tally.completed
    rsp.NumberOfFailedSuboperations = tally.failed
    rsp.NumberOfWarningSuboperations = tally.warning
    if code != SUCCESS:
        ts = UID(str(event.context.transfer_syntax))
        identifier = Dataset()
        identifier.FailedSOPInstanceUIDList = tally.failed_uids
        encoded = encode(identifier, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
        rsp.Identifier = BytesIO(encoded or b"")
    dimse = event.assoc.dimse
    dimse.send_msg(rsp, int(event.context.context_id))
    _skip_next_final(dimse, int(req.MessageID))


def _skip_next_final(dimse: Any, msg_id: int) -> None:
    send = dimse.send_msg

    def send_msg(primitive: Any, context_id: int) -> None:
        dimse.send_msg = send  # one shot
        if not (isinstance(primitive, C_MOVE) and primitive.MessageIDBeingRespondedTo == msg_id
                and primitive.Status == SUCCESS):
            send(primitive, context_id)

    dimse.send_msg = send_msg
