"""Study-stable detection (issue 14, item 1): a study is stable when no instance arrived for a quiet
time; it is then announced as a `StudyStable` event with the study's aggregates, a `generation`
(1, 2, …: instances arriving after a StudyStable make a new one) and `quietSeconds`.

Plain Python: the timers live behind `TimerStore` (embedded: `pacs.services.stable_worker`, SQLite),
time comes from an injected clock. A change is recorded at the time of its event (not of its
handling), so a redelivered `StudyUpdated` changes nothing; a timer emits only when no change came
since it was armed, and claims its generation before publishing, so one generation is emitted once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pacs.catalog.port import Catalog
from pacs.events.details import study_detail
from pacs.events.publisher import STUDY_STABLE, STUDY_UPDATED, EventPublisher

DEFAULT_QUIET_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Timer:
    partition: str
    study_uid: str
    #: When the study last changed (the time of its last StudyUpdated).
    last_change: float
    due: float
    #: The generation last emitted (0: none yet).
    generation: int


class TimerStore(Protocol):
    def record(self, partition: str, study_uid: str, at: float, due: float | None) -> bool:
        """Record a change at `at` (due: when to fire; None: the study is gone, no timer); False, nothing
        changed, when a change at `at` or later is recorded already."""
        ...

    def due(self, now: float, limit: int = 100) -> list[Timer]:
        """The timers due at `now`, oldest first."""
        ...

    def claim(self, timer: Timer) -> bool:
        """Take `timer.generation + 1` and disarm, if the study did not change since `timer` was read."""
        ...

    def release(self, timer: Timer) -> None:
        """Undo a `claim` whose event could not be published (it fires again)."""
        ...

    def published(self, timer: Timer) -> None:
        """The claimed generation of `timer` is published (its claim is no longer pending)."""
        ...

    def pending(self) -> list[Timer]:
        """Claims not known to be published (a crash between claim and publish), `generation` the
        claimed one."""
        ...


class StudyStableService:
    """Arms a timer per study on `StudyUpdated`; `fire()` emits `StudyStable` for the due ones."""

    def __init__(self, catalog: Catalog, timers: TimerStore, events: EventPublisher, *,
                 quiet_seconds: float = DEFAULT_QUIET_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.catalog, self.timers, self.events = catalog, timers, events
        self.quiet, self.clock = quiet_seconds, clock

    def handle(self, detail_type: str, detail: dict[str, Any], at: float) -> bool:
        """A `StudyUpdated` at time `at`: (re)arm its study's timer (a deleted study's is cancelled);
        whether anything changed (False: a redelivery, or not an event of ours)."""
        partition, study = detail.get("partition"), detail.get("studyInstanceUID")
        if detail_type != STUDY_UPDATED or not isinstance(partition, str) or not isinstance(study, str):
            return False
        due = None if detail.get("deleted") else at + self.quiet
        return self.timers.record(partition, study, at, due)

    def fire(self) -> list[dict[str, Any]]:
        """Emit `StudyStable` for every timer due now; the details emitted."""
        emitted = []
        for timer in self.timers.due(self.clock()):
            detail = self.fire_timer(timer)
            if detail is not None:
                emitted.append(detail)
        return emitted

    def fire_timer(self, timer: Timer) -> dict[str, Any] | None:
        """Emit `StudyStable` for `timer` (read from the store, due) unless the study changed since; the
        detail emitted, or None."""
        if not self.timers.claim(timer):
            return None  # changed meanwhile: re-armed
        return self._publish(timer, timer.generation + 1)

    def recover(self, published: Callable[[Timer], bool]) -> int:
        """At start: publish the claims a crash left pending unless `published(timer)` finds their
        event already emitted; how many were published now."""
        n = 0
        for timer in self.timers.pending():
            if published(timer):
                self.timers.published(timer)
            elif self.republish(timer) is not None:
                n += 1
        return n

    def republish(self, timer: Timer) -> dict[str, Any] | None:
        """Publish the generation a claim left pending (`timer.generation`: the claimed one)."""
        return self._publish(timer, timer.generation)

    def _publish(self, timer: Timer, generation: int) -> dict[str, Any] | None:
        detail = study_detail(self.catalog, timer.partition, timer.study_uid, STUDY_STABLE, "")
        if detail["deleted"]:  # gone: nothing to announce
            self.timers.published(timer)
            return None
        detail.pop("cause")
        detail.update(generation=generation, quietSeconds=self.quiet, lastChange=timer.last_change)
        try:
            self.events.publish(STUDY_STABLE, detail)
        except Exception:
            self.timers.release(timer)
            raise
        self.timers.published(timer)
        return detail
