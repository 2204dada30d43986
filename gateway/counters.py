"""The gateway's operational counters, shared by its worker processes: connections and associations
refused (by reason) and worker processes restarted. `COUNTERS.snapshot()` is what a metrics exporter
reads; `COUNTERS.reject(...)` counts a refusal and logs it.

The counters live in shared memory created when this module is imported, before the workers fork:
every worker adds to the same numbers, and the supervising process reads their sum.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from typing import Any

from pacs.monitoring.metrics import connection_refused, worker_restarted

log = logging.getLogger("gateway")

#: Why a connection or an association was refused (the label of `rejected`).
REJECTION_REASONS = (
    "closed-before-request",  # the peer closed (or reset) the connection before an A-ASSOCIATE-RQ
    "silent",                 # no byte within the ACSE timeout (ARTIM)
    "incomplete-request",     # closed, or ARTIM expired, after some bytes but before a whole A-ASSOCIATE-RQ
    "source-limit",           # over `max_pending_per_source` silent connections from one address
    "association-limit",      # `max_associations` already open (A-ASSOCIATE-RJ local-limit-exceeded)
    "unknown-caller",         # calling AE title not in the node registry (A-ASSOCIATE-RJ reason 3)
    "registry-unavailable",   # the node registry could not be read (A-ASSOCIATE-RJ transient)
    "rejected",               # any other A-ASSOCIATE-RJ (e.g. a wrong called AE title)
    "tls-handshake",          # the TLS handshake failed
    "pdu-limit",              # a PDU over the size limit (A-ABORT)
    "pdu-timeout",            # a PDU that took longer than the network timeout to arrive
)
#: Refusals of bare connections, logged once per host and window.
COALESCED = frozenset({"closed-before-request", "silent", "source-limit", "incomplete-request"})
#: Repeats of one (reason, peer address) within this many seconds are logged as one line.
LOG_WINDOW = 10.0


class GatewayCounters:
    """Refusals by reason and worker restarts, summed over every worker process."""

    def __init__(self) -> None:
        self._rejected: Any = multiprocessing.Array("q", len(REJECTION_REASONS))
        self._restarts: Any = multiprocessing.Value("q", 0)
        self._index = {reason: i for i, reason in enumerate(REJECTION_REASONS)}
        #: (reason, host) -> (when its window started, refusals not logged since).
        self._quiet: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def reject(self, reason: str, address: Any, detail: str) -> None:
        """Count a refusal of a peer at `address` ((host, port, ...) or a host) and log it, `detail`
        with "{peer}" replaced. Connections refused before any association (COALESCED) are logged
        once per host and LOG_WINDOW: repeats are summed into the next line logged for that host (or
        `flush()`), so a burst of 400 bare connections is a line or two, not 400."""
        with self._rejected.get_lock():
            self._rejected[self._index[reason]] += 1
        connection_refused(reason)
        host, peer = _host_and_peer(address)
        if reason not in COALESCED:
            log.warning("%s [%s]", detail.replace("{peer}", peer), reason)
            return
        now = time.monotonic()
        with self._lock:
            started, suppressed = self._quiet.get((reason, host), (0.0, 0))
            if started and now - started < LOG_WINDOW:
                self._quiet[(reason, host)] = (started, suppressed + 1)
                return
            self._quiet[(reason, host)] = (now, 0)
        more = f" (and {suppressed} more from {host} in the last {LOG_WINDOW:.0f} s)" if suppressed else ""
        log.warning("%s [%s]%s", detail.replace("{peer}", peer), reason, more)

    def flush(self) -> None:
        """Log the refusals held back whose window has ended (called now and then by each worker)."""
        now = time.monotonic()
        with self._lock:
            done = [(key, n) for key, (started, n) in self._quiet.items() if now - started >= LOG_WINDOW]
            for key, _ in done:
                del self._quiet[key]
        for (reason, host), n in done:
            if n:
                log.warning("refused %d more connection(s) from %s [%s] in the last %.0f s",
                            n, host, reason, LOG_WINDOW)

    def restarted(self) -> None:
        with self._restarts.get_lock():
            self._restarts.value += 1
        worker_restarted()

    def snapshot(self) -> dict[str, Any]:
        """{"rejected": {reason: count, ...}, "worker_restarts": count}: totals since start."""
        return {"rejected": dict(zip(REJECTION_REASONS, list(self._rejected), strict=True)),
                "worker_restarts": int(self._restarts.value)}


def _host_and_peer(address: Any) -> tuple[str, str]:
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return host, f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address), str(address)


#: The gateway's counters (one per gateway process tree).
COUNTERS = GatewayCounters()
