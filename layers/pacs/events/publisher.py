"""Domain events the PACS emits (EventBridge on AWS, the embedded queue locally).

`source` is "pacs"; `detail_type` one of the names below (schemas in the README); `detail` is a JSON
object that always carries `partition` and, for study-scoped events, `studyInstanceUID`.
"""

from __future__ import annotations

from typing import Any, Protocol

INSTANCE_STORED = "InstanceStored"
STUDY_UPDATED = "StudyUpdated"
INSTANCE_DELETED = "InstanceDeleted"
MPPS_UPDATED = "MppsUpdated"
STUDY_STABLE = "StudyStable"

SOURCE = "pacs"


class EventPublisher(Protocol):
    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        """Emit one event; raises when it could not be handed over (the caller's delivery is retried)."""
        ...
