"""C-FIND SCP: Patient Root and Study Root Query/Retrieve – FIND. Thin: `pacs.services.dimse_query`
parses the identifier and runs the query; this turns its results into C-FIND responses."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from pacs.services.dimse_query import FindFailure, FindService, Model, parse_identifier
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from gateway.context import GatewayContext

log = logging.getLogger("gateway")

PENDING = 0xFF00
#: Pending, but some optional keys were not supported (ignored for matching).
PENDING_WARNING = 0xFF01
CANCEL = 0xFE00
UNABLE_TO_PROCESS = 0xC000
#: Unable to process: an unexpected error while querying.
QUERY_FAILED = 0xC001

#: Every this many responses the handler lets the peer's PDUs be read (`_let_peer_speak`).
DRAIN_EVERY = 16
DRAIN_TIMEOUT = 5.0

MODELS = {
    PatientRootQueryRetrieveInformationModelFind: Model.PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelFind: Model.STUDY_ROOT,
}
#: Identifiers are small: the uncompressed syntaxes every SCU proposes.
SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"]


def add_contexts(ae: AE) -> None:
    for uid in MODELS:
        ae.add_supported_context(uid, SYNTAXES)


def _failure(code: int, comment: str, offending: int | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    if offending is not None:
        ds.OffendingElement = [offending]
    return ds


def _let_peer_speak(assoc: Any) -> None:
    """Wait until what was answered so far has gone out and the PDUs the peer sent meanwhile (a
    C-CANCEL) have been read: pynetdicom's DUL reads only when it has nothing left to send, so a
    handler that outruns the network would never see a cancel."""
    dul = assoc.dul
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline and assoc.is_established:
        if not dul.to_provider_queue.qsize() and dul.event_queue.empty() and not dul.socket.ready:
            return
        time.sleep(0.0005)


def handle_find(event: Event, ctx: GatewayContext) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """Pending responses, one per match (0xFF01 when optional keys were ignored), then Success; Cancel
    once a C-CANCEL arrives; a failure with a reason for an identifier this SCP cannot process."""
    caller = event.assoc.requestor.ae_title
    if ctx.backend is None:
        yield _failure(UNABLE_TO_PROCESS, "C-FIND is not served by this gateway (no catalog)"), None
        return
    model = MODELS.get(str(event.request.AffectedSOPClassUID))
    if model is None:
        yield _failure(0x0122, "SOP class not supported"), None
        return
    try:
        req = parse_identifier(event.identifier, model)
    except FindFailure as exc:
        log.info("C-FIND from %s refused (0x%04X): %s", caller, exc.status, exc.comment)
        yield _failure(exc.status, exc.comment, exc.offending), None
        return
    except Exception as exc:
        log.info("C-FIND from %s: undecodable identifier: %s", caller, exc)
        yield _failure(UNABLE_TO_PROCESS, f"cannot decode the identifier: {type(exc).__name__}"), None
        return
    service = FindService(ctx.backend.catalog, ctx.settings.partition, ctx.settings.ae_title)
    status = PENDING_WARNING if req.unsupported else PENDING
    results: Iterator[Any] = service.find(req)
    try:
        for n, ds in enumerate(results):
            if n and n % DRAIN_EVERY == 0:
                _let_peer_speak(event.assoc)
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield status, ds
    except Exception as exc:
        log.exception("C-FIND from %s failed", caller)
        yield _failure(QUERY_FAILED, f"query failed: {type(exc).__name__}"), None
        return
    if event.is_cancelled:
        yield CANCEL, None
