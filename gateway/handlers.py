"""Gateway event handlers: (event, handler, args) as pynetdicom binds them. They call services only."""

from __future__ import annotations

import logging
from pathlib import Path

from pacs.dimse.direct import fast_responses
from pacs.errors import PacsError
from pacs.services.ingest import IngestService
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.events import Event

from gateway import commitment, find, get, move, mpps, status
from gateway.ae import accept_unknown_sop_classes
from gateway.context import GatewayContext

log = logging.getLogger("gateway")


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]  # LO: at most 64 characters
    return ds


def handle_echo(event: Event) -> int:
    return status.SUCCESS


def handle_store(event: Event, ingest: IngestService) -> int | Dataset:
    """Store the received bytes as they are; answer success only once they are durable.

    With spooling on (pynetdicom's chunked receive) the data set arrives as a Part 10 file that
    pynetdicom removes after this handler: ingest links or streams it into the store. Otherwise the
    data set was assembled in memory.
    """
    fast_responses(event.assoc)  # the Success answer hand-encoded (installed once per association)
    try:
        spooled: Path | None = event.dataset_path  # None unless pynetdicom spooled it
    except AttributeError:
        spooled = None
    try:
        data = None if spooled is not None else _with_meta(event)
    except Exception as exc:
        log.warning("C-STORE: cannot read the received data set: %s", exc)
        return _status(status.CANNOT_UNDERSTAND, f"cannot read data set: {exc}")
    spool = getattr(event.request, "_dataset_file", None)
    failure = getattr(spool, "failure", None)  # a `gateway.ae.SpoolFile` that could not be written
    if failure is not None:
        return _status(status.OUT_OF_RESOURCES, failure)
    if spooled is not None:
        code, comment = store_spooled(ingest, spooled, event.assoc.requestor.ae_title)
        return code if comment is None else _status(code, comment)
    try:
        ingest.ingest(data)  # type: ignore[arg-type]
    except PacsError as exc:
        log.warning("C-STORE from %s refused (0x%04X): %s", event.assoc.requestor.ae_title,
                    exc.dimse_status, exc.reason)
        return _status(exc.dimse_status, exc.reason)
    except Exception as exc:
        log.exception("C-STORE failed")
        return _status(status.PROCESSING_FAILURE, f"internal error: {type(exc).__name__}")
    return status.SUCCESS


def _with_meta(event: Event) -> bytes:
    """The received data set as Part 10, as pynetdicom's `encoded_dataset(include_meta=True)` makes it,
    with the calling AE title as (0002,0016) Source Application Entity Title."""
    meta = event.file_meta
    calling = str(event.assoc.requestor.ae_title or "").strip()
    if calling:
        meta.SourceApplicationEntityTitle = calling
    return b"".join((b"\x00" * 128, b"DICM", encode_file_meta(meta),
                     event.encoded_dataset(include_meta=False)))


def store_spooled(ingest: IngestService, path: str | Path, caller: str) -> tuple[int, str | None]:
    """Store a spooled data set file; the C-STORE status and, with a failure, its Error Comment (at
    most 64 characters). Success only once the object is durable (`IngestService.ingest_file`)."""
    try:
        ingest.ingest_file(Path(path))
    except PacsError as exc:
        log.warning("C-STORE from %s refused (0x%04X): %s", caller, exc.dimse_status, exc.reason)
        return exc.dimse_status, exc.reason[:64]
    except Exception as exc:
        log.exception("C-STORE failed")
        return status.PROCESSING_FAILURE, f"internal error: {type(exc).__name__}"[:64]
    return status.SUCCESS, None


def handlers(ctx: GatewayContext) -> list[tuple]:
    """Every DIMSE service's handlers, bound to this worker's context (and, when configured, the
    negotiation that accepts SOP classes the standard does not define)."""
    negotiation = [(evt.EVT_REQUESTED, accept_unknown_sop_classes)] \
        if ctx.settings.accept_unknown_sop_classes else []
    return [
        *negotiation,
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [ctx.ingest]),
        (evt.EVT_C_FIND, find.handle_find, [ctx]),
        (evt.EVT_C_MOVE, move.handle_move, [ctx]),
        (evt.EVT_C_GET, get.handle_get, [ctx]),
        (evt.EVT_N_CREATE, mpps.handle_n_create, [ctx]),
        (evt.EVT_N_SET, mpps.handle_n_set, [ctx]),
        (evt.EVT_N_ACTION, commitment.handle_n_action, [ctx]),
    ]
