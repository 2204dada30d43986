"""Lambda entry point of the indexer: SQS batch of S3 notifications → IndexerService.

Thin: Powertools parses the SQS batch and reports partial failures (one bad object fails only its
own message, which SQS redelivers and finally dead-letters); each record's body is an S3
notification (direct, or wrapped by SNS) turned into `ObjectEvent`s for the same service the
embedded worker calls.
"""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pacs.backends import open_backend
from pacs.config import Settings
from pacs.events.model import ObjectEvent
from pacs.events.sqs import parse_body
from pacs.monitoring import emf, metrics
from pacs.services.indexer import IndexerService

logger = Logger(service="indexer")
processor = BatchProcessor(event_type=EventType.SQS)


@functools.cache
def indexer() -> IndexerService:
    """One backend per execution environment, reused across invocations."""
    backend = open_backend(Settings.from_env(backend="aws"))
    return IndexerService(backend.store, backend.catalog, backend.events)


def events_of(body: str) -> list[ObjectEvent]:
    """The object events in an SQS message body: an S3 notification, or one wrapped by SNS (parsed as
    the local worker's SQS adapter does). Anything else fails its record: it ends in the DLQ, seen."""
    events = parse_body(body)
    if events is None:
        raise ValueError("the SQS message is not an S3 notification")
    return events


def record_handler(record: SQSRecord) -> None:
    for event in events_of(record.body):
        try:
            outcome = indexer().handle(event)
        except Exception:
            metrics.indexed("failed")
            raise
        metrics.indexed_event(event.event_time, outcome, event.size)  # committed (DynamoDB transaction)
        logger.info("indexed", extra={"key": event.key, "kind": event.kind, "outcome": str(outcome)})


@logger.inject_lambda_context
@emf.flushed("indexer")  # the figures of `pacs.monitoring.metrics` as EMF lines
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    with indexer().batch():  # series metadata rebuilt once per changed series, after the batch
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
