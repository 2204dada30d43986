"""C-MOVE SCP: Patient Root and Study Root Query/Retrieve – MOVE, to registered destinations.

The destination (Move Destination AE title) must be a node of the registry whose operations include
"move": the registry lists what a node may ask of this PACS, and the node that is sent to is the one
asking for its own images in the usual case (a workstation moving to itself); a third party cannot
have images pushed to a node that was not allowed them. Any other destination: 0xA801. Who may
associate at all is the calling-AE policy's business. Sub-operations go over a new association to the
node (TCP_NODELAY; DICOM TLS when the node says so, presenting PACS_TLS_CERT and checking the node's
certificate against PACS_TLS_CA; the stored syntaxes, the node's preferred syntax, the natives and the
lossless syntaxes a codec produces proposed: `pacs.dimse.proposals`; each instance as stored, else in
the node's preferred or the best accepted syntax, transcoded). Over plain TCP the sub-operation loop
is `pacs.dimse.retrieve.move_sub_operations` (objects and responses exchanged on the sockets
directly); over TLS, pynetdicom's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pacs.dimse.direct import fast_responses
from pacs.dimse.retrieve import Response, move_sub_operations, status, stream_stored_files, sub_operations
from pacs.dimse.selection import Model, RetrieveFailure, select_instances
from pacs.dimse.sender import prepare_requestor, proposed_contexts
from pacs.dimse.tls import client_context
from pacs.services.dimse_query import FindFailure
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from gateway.context import GatewayContext
from gateway.find import check_identifier
from gateway.status import QUERY_SYNTAXES, UNABLE_TO_PROCESS

log = logging.getLogger("gateway")

MODELS = {
    PatientRootQueryRetrieveInformationModelMove: Model.PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelMove: Model.STUDY_ROOT,
}


def add_contexts(ae: AE) -> None:
    for uid in MODELS:
        ae.add_supported_context(uid, QUERY_SYNTAXES)


def handle_move(event: Event, ctx: GatewayContext) -> Iterator[Any]:
    """pynetdicom's C-MOVE protocol: the destination (address, port, association options), the number
    of sub-operations, then (status, data set) pairs (`pacs.dimse.retrieve`)."""
    backend = ctx.backend
    destination = (event.move_destination or "").strip()
    node = backend.nodes.get_node(destination) if backend is not None and backend.nodes else None
    if backend is None or node is None or "move" not in node.operations:
        log.warning("C-MOVE from %s to %r refused: not a registered move destination",
                    event.assoc.requestor.ae_title, destination)
        yield None, None  # 0xA801 Move Destination unknown
        return
    failure: Response | None = None
    rows = []
    try:
        check_identifier(getattr(event.request, "Identifier", None), str(event.context.transfer_syntax))
        rows = select_instances(backend.catalog, ctx.settings.partition, event.identifier,
                                MODELS[str(event.request.AffectedSOPClassUID)])
    except RetrieveFailure as exc:
        failure = status(exc.status, exc.comment), None
    except FindFailure as exc:  # an identifier whose encoding does not add up
        failure = status(exc.status, exc.comment), None
    except Exception as exc:
        log.exception("C-MOVE: the identifier could not be processed")
        failure = status(UNABLE_TO_PROCESS, f"cannot process the identifier: {type(exc).__name__}"), None
    opened: list[Association] = []

    def on_open(ev: Event) -> None:
        prepare_requestor(ev)
        stream_stored_files(ev.assoc, event.assoc.requestor.ae_title)
        opened.append(ev.assoc)

    pairs = {(r.sop_class_uid, r.transfer_syntax_uid) for r in rows}
    preferred = node.preferred_syntax or None
    options = {
        "ae_title": node.ae_title, "max_pdu": ctx.settings.max_pdu,
        # with nothing to send (a failure to report), a Verification context keeps the proposal valid
        "contexts": proposed_contexts(pairs, preferred) if pairs else [build_context(Verification)],
        "evt_handlers": [(evt.EVT_CONN_OPEN, on_open)],
    }
    if node.tls:  # the node's certificate checked against PACS_TLS_CA (else the system's CAs)
        st = ctx.settings
        options["tls_args"] = (client_context(st.tls_ca or None, st.tls_cert or None, st.tls_key or None),
                               node.host)
    fast_responses(event.assoc)  # one Pending C-MOVE-RSP per sub-operation: hand-encoded
    yield node.host, node.port, options
    if failure is not None:
        yield 1  # a failure is only answered once there are sub-operations
        yield failure
        return
    yield len(rows)
    # pynetdicom has associated with the destination: the sub-operations run here (plain TCP), or
    # through pynetdicom's loop, one (Pending, data set) at a time
    if opened and move_sub_operations(event, rows, backend.store, opened[-1], preferred):
        return
    yield from sub_operations(rows, backend.store, lambda: opened[-1] if opened else None,
                              lambda: bool(event.is_cancelled), preferred)
