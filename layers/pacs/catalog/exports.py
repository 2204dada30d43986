"""Export jobs (`pacs.services.exports`): the job record and its port.

Adapters: `exports_sqlite` (tables in the catalog's database, embedded) and `exports_dynamodb` (items in
the catalog's table, AWS). Both pass `tests/unit/test_export_records.py`.

A job's work is split into numbered tasks (one per series, or per chunk of a big series). Each task
reports its counts once, atomically with its completion mark (`finish_task`): a task delivered twice
is counted once, tasks running in parallel never lose a count, and the caller whose report completes
the last task learns it from the answer.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

Status = Literal["queued", "running", "done", "failed", "cancelled"]
STATUSES: tuple[Status, ...] = ("queued", "running", "done", "failed", "cancelled")
#: Statuses a job never leaves.
FINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
#: At most this many failures (and held-back instances) are listed on a job; the counts stay exact.
FAILURES_CAP = 100


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def new_job_id() -> str:
    """Sortable by creation time, key-safe: `20261208T010132Z-3f9a1c2b`."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(4)


@dataclass(slots=True)
class ExportJob:
    id: str
    partition: str
    request: dict[str, Any]
    status: Status = "queued"
    created: str = field(default_factory=now_iso)
    updated: str = ""
    #: Planned: series and instances selected, tasks made from them.
    series: int = 0
    instances: int = 0
    tasks: int = 0
    #: Progress: tasks finished; instances exported, failed, held back; bytes written.
    tasks_done: int = 0
    done: int = 0
    failed: int = 0
    held_back: int = 0
    bytes: int = 0
    #: Up to FAILURES_CAP entries `{"sop": uid, "reason": text, "heldBack": bool}`.
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: Where the output is: the destination and, once done, its keys / download.
    output: dict[str, Any] = field(default_factory=dict)
    #: Why the job failed as a whole.
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        processed = self.done + self.failed + self.held_back
        return {
            "id": self.id, "partition": self.partition, "status": self.status,
            "created": self.created, "updated": self.updated or self.created, "request": self.request,
            "totals": {"series": self.series, "instances": self.instances, "tasks": self.tasks},
            "progress": {"tasks": self.tasks_done, "processed": processed, "done": self.done,
                         "failed": self.failed, "heldBack": self.held_back, "bytes": self.bytes},
            "failures": self.failures, "output": self.output, **({"error": self.error} if self.error else {}),
        }


@dataclass(frozen=True, slots=True)
class TaskReport:
    """What one task did: counts and (capped) failures."""

    done: int = 0
    failed: int = 0
    held_back: int = 0
    bytes: int = 0
    failures: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    #: False when the task had been reported before (nothing counted this time).
    counted: bool
    tasks_done: int
    tasks: int

    @property
    def last(self) -> bool:
        """Every task of the job is finished."""
        return self.tasks > 0 and self.tasks_done >= self.tasks


class ExportJobs(Protocol):
    def create(self, job: ExportJob) -> None:
        """Record a new job (its id is new)."""
        ...

    def get(self, job_id: str) -> ExportJob | None: ...

    def recent(self, partition: str, limit: int = 50) -> list[ExportJob]:
        """The partition's jobs, newest first."""
        ...

    def plan(self, job_id: str, series: int, instances: int, tasks: int) -> bool:
        """queued → running with the planned totals; False (nothing changed) unless it was queued."""
        ...

    def finish_task(self, job_id: str, task: int, report: TaskReport) -> TaskOutcome:
        """Add a task's counts and failures once, atomically with its completion mark; a task reported
        again changes nothing (`counted` False). KeyError for an unknown job."""
        ...

    def set_status(self, job_id: str, status: Status, *, only_from: frozenset[str] | set[str],
                   output: dict[str, Any] | None = None, error: str | None = None) -> bool:
        """Move the job to `status` (with its output / error) when it is in one of `only_from`;
        False (nothing changed) otherwise."""
        ...

    def close(self) -> None: ...


def capped(current: int, new: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of `new` that still fit below FAILURES_CAP after `current` ones."""
    return list(new[:max(0, FAILURES_CAP - current)])
