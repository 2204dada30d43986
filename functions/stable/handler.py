"""Lambda entry point of study-stable detection: an SQS batch of two kinds of message on one queue.

- EventBridge `StudyUpdated` events (a rule on the PACS bus → the queue): the change is recorded at the
  event's `time` in the study's item of the catalog's table (`pacs.catalog.stable_dynamodb`: a
  redelivery changes nothing) and, when it re-arms the timer, a timer message is sent to this queue with
  `DelaySeconds` (≤ 900: a longer quiet time is a chain of them).
- Timer messages `{"stableTimer": {partition, studyInstanceUID, lastChange}}`: dropped when the study
  changed since (a newer timer is on its way) or was already announced; sent again when not yet due;
  else `StudyStableService.fire_timer` emits `StudyStable` (a conditional claim of the generation).

A record that raises is retried by SQS (partial batch failures) and finally dead-lettered by the redrive
policy; nothing here is permanent except a malformed message, which is logged and dropped.
"""

from __future__ import annotations

import functools
import json
import math
import time
from datetime import datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pacs.backends import Backend, open_backend
from pacs.catalog.stable_dynamodb import DynamoTimerStore
from pacs.config import Settings
from pacs.events.publisher import STUDY_UPDATED
from pacs.services.study_stable import StudyStableService

logger = Logger(service="stable")
processor = BatchProcessor(event_type=EventType.SQS)
#: SQS's longest message delay.
MAX_DELAY = 900


@functools.cache
def settings() -> Settings:
    return Settings.from_env(backend="aws")


@functools.cache
def backend() -> Backend:
    return open_backend(settings())


@functools.cache
def timers() -> DynamoTimerStore:
    s = settings()
    return DynamoTimerStore(s.table, region=s.region, endpoint_url=s.endpoint_url)


@functools.cache
def service() -> StudyStableService:
    events = backend().events
    assert events is not None, "PACS_EVENT_BUS is not set"
    return StudyStableService(backend().catalog, timers(), events,
                              quiet_seconds=settings().study_quiet_seconds)


@functools.cache
def _sqs() -> Any:
    s = settings()
    return boto3.client("sqs", region_name=s.region, endpoint_url=s.endpoint_url or None)


def send_timer(partition: str, study: str, last_change: float, due: float) -> None:
    delay = min(MAX_DELAY, max(0, math.ceil(due - time.time())))
    body = {"stableTimer": {"partition": partition, "studyInstanceUID": study, "lastChange": last_change}}
    _sqs().send_message(QueueUrl=settings().stable_queue_url, MessageBody=json.dumps(body),
                        DelaySeconds=delay)


def on_event(message: dict[str, Any]) -> str:
    detail_type, detail = message.get("detail-type"), message.get("detail")
    if detail_type != STUDY_UPDATED or not isinstance(detail, dict):
        return "ignored"
    at = datetime.fromisoformat(str(message["time"]).replace("Z", "+00:00")).timestamp()
    if not service().handle(detail_type, detail, at):
        return "unchanged"
    if detail.get("deleted"):
        return "cancelled"
    send_timer(detail["partition"], detail["studyInstanceUID"], at, at + service().quiet)
    return "armed"


def on_timer(timer_message: dict[str, Any]) -> str:
    partition, study = str(timer_message["partition"]), str(timer_message["studyInstanceUID"])
    found = timers().get(partition, study)
    if found is None:
        return "unknown"
    timer, pending = found
    if timer.last_change != float(timer_message["lastChange"]):
        return "superseded"
    if pending:  # claimed by a delivery that failed before publishing: publish that generation
        service().republish(timer)
        return "recovered"
    if not timer.due:
        return "done"
    if timer.due > time.time():
        send_timer(partition, study, timer.last_change, timer.due)
        return "chained"
    return "emitted" if service().fire_timer(timer) is not None else "superseded"


def record_handler(record: SQSRecord) -> None:
    try:
        message = json.loads(record.body)
        timer = message.get("stableTimer")
        if timer is not None and not {"partition", "studyInstanceUID", "lastChange"} <= set(timer):
            raise ValueError("a timer message without its study")
    except (ValueError, AttributeError, TypeError) as exc:
        logger.error("malformed message dropped", extra={"reason": str(exc), "messageId": record.message_id})
        return
    outcome = on_timer(timer) if timer is not None else on_event(message)
    logger.info("study-stable", extra={"outcome": outcome})


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> Any:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                    context=context)
