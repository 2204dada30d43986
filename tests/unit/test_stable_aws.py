"""The study-stable function on moto: StudyUpdated events and timer messages on one SQS queue, the state
in the catalog's DynamoDB table (conditional updates), StudyStable once per generation."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pacs.backends import Backend, ingest_service, open_backend
from pacs.catalog.dynamodb import DynamoCatalog
from pacs.catalog.stable_dynamodb import DynamoTimerStore
from pacs.config import Settings
from pacs.events.details import study_detail
from pacs.events.publisher import STUDY_UPDATED
from pacs.services.study_stable import StudyStableService

from tests.unit.aws import fake_aws_credentials
from tests.unit.conftest import MakePart10

STUDY = "1.2.826.0.1.3680043.8.498.77"


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        self.published.append((detail_type, detail))


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Backend, Recorder, str]]:
    import moto

    from functions.stable import handler

    fake_aws_credentials(monkeypatch)
    with moto.mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="pacs-objects")
        DynamoCatalog("pacs-table", create=True).close()
        url = boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="stable")["QueueUrl"]
        settings = Settings(backend="aws", bucket="pacs-objects", table="pacs-table", stable_queue_url=url,
                            study_quiet_seconds=30)
        backend = open_backend(settings)
        recorder = Recorder()
        service = StudyStableService(backend.catalog, DynamoTimerStore("pacs-table"), recorder,
                                     quiet_seconds=30)
        for name in ("settings", "backend", "timers", "service", "_sqs"):
            getattr(handler, name).cache_clear()
        monkeypatch.setattr(handler, "settings", lambda: settings)
        monkeypatch.setattr(handler, "service", lambda: service)
        yield handler, backend, recorder, url
        backend.close()
        for name in ("timers", "_sqs"):
            getattr(handler, name).cache_clear()


def event(backend: Backend, at: float) -> str:
    detail = study_detail(backend.catalog, "default", STUDY, "InstanceStored", "x")
    iso = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({"detail-type": STUDY_UPDATED, "source": "pacs", "time": iso, "detail": detail})


def deliver(handler: Any, body: str) -> None:
    handler.record_handler(SQSRecord({"messageId": "m", "body": body, "attributes": {}}))


def timers_sent(url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    out = []
    while msgs := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for m in msgs:
            out.append(json.loads(m["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return out


def test_stable_once_per_generation(aws: Any, make_part10: MakePart10) -> None:
    handler, backend, recorder, url = aws
    ingest = ingest_service(backend, index=True)
    ingest.ingest(make_part10(StudyInstanceUID=STUDY, SeriesInstanceUID=f"{STUDY}.1",
                              SOPInstanceUID=f"{STUDY}.1.1"))
    past = float(int(time.time()) - 100)  # quiet time over: the timer message has no delay
    body = event(backend, past)
    deliver(handler, body)
    deliver(handler, body)  # a redelivery: no second timer
    [timer] = timers_sent(url)
    assert timer["stableTimer"]["lastChange"] == past
    deliver(handler, json.dumps(timer))
    deliver(handler, json.dumps(timer))  # the timer redelivered: once
    assert [d["generation"] for _, d in recorder.published] == [1]
    assert recorder.published[0][1]["numberOfInstances"] == 1
    ingest.ingest(make_part10(StudyInstanceUID=STUDY, SeriesInstanceUID=f"{STUDY}.1",
                              SOPInstanceUID=f"{STUDY}.1.2"))
    deliver(handler, event(backend, past + 10))  # a late instance
    [late] = timers_sent(url)
    deliver(handler, json.dumps(timer))  # the old timer: superseded
    deliver(handler, json.dumps(late))
    assert [d["generation"] for _, d in recorder.published] == [1, 2]
    assert recorder.published[1][1]["numberOfInstances"] == 2


def test_a_timer_not_due_is_chained(aws: Any, make_part10: MakePart10) -> None:
    handler, backend, recorder, _ = aws
    ingest_service(backend, index=True).ingest(
        make_part10(StudyInstanceUID=STUDY, SeriesInstanceUID=f"{STUDY}.1", SOPInstanceUID=f"{STUDY}.1.1"))
    now = float(int(time.time()))
    deliver(handler, event(backend, now))  # a timer sent with a delay of about 30 s
    body = {"stableTimer": {"partition": "default", "studyInstanceUID": STUDY, "lastChange": now}}
    assert handler.on_timer(body["stableTimer"]) == "chained"
    assert recorder.published == []
