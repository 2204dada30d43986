"""DIMSE metrics from pynetdicom's notification events: associations (open, accepted, rejected by
reason, released or aborted) and operations (service, final status, latency, data set bytes).

`handlers()` are bound beside the gateway's own handlers (`gateway.server`). The requests the fast
paths answer without pynetdicom (`gateway.store_fast`, `gateway.find_fast`) record themselves with
`metrics.dimse_operation`; responses sent without pynetdicom's `send_msg` (`pacs.dimse.direct`)
call `response_sent`. Per-association state lives on the association (`_pacs_ops`, `_pacs_open`).
"""

from __future__ import annotations

import os
import time
from io import BytesIO
from typing import Any

from pynetdicom import evt
from pynetdicom.pdu_primitives import A_ASSOCIATE

from pacs.monitoring import metrics

#: A-ASSOCIATE-RJ (source, reason/diag.) → reason label (PS3.8 Table 9-21).
REJECT_REASONS = {
    (1, 1): "no-reason-given",
    (1, 2): "application-context-name-not-supported",
    (1, 3): "calling-ae-title-not-recognized",
    (1, 7): "called-ae-title-not-recognized",
    (2, 1): "no-reason-given",
    (2, 2): "protocol-version-not-supported",
    (3, 1): "temporary-congestion",
    (3, 2): "local-limit-exceeded",
}
_PENDING = (0xFF00, 0xFF01)


def service_of(message: Any) -> str:
    """`C_STORE_RQ` → `C-STORE`."""
    return type(message).__name__[:-3].replace("_", "-")


def _size(message: Any) -> int:
    data = getattr(message, "data_set", None)
    if isinstance(data, BytesIO):
        return data.getbuffer().nbytes
    path = getattr(message, "_data_set_path", None)
    if isinstance(path, tuple):
        path = path[0]
    if path is not None:
        try:
            return os.path.getsize(path)
        except OSError:
            return 0
    return 0


def on_accepted(event: Any) -> None:
    m = metrics.get()
    m.associations_accepted.inc()
    m.associations_open.inc()
    event.assoc._pacs_open = True


def on_acse_sent(event: Any) -> None:
    primitive = event.primitive
    if isinstance(primitive, A_ASSOCIATE) and primitive.result not in (None, 0):
        reason = REJECT_REASONS.get((int(primitive.result_source or 0), int(primitive.diagnostic or 0)),
                                    "other")
        metrics.get().associations_rejected.labels(reason).inc()


def on_released(event: Any) -> None:
    metrics.get().associations_ended.labels("released").inc()


def on_aborted(event: Any) -> None:
    metrics.get().associations_ended.labels("aborted").inc()


def on_closed(event: Any) -> None:
    assoc = event.assoc
    if getattr(assoc, "_pacs_open", False):
        assoc._pacs_open = False
        metrics.get().associations_open.dec()


def request_received(assoc: Any, service: str, msg_id: int, nbytes: int = 0) -> None:
    ops = getattr(assoc, "_pacs_ops", None)
    if ops is None:
        ops = assoc._pacs_ops = {}
    ops[msg_id] = (service, time.perf_counter(), nbytes)


def response_sent(assoc: Any, msg_id: int, status: int, nbytes: int = 0) -> None:
    """A response to request `msg_id`: a pending one adds its bytes, a final one records the operation."""
    ops = getattr(assoc, "_pacs_ops", None)
    if not ops or msg_id not in ops:
        return
    service, start, received = ops[msg_id]
    if status in _PENDING:
        if nbytes:
            metrics.dimse_bytes(service, "sent", nbytes)
        return
    del ops[msg_id]
    metrics.dimse_operation(service, status, time.perf_counter() - start, received, "received")
    if nbytes:
        metrics.dimse_bytes(service, "sent", nbytes)


def on_dimse_recv(event: Any) -> None:
    message = event.message
    name = type(message).__name__
    if name.endswith("_RQ"):
        msg_id = message.command_set.get("MessageID")  # absent in a malformed request (refused)
        if msg_id is not None:
            request_received(event.assoc, service_of(message), int(msg_id), _size(message))


def on_dimse_sent(event: Any) -> None:
    message = event.message
    if type(message).__name__.endswith("_RSP"):
        cs = message.command_set
        responded, status = cs.get("MessageIDBeingRespondedTo"), cs.get("Status")
        if responded is not None and status is not None:
            response_sent(event.assoc, int(responded), int(status), _size(message))


def handlers() -> list[tuple[Any, Any]]:
    """Notification handlers for a server's `evt_handlers`."""
    return [
        (evt.EVT_ACCEPTED, on_accepted),
        (evt.EVT_ACSE_SENT, on_acse_sent),
        (evt.EVT_RELEASED, on_released),
        (evt.EVT_ABORTED, on_aborted),
        (evt.EVT_CONN_CLOSE, on_closed),
        (evt.EVT_DIMSE_RECV, on_dimse_recv),
        (evt.EVT_DIMSE_SENT, on_dimse_sent),
    ]
