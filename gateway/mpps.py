"""MPPS SCP: N-CREATE and N-SET of the Modality Performed Procedure Step SOP Class. Thin: the state
rules, the record and the event are `pacs.services.mpps`; this turns its outcome into responses."""

from __future__ import annotations

import logging
from typing import cast

from pacs.services.mpps import MPPS_SOP_CLASS, PROCESSING_FAILURE, MppsError, MppsService
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.dimse_primitives import N_CREATE, N_SET
from pynetdicom.events import Event

from gateway.context import GatewayContext

log = logging.getLogger("gateway")

#: N-CREATE / N-SET data sets are small: the uncompressed syntaxes every SCU proposes.
SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"]
#: The SOP class is not served (an N-CREATE / N-SET on another SOP class's context).
NO_SUCH_SOP_CLASS = 0x0118


def add_contexts(ae: AE) -> None:
    ae.add_supported_context(MPPS_SOP_CLASS, SYNTAXES)


def _failure(code: int, comment: str, *, error_id: int | None = None, tags: tuple[int, ...] = ()) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]  # LO: at most 64 characters
    if error_id is not None:
        ds.ErrorID = error_id
    if tags:
        ds.AttributeIdentifierList = list(tags)
    return ds


def _service(ctx: GatewayContext) -> MppsService | None:
    backend = ctx.backend
    if backend is None or backend.mpps is None:
        return None
    return MppsService(backend.mpps, backend.events, ctx.settings.partition)


def _answer(event: Event, ctx: GatewayContext, op: str) -> tuple[int | Dataset, Dataset | None]:
    if op == "N-CREATE":
        create = cast(N_CREATE, event.request)
        sop_class, sop_uid = create.AffectedSOPClassUID, create.AffectedSOPInstanceUID
    else:
        nset = cast(N_SET, event.request)
        sop_class, sop_uid = nset.RequestedSOPClassUID, nset.RequestedSOPInstanceUID
    if sop_class != MPPS_SOP_CLASS:
        return _failure(NO_SUCH_SOP_CLASS, f"{op} of {sop_class} is not served"), None
    service = _service(ctx)
    if service is None:
        return _failure(PROCESSING_FAILURE, "MPPS is not configured on this gateway"), None
    calling = event.assoc.requestor.ae_title
    try:
        attrs = event.attribute_list if op == "N-CREATE" else event.modification_list
        record = service.create(sop_uid, attrs) if op == "N-CREATE" else service.set(sop_uid, attrs)
    except MppsError as exc:
        log.warning("%s of MPPS %s from %s refused (0x%04X): %s", op, sop_uid, calling, exc.status,
                    exc.comment)
        return _failure(exc.status, exc.comment, error_id=exc.error_id, tags=exc.tags), None
    except Exception as exc:
        log.exception("%s of MPPS %s from %s failed", op, sop_uid, calling)
        return _failure(PROCESSING_FAILURE, f"internal error: {type(exc).__name__}"), None
    log.info("%s of MPPS %s from %s: %s", op, record.sop_uid, calling, record.status)
    return 0x0000, Dataset.from_json(record.attrs)


def handle_n_create(event: Event, ctx: GatewayContext) -> tuple[int | Dataset, Dataset | None]:
    """N-CREATE: a new step IN PROGRESS; the response carries its attributes."""
    return _answer(event, ctx, "N-CREATE")


def handle_n_set(event: Event, ctx: GatewayContext) -> tuple[int | Dataset, Dataset | None]:
    """N-SET: the step's attributes replaced while IN PROGRESS; the response carries them all."""
    return _answer(event, ctx, "N-SET")
