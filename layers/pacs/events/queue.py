"""The index queue port: what the indexer worker consumes (`pacs.services.index_worker`).

Adapters: `LocalQueue` (SQLite, embedded) and `SqsQueue` (the SQS queue S3 notifies). Both hand out
`QueueMessage`s (one object event each) that the worker acknowledges or fails; a message failed
too often moves to the dead-letter queue, which `dead_letters()` lists and `redrive()` empties.
"""

from __future__ import annotations

from typing import Protocol

from pacs.events.local import DeadLetter, QueueMessage


class IndexQueue(Protocol):
    def receive(self, max_messages: int = 10, wait: float = 0.0) -> list[QueueMessage]: ...

    def ack(self, *message_ids: int) -> None: ...

    def fail(self, message: QueueMessage, error: str, *, retry_after: float = 1.0) -> None: ...

    def depth(self) -> int: ...

    def dead_letter_depth(self) -> int: ...

    def oldest_age(self) -> float | None:
        """Seconds the oldest waiting message has waited since its object was written, when known."""
        ...

    def dead_letters(self) -> list[DeadLetter]: ...

    def redrive(self) -> int: ...

    def close(self) -> None: ...
