"""The Prometheus metrics of every component, and the functions that record them.

The metrics are made on first use (`get()`), not at import: `pacs up` chooses prometheus-client's
multiprocess mode (`pacs.monitoring.multiprocess.prepare`) after its modules are imported, and
a metric's storage (in memory, or a memory-mapped file per process) is fixed when it is made.

Recording is cheap: a counter increment is a dictionary lookup and, in multiprocess mode, one
write into a memory-mapped page, no system call (`bench/metrics_cost.py`). The functions that matter on AWS
also add the figure to the CloudWatch EMF batch of the invocation (`pacs.monitoring.emf`), under
the names the dashboard (`infra/monitoring.py`) shows: `EMF_NAMES`.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from pacs.events.model import event_timestamp
from pacs.monitoring import emf, multiprocess

#: Seconds: DIMSE operations last from a millisecond (C-ECHO) to minutes (a large C-MOVE).
DIMSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: Seconds from an object's write to its catalog commit.
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)

#: CloudWatch metric names (namespace PACS, dimension `service`) of the figures the Lambda handlers emit.
EMF_NAMES = {
    "instances_stored": "InstancesStored",
    "instances_refused": "InstancesRefused",
    "indexed": "InstancesIndexed",
    "indexed_bytes": "IndexedBytes",
    "indexing_failures": "IndexingFailures",
    "indexer_lag": "IndexerLag",
    "object_store_errors": "ObjectStoreErrors",
}


@dataclass(frozen=True, slots=True)
class Metrics:
    associations_open: Gauge
    associations_accepted: Counter
    associations_rejected: Counter
    associations_ended: Counter
    tls_handshake_failures: Counter
    connections_refused: Counter
    worker_restarts: Counter
    dimse_operations: Counter
    dimse_seconds: Histogram
    dimse_bytes: Counter
    instances_stored: Counter
    instances_refused: Counter
    object_store_errors: Counter
    indexed: Counter
    indexer_lag: Histogram
    http_requests: Counter
    http_seconds: Histogram


@functools.cache
def get() -> Metrics:
    """The metrics of this process, registered in prometheus-client's default registry."""
    multiprocess.use_files_if_configured()
    return Metrics(
        associations_open=Gauge(
            "pacs_dimse_associations_open", "DIMSE associations open now (all gateway workers)",
            multiprocess_mode="livesum"),
        associations_accepted=Counter(
            "pacs_dimse_associations_accepted", "DIMSE associations accepted"),
        associations_rejected=Counter(
            "pacs_dimse_associations_rejected", "DIMSE associations rejected, by PS3.8 reason",
            ["reason"]),
        associations_ended=Counter(
            "pacs_dimse_associations_ended", "DIMSE associations ended: released or aborted", ["how"]),
        tls_handshake_failures=Counter(
            "pacs_tls_handshake_failures", "DICOM TLS handshakes refused, by OpenSSL reason", ["reason"]),
        connections_refused=Counter(
            "pacs_gateway_connections_refused",
            "Connections and associations the gateway refused, by reason (gateway.counters)", ["reason"]),
        worker_restarts=Counter(
            "pacs_gateway_worker_restarts", "Gateway worker processes replaced after dying unasked"),
        dimse_operations=Counter(
            "pacs_dimse_operations", "DIMSE requests answered, by service and final status (hex)",
            ["service", "status"]),
        dimse_seconds=Histogram(
            "pacs_dimse_operation_seconds", "DIMSE request to final response", ["service"],
            buckets=DIMSE_BUCKETS),
        dimse_bytes=Counter(
            "pacs_dimse_bytes", "DIMSE data set bytes, by service and direction (received, sent)",
            ["service", "direction"]),
        instances_stored=Counter(
            "pacs_instances_stored", "Instances stored (C-STORE, STOW-RS), by outcome", ["outcome"]),
        instances_refused=Counter(
            "pacs_instances_refused", "Instances refused (nothing stored), by reason", ["reason"]),
        object_store_errors=Counter(
            "pacs_object_store_errors", "Object store operations that failed", ["operation"]),
        indexed=Counter(
            "pacs_indexer_events", "Object events indexed, by outcome (failed: to be retried)",
            ["outcome"]),
        indexer_lag=Histogram(
            "pacs_indexer_lag_seconds", "From an object's write (its event's time) to its catalog commit",
            buckets=LAG_BUCKETS),
        http_requests=Counter(
            "pacs_http_requests", "HTTP requests", ["method", "route", "status"]),
        http_seconds=Histogram(
            "pacs_http_request_seconds", "HTTP request latency (to the response start)", ["route"]),
    )


