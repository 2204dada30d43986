"""The health of each component, for /health (all of it), /health/live and /health/ready.

- catalog: a read of its storage (`Catalog.check`); object store: a HEAD of a key that need not
  exist; queue: its depth and dead letters (degraded while the dead-letter queue holds messages);
  gateway (under `pacs up`): the workers with a recent heartbeat; indexer: the age of the oldest waiting event
  (degraded above `LAG_LIMIT`).
- ready: no component `down` (a load balancer sends traffic); live: the web process answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pacs.backends import Backend
from pacs.monitoring import state

Status = Literal["ok", "degraded", "down"]
#: Seconds an object event may wait for the indexer before the indexer is reported degraded.
LAG_LIMIT = 300.0


@dataclass(slots=True)
class Component:
    status: Status
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Report:
    components: dict[str, Component]

    @property
    def ready(self) -> bool:
        return all(c.status != "down" for c in self.components.values())

    @property
    def status(self) -> Status:
        states = {c.status for c in self.components.values()}
        return "down" if "down" in states else "degraded" if "degraded" in states else "ok"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "ready": self.ready,
                "components": {n: {"status": c.status, **c.detail} for n, c in self.components.items()}}


def _probe(fn: Callable[[], Component]) -> Component:
    try:
        return fn()
    except Exception as exc:
        return Component("down", {"error": f"{type(exc).__name__}: {exc}"[:300]})


def check(backend: Backend, *, gateway: bool) -> Report:
    """Probe every component; `gateway`: gateway workers run beside this process (`pacs up`)."""
    partition = backend.settings.partition

    def catalog() -> Component:
        backend.catalog.check()
        return Component("ok")

    def object_store() -> Component:
        backend.store.head(f"{partition}/health/probe")  # a failure is counted by the adapter (S3)
        return Component("ok")

    components = {"catalog": _probe(catalog), "object_store": _probe(object_store)}
    queue = backend.queue
    if queue is not None:
        def index_queue() -> Component:
            depth, dead = queue.depth(), queue.dead_letter_depth()
            return Component("degraded" if dead else "ok", {"depth": depth, "dead_letters": dead})

        def indexer() -> Component:
            oldest = queue.oldest_age()
            detail: dict[str, Any] = {"oldest_event_seconds": None if oldest is None else round(oldest, 3)}
            return Component("degraded" if oldest is not None and oldest > LAG_LIMIT else "ok", detail)

        components["queue"] = _probe(index_queue)
        components["indexer"] = _probe(indexer)
    if gateway:
        def workers() -> Component:
            alive = state.live_workers(time.time())
            return Component("ok" if alive else "down", {"workers_alive": len(alive)})

        components["gateway"] = _probe(workers)
    return Report(components)
