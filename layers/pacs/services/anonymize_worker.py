"""The embedded anonymizer worker (`pacs up --deid-rules`): the shared event worker
(`pacs.services.event_worker`: durable cursor, retries, dead letters, a pool of processes) running the
AnonymizerService on `InstanceStored` and `StudyUpdated`.

The cursor and dead letters are in `DATA_DIR/anonymizer.db` (`pacs anonymizer dlq list|redrive`). The
AWS twin is `functions/anonymizer` (EventBridge → SQS → the same AnonymizerService).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pacs.config import Settings
from pacs.services.anonymizer import DETAIL_TYPES, AnonymizerService, PermanentFailure, RuleOutcome
from pacs.services.deid_rules import DeidRules, load_rules
from pacs.services.event_worker import MAX_ATTEMPTS, RETRY_DELAY, EventWorker, Handler, WorkerState

STATE_FILE = "anonymizer.db"


class AnonymizerState(WorkerState):
    """The anonymizer's cursor and dead letters (`DATA_DIR/anonymizer.db`)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, "anonymizer")


def anonymizer_handler(settings: Settings) -> Handler:
    """A pool process's handler: its own backend, rules and keys (`pacs.services.event_worker`)."""
    from pacs.backends import open_backend

    service = AnonymizerService.from_backend(open_backend(settings), load_rules(settings.deid_rules))

    def work(detail_type: str, detail: dict[str, Any]) -> tuple[str, str]:
        try:
            report = service.handle(detail_type, detail)
        except PermanentFailure as exc:
            return "permanent", str(exc)
        counts = ", ".join(f"{report.count(o)} {o}" for o in RuleOutcome if report.count(o))
        return "done", f"{report.outcome}" + (f" ({counts})" if counts else "")

    return work


class AnonymizeWorker(EventWorker):
    """Follow the event log and de-identify by the rules in `workers` processes (0: one per CPU)."""

    def __init__(self, settings: Settings, *, workers: int = 0, max_attempts: int = MAX_ATTEMPTS,
                 retry_delay: float = RETRY_DELAY, init: Callable[[], None] | None = None) -> None:
        self.rules: DeidRules = load_rules(settings.deid_rules)  # RulesError: refused at start
        partitions = self.rules.partitions
        super().__init__(settings, name="anonymizer", state_path=settings.data_dir / STATE_FILE,
                         detail_types=DETAIL_TYPES, factory=anonymizer_handler,
                         workers=workers or settings.deid_workers, max_attempts=max_attempts,
                         retry_delay=retry_delay, init=init,
                         # the copies' own events (destination partitions), and any partition no rule
                         # takes, are passed over here; a malformed detail still goes to the service
                         accepts=lambda e: e.detail.get("partition") in partitions
                         or not isinstance(e.detail.get("partition"), str))