# -- recording -------------------------------------------------------------------------------------


def instance_stored(outcome: str) -> None:
    """An instance was stored (or found identical, replaced, kept): `pacs.services.ingest` calls this."""
    get().instances_stored.labels(outcome).inc()
    emf.add(EMF_NAMES["instances_stored"], 1)


def instance_refused(reason: str) -> None:
    """An instance was refused with nothing stored; `reason`: the error's class name, or not-authorized."""
    get().instances_refused.labels(reason).inc()
    emf.add(EMF_NAMES["instances_refused"], 1)


def object_store_error(operation: str) -> None:
    get().object_store_errors.labels(operation).inc()
    emf.add(EMF_NAMES["object_store_errors"], 1)


def tls_handshake_failed(exc: BaseException) -> None:
    reason = getattr(exc, "reason", None) or type(exc).__name__
    get().tls_handshake_failures.labels(str(reason)).inc()


def connection_refused(reason: str) -> None:
    """The gateway refused a connection or an association (`gateway.counters.REJECTION_REASONS`)."""
    get().connections_refused.labels(reason).inc()


def worker_restarted() -> None:
    get().worker_restarts.inc()


def indexed(outcome: str, *, size: int = 0) -> None:
    get().indexed.labels(outcome).inc()
    if outcome == "failed":
        emf.add(EMF_NAMES["indexing_failures"], 1)
    elif outcome in ("inserted", "replaced"):
        emf.add(EMF_NAMES["indexed"], 1)
        if size:
            emf.add(EMF_NAMES["indexed_bytes"], size, "Bytes")


def indexed_event(event_time: str, outcome: str, size: int = 0) -> None:
    """An object event indexed and committed: its outcome; the lag when it changed the catalog."""
    indexed(outcome, size=size)
    if outcome in ("inserted", "replaced"):
        indexer_lag(event_time)


def indexer_lag(event_time: str, now: float | None = None) -> float | None:
    """Observe the time from an event's timestamp (ISO 8601, as S3 writes it) to now; None (nothing
    observed) when the timestamp is missing or unreadable."""
    written = event_timestamp(event_time)
    if written is None:
        return None
    lag = max(0.0, (time.time() if now is None else now) - written)
    get().indexer_lag.observe(lag)
    emf.add(EMF_NAMES["indexer_lag"], lag * 1000.0, "Milliseconds")
    return lag


@functools.cache
def _heartbeat() -> Gauge:
    """Made by the gateway workers alone (a gauge is written at once: other processes would show 0)."""
    multiprocess.use_files_if_configured()
    return Gauge("pacs_gateway_worker_heartbeat_timestamp_seconds",
                 "Last sign of life of each gateway worker (Unix time; label pid in multiprocess mode)",
                 multiprocess_mode="liveall")


def heartbeat() -> None:
    """A gateway worker is alive (its main loop calls this)."""
    _heartbeat().set(time.time())


#: (service, status, direction) → the labelled children `dimse_operation` writes: the fast paths call it
#: per message, and `labels()` (a lock, a tuple, a dict lookup each) would double its cost.
_operation_children: dict[tuple[str, int, str], tuple[Any, Any, Any]] = {}


def dimse_operation(service: str, status: int, seconds: float, nbytes: int = 0,
                    direction: str = "received") -> None:
    """A DIMSE request answered with its final `status` after `seconds`; `nbytes` of data sets moved."""
    key = (service, status, direction)
    children = _operation_children.get(key)
    if children is None:
        m = get()
        children = _operation_children[key] = (
            m.dimse_operations.labels(service, f"0x{status:04X}"), m.dimse_seconds.labels(service),
            m.dimse_bytes.labels(service, direction))
    operations, latency, moved = children
    operations.inc()
    latency.observe(seconds)
    if nbytes:
        moved.inc(nbytes)


def dimse_bytes(service: str, direction: str, nbytes: int) -> None:
    get().dimse_bytes.labels(service, direction).inc(nbytes)
