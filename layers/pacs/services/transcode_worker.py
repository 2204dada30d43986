"""The embedded transcoder worker (`pacs up`): the shared event worker (`pacs.services.event_worker`:
durable cursor, retries, dead letters, a pool of processes) running the TranscoderService.

The cursor and dead letters are in `DATA_DIR/transcoder.db` (`pacs transcoder dlq list|redrive`). The
AWS twin is `functions/transcoder` (EventBridge → SQS → the same TranscoderService).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pacs.config import Settings
from pacs.services.event_worker import (
    MAX_ATTEMPTS,
    RETRY_DELAY,
    DeadLetter,
    EventWorker,
    Handler,
    WorkerState,
)
from pacs.services.transcode_policy import Policy, load_policy
from pacs.services.transcoder import DETAIL_TYPES, PermanentFailure, TranscoderService

#: The dead letters' shape (kept under the transcoder's name).
TranscodeDeadLetter = DeadLetter


class TranscoderState(WorkerState):
    """The transcoder's cursor and dead letters (`DATA_DIR/transcoder.db`)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, "transcoder")


def transcoder_handler(settings: Settings) -> Handler:
    """A pool process's handler: its own backend and the policy (`pacs.services.event_worker`)."""
    from pacs.backends import open_backend

    backend = open_backend(settings)
    service = TranscoderService(backend.store, backend.catalog, load_policy(settings.transcode_policy))

    def work(detail_type: str, detail: dict[str, Any]) -> tuple[str, str]:
        try:
            report = service.handle(detail_type, detail)
        except PermanentFailure as exc:
            return "permanent", str(exc)
        return "done", f"{report.outcome} ({report.made} made)"

    return work


class TranscodeWorker(EventWorker):
    """Follow the event log and transcode in `workers` processes (0: one per CPU)."""

    def __init__(self, settings: Settings, *, workers: int = 0, max_attempts: int = MAX_ATTEMPTS,
                 retry_delay: float = RETRY_DELAY, init: Callable[[], None] | None = None) -> None:
        self.policy: Policy = load_policy(settings.transcode_policy)  # PolicyError: refused at start
        super().__init__(settings, name="transcoder", state_path=settings.data_dir / "transcoder.db",
                         detail_types=DETAIL_TYPES, factory=transcoder_handler,
                         workers=workers or settings.transcode_workers, max_attempts=max_attempts,
                         retry_delay=retry_delay, init=init)
