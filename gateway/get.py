"""C-GET SCP: Patient Root, Study Root and Composite Instance Root Query/Retrieve – GET.

The C-STORE sub-operations go over the requestor's own association, in the contexts it proposed for
the storage SOP classes with the SCP role for itself (SCP/SCU Role Selection, which `make_ae` accepts
for every storage class). Each instance goes as stored when the requestor accepted that, else in the
best syntax among those accepted that a codec produces for it (the requestor's preferred syntax first
when it is a registered node with one: `pacs.dimse.proposals`); one with no such context, or none a
codec produces, fails its sub-operation alone (listed in the Failed SOP Instance UID List). A node of
the registry whose operations lack "get" is refused (0x0124 Not Authorized); callers that are not
registered are governed by the calling-AE policy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pacs.dimse.direct import fast_responses
from pacs.dimse.retrieve import status, stream_stored_files, sub_operations
from pacs.dimse.selection import Model, RetrieveFailure, select_instances
from pacs.services.dimse_query import FindFailure
from pynetdicom import AE
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CompositeInstanceRootRetrieveGet,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)

from gateway.context import GatewayContext
from gateway.find import check_identifier
from gateway.status import QUERY_SYNTAXES, UNABLE_TO_PROCESS

log = logging.getLogger("gateway")

MODELS = {
    PatientRootQueryRetrieveInformationModelGet: Model.PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelGet: Model.STUDY_ROOT,
    CompositeInstanceRootRetrieveGet: Model.COMPOSITE_INSTANCE_ROOT,
}
NOT_AUTHORIZED = 0x0124


def add_contexts(ae: AE) -> None:
    for uid in MODELS:
        ae.add_supported_context(uid, QUERY_SYNTAXES)


def handle_get(event: Event, ctx: GatewayContext) -> Iterator[Any]:
    """pynetdicom's C-GET protocol: the number of sub-operations, then (status, data set) pairs."""
    backend = ctx.backend
    caller = event.assoc.requestor.ae_title.strip()
    if backend is None:
        yield 1
        yield status(UNABLE_TO_PROCESS, "C-GET is not served by this gateway (no catalog)"), None
        return
    node = backend.nodes.get_node(caller) if backend.nodes is not None else None
    if node is not None and "get" not in node.operations:
        log.warning("C-GET from %s refused: the node is not allowed get", caller)
        yield 1
        yield status(NOT_AUTHORIZED, f"{caller} is not allowed C-GET"), None
        return
    try:
        check_identifier(getattr(event.request, "Identifier", None), str(event.context.transfer_syntax))
        rows = select_instances(backend.catalog, ctx.settings.partition, event.identifier,
                                MODELS[str(event.request.AffectedSOPClassUID)])
    except (RetrieveFailure, FindFailure) as exc:  # FindFailure: an identifier that does not add up
        yield 1
        yield status(exc.status, exc.comment), None
        return
    except Exception as exc:
        log.exception("C-GET: the identifier could not be processed")
        yield 1
        yield status(UNABLE_TO_PROCESS, f"cannot process the identifier: {type(exc).__name__}"), None
        return
    stream_stored_files(event.assoc)
    fast_responses(event.assoc)
    yield len(rows)
    yield from sub_operations(rows, backend.store, lambda: event.assoc, lambda: bool(event.is_cancelled),
                              node.preferred_syntax or None if node is not None else None)
