"""EventPublisher on Amazon EventBridge: `PutEvents` to the bus named by PACS_EVENT_BUS.

Every event has source "pacs", the detail type as given and the detail as JSON (schemas in the
README, "Events"). A rejected entry raises, so the caller's delivery fails and is retried.
"""

from __future__ import annotations

from typing import Any

import boto3
import orjson
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pacs.errors import PacsError
from pacs.events.publisher import SOURCE

#: The most entries one PutEvents call takes.
MAX_ENTRIES = 10


class EventDeliveryFailure(PacsError):
    """The event bus did not take an event."""

    dimse_status = 0xA700
    http_status = 503


class EventBridgePublisher:
    def __init__(
        self,
        bus: str,
        *,
        client: Any | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        self.bus = bus
        self.client = client or boto3.client(
            "events", endpoint_url=endpoint_url, region_name=region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, tcp_keepalive=True),
        )

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        self.publish_batch([(detail_type, detail)])

    def publish_batch(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """One PutEvents call (at most 10 entries, as EventBridge takes)."""
        if not 0 < len(events) <= MAX_ENTRIES:
            raise ValueError(f"PutEvents takes 1 to {MAX_ENTRIES} events, not {len(events)}")
        entries = [{"Source": SOURCE, "DetailType": t, "Detail": orjson.dumps(d).decode(),
                    "EventBusName": self.bus} for t, d in events]
        names = ", ".join(t for t, _ in events)
        try:
            resp = self.client.put_events(Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            raise EventDeliveryFailure(f"{names} not sent to {self.bus}: {exc}") from exc
        if resp.get("FailedEntryCount"):
            failed = [e for e in resp["Entries"] if e.get("ErrorCode")]
            reason = "; ".join(f"{e.get('ErrorCode')} {e.get('ErrorMessage')}" for e in failed)
            raise EventDeliveryFailure(f"{names}: rejected by {self.bus}: {reason}")
