"""Lambda entry point of the anonymizer: an SQS batch → AnonymizerService (rule events) or the export
jobs' service (export tasks).

The anonymizer's queue carries two kinds of message:
- EventBridge events (`InstanceStored`, `StudyUpdated` on the PACS bus, through a rule whose target is
  the queue) → `AnonymizerService.handle` under the rules of PACS_DEID_RULES (validated on first use);
- export tasks, a JSON object with the key `exportJob`, sent by the export jobs (POST /exports and this
  function itself) → `ExportService.handle_delivery` (`pacs.services.exports`), which settles a task that
  can never succeed (the job marked failed) and, on the queue's last delivery (PACS_ANONYMIZER_MAX_RECEIVE,
  the redrive policy's maxReceiveCount), counts its instances as failed so the job still finishes.

Powertools reports partial batch failures: a record that fails for a transient reason is retried by SQS
and finally moved to the queue's DLQ by its redrive policy. A record that can never succeed (a corrupt
original, an option that cannot be honoured, a malformed message) is sent to
that DLQ at once, with the reason in its `error` message attribute (and logged), and reported done.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pacs.backends import Backend, open_backend
from pacs.config import Settings
from pacs.services.anonymizer import AnonymizerService, PermanentFailure
from pacs.services.deid_rules import describe, load_rules

from functions import sqs_dlq

logger = Logger(service="anonymizer")
processor = BatchProcessor(event_type=EventType.SQS)


@functools.cache
def settings() -> Settings:
    return Settings.from_env(backend="aws")


@functools.cache
def backend() -> Backend:
    """One backend per execution environment, reused across invocations."""
    return open_backend(settings())


@functools.cache
def anonymizer() -> AnonymizerService:
    rules = load_rules(settings().deid_rules)  # RulesError: every rule event fails, the error is logged
    logger.info("de-identification rules", extra={"rules": list(describe(rules))})
    return AnonymizerService.from_backend(backend(), rules)


@functools.cache
def _sqs() -> Any:
    return sqs_dlq.sqs_client(settings())


def dead_letter(record: SQSRecord, reason: str) -> None:
    """Send the record's body to the DLQ with the reason; without PACS_ANONYMIZER_DLQ_URL, fail the
    record (its redrive policy dead-letters it after the retries, the reason in the logs)."""
    sqs_dlq.dead_letter(record, reason, url=settings().anonymizer_dlq_url, client=_sqs,
                        failure=PermanentFailure)


def parse(body: str) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise PermanentFailure(f"the SQS message is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise PermanentFailure("the SQS message is not a JSON object")
    return message


def event_of(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(detail-type, detail) of an EventBridge event delivered to SQS."""
    try:
        detail_type, detail = message["detail-type"], message["detail"]
    except KeyError as exc:
        raise PermanentFailure(f"the SQS message is neither an EventBridge event nor an export task: "
                               f"no {exc}") from None
    if not isinstance(detail, dict):
        raise PermanentFailure("the event's detail is not an object")
    return str(detail_type), detail


def export_task(message: dict[str, Any], record: SQSRecord) -> str:
    """One delivery of an export task, by the export jobs' service (`pacs.services.exports`): settled
    ("done", "dropped", "given up" on the queue's last delivery) or raised to be delivered again."""
    from pacs.services.exports import ExportService

    attempt = int(record.attributes.approximate_receive_count or 1)
    max_attempts = int(os.environ.get("PACS_ANONYMIZER_MAX_RECEIVE", "5"))
    return ExportService.from_backend(backend()).handle_delivery(message, attempt=attempt,
                                                                 max_attempts=max_attempts)


def record_handler(record: SQSRecord) -> None:
    try:
        message = parse(record.body)
        if "exportJob" in message:
            outcome = export_task(message, record)
            logger.info("export task", extra={"exportJob": message.get("exportJob"), "outcome": outcome})
            return
        detail_type, detail = event_of(message)
        report = anonymizer().handle(detail_type, detail)
    except PermanentFailure as exc:
        logger.error("dead-lettered", extra={"reason": str(exc), "messageId": record.message_id})
        dead_letter(record, str(exc))
        return
    logger.info("anonymized", extra={
        "detailType": detail_type, "outcome": str(report.outcome),
        "results": [f"{r.rule} {r.outcome} {r.key}" for r in report.results]})


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)
