"""Figures read when /metrics is scraped: catalog counts, queue and dead-letter depths, the gateway
workers alive. Each comes from the component itself (cheap: SQLite aggregates over study rows, SQS
queue attributes), never from a table scan; one that fails is left out of the scrape, and /health says why.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from pacs.backends import Backend
from pacs.monitoring import multiprocess
from pacs.processes import running

log = logging.getLogger("pacs.monitoring")

#: A gateway worker whose last heartbeat is older than this (seconds) is not counted as alive.
HEARTBEAT_STALE = 10.0
_HEARTBEAT = "pacs_gateway_worker_heartbeat_timestamp_seconds"


def worker_heartbeats() -> dict[int, float]:
    """pid → last heartbeat (Unix time) of each gateway worker that recorded one (multiprocess mode)."""
    path = os.environ.get(multiprocess.ENV)
    if not multiprocess.enabled() or path is None:
        return {}
    files = glob.glob(os.path.join(path, "gauge_liveall_*.db"))
    beats: dict[int, float] = {}
    for metric in MultiProcessCollector.merge(files, accumulate=False):
        if metric.name != _HEARTBEAT:
            continue
        for sample in metric.samples:
            with contextlib.suppress(KeyError, ValueError):
                beats[int(sample.labels["pid"])] = sample.value
    return beats


def live_workers(now: float | None = None) -> list[int]:
    """The gateway workers alive: a recent heartbeat from a process that still exists."""
    now = time.time() if now is None else now
    return sorted(pid for pid, beat in worker_heartbeats().items()
                  if now - beat < HEARTBEAT_STALE and running(pid))


class BackendCollector(Collector):
    """The backend's figures as gauges, read at each scrape."""

    def __init__(self, backend: Backend, *, gateway: bool) -> None:
        self.backend = backend
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        backend, partition = self.backend, self.backend.settings.partition
        try:
            totals = backend.catalog.totals(partition)
        except Exception as exc:
            log.warning("catalog totals unavailable: %s", exc)
            totals = None
        if totals is not None:
            for name, value, what in (
                ("studies", totals.studies, "Studies in the catalog"),
                ("series", totals.series, "Series in the catalog"),
                ("instances", totals.instances, "Instances in the catalog"),
                ("bytes", totals.size, "Bytes of the catalogued original objects"),
            ):
                g = GaugeMetricFamily(f"pacs_catalog_{name}", what, labels=["partition"])
                g.add_metric([partition], value)
                yield g
        queue = backend.queue
        if queue is not None:
            for name, read, what in (
                ("pacs_index_queue_depth", queue.depth, "Object events waiting for the indexer"),
                ("pacs_index_dlq_depth", queue.dead_letter_depth, "Object events in the dead-letter queue"),
            ):
                try:
                    yield GaugeMetricFamily(name, what, value=read())
                except Exception as exc:
                    log.warning("%s unavailable: %s", name, exc)
            try:
                oldest = queue.oldest_age()
            except Exception as exc:
                log.warning("queue age unavailable: %s", exc)
            else:
                yield GaugeMetricFamily("pacs_index_queue_oldest_seconds",
                                        "Age of the oldest event waiting for the indexer (0: none)",
                                        value=oldest or 0.0)
        if self.gateway:
            yield GaugeMetricFamily("pacs_gateway_workers_alive", "Gateway worker processes alive",
                                    value=len(live_workers()))
