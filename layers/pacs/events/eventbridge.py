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
        entry = {"Source": SOURCE, "DetailType": detail_type, "Detail": orjson.dumps(detail).decode(),
                 "EventBusName": self.bus}
        try:
            resp = self.client.put_events(Entries=[entry])
        except (ClientError, BotoCoreError) as exc:
            raise EventDeliveryFailure(f"{detail_type} not sent to {self.bus}: {exc}") from exc
        if resp.get("FailedEntryCount"):
            failed = resp["Entries"][0]
            reason = f"{failed.get('ErrorCode')} {failed.get('ErrorMessage')}"
            raise EventDeliveryFailure(f"{detail_type} rejected by {self.bus}: {reason}")
