"""Lambda entry point of the transcoder: SQS batch of EventBridge events → TranscoderService.

Driven by `InstanceStored` (and `InstanceDeleted`) on the PACS bus, through a rule whose target is the
transcoder's SQS queue (an SQS event source maps it here; EventBridge → SQS also buffers bursts).
Powertools reports partial batch failures: a record that fails for a transient reason is retried by
SQS and finally moved to the queue's DLQ by its redrive policy. A record that can never succeed (a
corrupt or undecodable original) is sent to that DLQ at once, with the reason in its `error` message
attribute (and logged), and reported done. The policy comes from PACS_TRANSCODE_POLICY (JSON text or
a file in the bundle), validated on the first invocation.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pacs.backends import open_backend
from pacs.config import Settings
from pacs.services.transcode_policy import describe, load_policy
from pacs.services.transcoder import PermanentFailure, TranscoderService

from functions import sqs_dlq

logger = Logger(service="transcoder")
processor = BatchProcessor(event_type=EventType.SQS)


@functools.cache
def settings() -> Settings:
    return Settings.from_env(backend="aws")


@functools.cache
def transcoder() -> TranscoderService:
    """One backend and policy per execution environment, reused across invocations."""
    s = settings()
    policy = load_policy(s.transcode_policy)  # PolicyError: every record fails, the error is logged
    logger.info("transcode policy", extra={"rules": list(describe(policy))})
    backend = open_backend(s)
    return TranscoderService(backend.store, backend.catalog, policy)


@functools.cache
def _sqs() -> Any:
    return sqs_dlq.sqs_client(settings())


def dead_letter(record: SQSRecord, reason: str) -> None:
    """Send the record's body to the DLQ with the reason; without PACS_TRANSCODE_DLQ_URL, fail the
    record (its redrive policy dead-letters it after the retries, the reason in the logs)."""
    sqs_dlq.dead_letter(record, reason, url=settings().transcode_dlq_url, client=_sqs,
                        failure=PermanentFailure)


def parse(body: str) -> tuple[str, dict[str, Any]]:
    """(detail-type, detail) of an EventBridge event delivered to SQS."""
    try:
        event = json.loads(body)
        detail_type, detail = event["detail-type"], event["detail"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PermanentFailure(f"the SQS message is not an EventBridge event: {exc}") from None
    if not isinstance(detail, dict):
        raise PermanentFailure("the event's detail is not an object")
    return str(detail_type), detail


def record_handler(record: SQSRecord) -> None:
    try:
        detail_type, detail = parse(record.body)
        report = transcoder().handle(detail_type, detail)
    except PermanentFailure as exc:
        logger.error("dead-lettered", extra={"reason": str(exc), "messageId": record.message_id})
        dead_letter(record, str(exc))
        return
    logger.info("transcoded", extra={"sop": detail.get("sopInstanceUID"), "outcome": str(report.outcome),
                                     "copies": [f"{c.outcome} {c.key}" for c in report.copies]})


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)
