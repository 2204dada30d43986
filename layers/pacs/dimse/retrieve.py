"""The C-STORE sub-operations of a C-MOVE or C-GET, as pynetdicom's retrieve handlers yield them.

pynetdicom runs the retrieve protocol (Pending responses with remaining/completed/failed/warning
counts, the final Success / Warning 0xB000 / Failure 0xA702 with the Failed SOP Instance UID List,
Cancel 0xFE00 with counts) and sends each data set yielded with a Pending status over the store
association: on a new one to the destination for C-MOVE, on the requestor's own for C-GET. Here each
instance is read from the store and, when the peer did not accept its stored syntax, transcoded
(`pacs.dimse.sender.load_for`): one instance in memory at a time. From a local store, an instance the
peer accepts as stored is streamed from its file (`StoredFile`, `stream_stored_files`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataset import Dataset
from pynetdicom import _config
from pynetdicom.association import Association

from pacs.catalog.records import InstanceRow
from pacs.dimse.direct import send_stored_file
from pacs.dimse.sender import SendError, load_for, sending_syntax
from pacs.errors import PacsError
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
) -> Iterator[Response]:
    """(Pending, data set) for each instance; Cancel once a C-CANCEL arrived; a failure once the store
    association is gone (the instances not sent count as failed)."""
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
            if isinstance(source, Path) and getattr(assoc, "_streams_stored_files", False) \
                    and sending_syntax(accepted, row.sop_class_uid, stored_as) == stored_as:
                ds: Dataset = StoredFile(row, source)
            else:
                ds = load_for(accepted, source, row.sop_class_uid, row.transfer_syntax_uid)
        except (SendError, PacsError, OSError) as exc:
            log.warning("C-STORE sub-operation for %s not attempted: %s", row.sop_uid, exc)
            ds = unsendable(row)
        yield PENDING, ds
