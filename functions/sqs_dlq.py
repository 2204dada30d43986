"""What the SQS-driven functions (transcoder, anonymizer) share: their SQS client and sending a record
that can never succeed to their queue's DLQ, with the reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pacs.config import Settings


def sqs_client(settings: Settings) -> Any:
    return boto3.client("sqs", region_name=settings.region, endpoint_url=settings.endpoint_url or None)


def dead_letter(record: SQSRecord, reason: str, *, url: str, client: Callable[[], Any],
                failure: type[Exception]) -> None:
    """Send the record's body to the DLQ at `url` with the reason (its `error` attribute); without a
    URL, raise `failure` (the redrive policy dead-letters the record after the retries)."""
    if not url:
        raise failure(reason)
    client().send_message(QueueUrl=url, MessageBody=record.body, MessageAttributes={
        "error": {"DataType": "String", "StringValue": reason[:4096]},
        "sourceMessageId": {"DataType": "String", "StringValue": record.message_id},
    })
