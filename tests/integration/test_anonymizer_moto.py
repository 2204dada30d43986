"""The event-driven anonymizer on moto (in-process `mock_aws`), with the production handlers:

    S3 put into the research partition → notification → SQS → indexer handler → DynamoDB
      → EventBridge (InstanceStored, StudyUpdated) → rule → the anonymizer's SQS queue
      → anonymizer handler (the SQS batch moto delivered) → the de-identified copy ingested into the
        target partition (indexed there: catalog rows, its own events) or written to the exports bucket

moto cannot invoke a Lambda from EventBridge or SQS without Docker (FIELD-NOTES §2a): the messages the
rule really delivered to the queue are turned into the Lambda SQS event and the handler is called.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pydicom
import pytest
from pacs.deid.secrets import project_key
from pacs.services.ingest import IngestService
from pacs.storage.keys import parse_instance_key
from pacs.storage.s3 import S3BlobStore

from functions.anonymizer import handler as anonymizer_handler
from functions.indexer import handler as indexer_handler
from tests.integration import test_moto_pipeline as pipeline
from tests.integration.sqs_consumer import Consumer, event_queue
from tests.integration.test_moto_pipeline import BUCKET, REGION, MotoPacs
from tests.unit.conftest import build_dataset, to_part10

aws = pipeline.aws  # the moto world fixture
BUS = "pacs-it-bus"
EXPORTS = "pacs-it-exports"
SRC, DST = "trial-7", "trial-7-deid"
STUDY = "1.2.826.0.1.3680043.8.498.707"
PATIENT = ("Research^Volunteer", "RV-0042")
RULES = {"rule": [
    {"name": "t7", "partitions": [SRC], "destination": {"partition": DST}},
    {"name": "t7-files", "partitions": [SRC], "trigger": "StudyUpdated", "modalities": ["MR"],
     "destination": {"exports": True}},
]}


@dataclass
class Anonymizing(Consumer):
    exports: S3BlobStore
    secret: bytes

    def put(self, n: int, **attrs: Any) -> bytes:
        """An instance put into the research partition, then indexed by the indexer handler."""
        ds = build_dataset(StudyInstanceUID=STUDY, SeriesInstanceUID=f"{STUDY}.1", SOPInstanceUID=f"{STUDY}.1.{n}",
                           PatientName=PATIENT[0], PatientID=PATIENT[1], InstanceNumber=n,
                           FrameOfReferenceUID=f"{STUDY}.5", **attrs)
        data = to_part10(ds)
        IngestService(self.world.store, partition=SRC).ingest(data)
        assert self.world.deliver(self.world.receive()) == []
        return data

    def deliver(self, messages: list[dict[str, Any]]) -> list[str]:
        return self.batch(anonymizer_handler.handler, messages)

    def copies(self) -> list[str]:
        return [b.key for b in self.world.store.list(f"{DST}/studies/")]


def _clear() -> None:
    for cached in (indexer_handler.indexer, anonymizer_handler.settings, anonymizer_handler.backend,
                   anonymizer_handler.anonymizer, anonymizer_handler._sqs):
        cached.cache_clear()


@pytest.fixture
def an(aws: MotoPacs, monkeypatch: pytest.MonkeyPatch) -> Iterator[Anonymizing]:
    import boto3

    # the research partition is indexed too (infra/anonymizer.py adds a notification per source partition)
    config = aws.s3.get_bucket_notification_configuration(Bucket=BUCKET)
    [queue_config] = config["QueueConfigurations"]
    research = json.loads(json.dumps(queue_config))
    research["Id"] = "pacs-index-research"
    research["Filter"]["Key"]["FilterRules"] = [{"Name": "prefix", "Value": f"{SRC}/studies/"},
                                                {"Name": "suffix", "Value": ".dcm"}]
    aws.s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={
        "QueueConfigurations": [queue_config, research]})
    aws.receive(keep_test_events=True)
    aws.s3.create_bucket(Bucket=EXPORTS)
    # the queue, DLQ and rule of infra/anonymizer.py
    url, arn, dlq_url = event_queue(aws, BUS, "anonymizer", ["InstanceStored", "StudyUpdated"])
    monkeypatch.setenv("PACS_EVENT_BUS", BUS)
    monkeypatch.setenv("PACS_DEID_RULES", json.dumps(RULES))
    monkeypatch.setenv("PACS_ANONYMIZER_DLQ_URL", dlq_url)
    monkeypatch.setenv("PACS_ANONYMIZER_QUEUE_URL", url)
    monkeypatch.setenv("PACS_EXPORTS_BUCKET", EXPORTS)
    master = os.urandom(32)
    secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="pacs-it-deid", SecretString=master.hex())
    monkeypatch.setenv("PACS_DEID_SECRET", secret["ARN"])  # the stack's secret, as infra/anonymizer.py sets it
    _clear()
    try:
        yield Anonymizing(aws, url, arn, dlq_url, S3BlobStore(EXPORTS, client=aws.s3), master)
    finally:
        _clear()


def test_an_instance_put_into_the_research_partition_is_deidentified_and_indexed(an: Anonymizing) -> None:
    original = an.put(1)
    messages = an.receive()
    assert sorted(json.loads(m["Body"])["detail-type"] for m in messages) == ["InstanceStored", "StudyUpdated"]
    assert an.deliver(messages) == []
    [copy_key] = an.copies()
    ref = parse_instance_key(copy_key)
    assert ref is not None and ref.partition == DST
    copy = an.world.store.get(copy_key)
    row = an.world.catalog.get_instance(DST, ref.study_uid, ref.series_uid, ref.sop_uid)
    study = an.world.catalog.get_study(DST, ref.study_uid)
    assert row is not None and study is not None  # indexed in the target partition: searchable
    catalogued = json.dumps([row.attrs, study.attrs, row.key])
    for secret in (*PATIENT, STUDY, f"{STUDY}.1", f"{STUDY}.1.1", f"{STUDY}.5"):
        assert secret.encode() not in copy, secret
        assert secret not in catalogued, secret
    assert pydicom.dcmread(io.BytesIO(copy)).PatientIdentityRemoved == "YES"
    assert an.world.store.get(f"{SRC}/studies/{STUDY}/series/{STUDY}.1/instances/{STUDY}.1.1.dcm") == original
    # the copy's own events come back to the queue: not taken again (no rule takes the target partition)
    mine = an.receive()
    assert {json.loads(m["Body"])["detail"]["partition"] for m in mine} == {DST}
    assert an.deliver(mine) == []
    assert an.copies() == [copy_key]
    # the same events again (SQS at least once, another messageId): nothing new, nothing dead-lettered
    again = [{**m, "MessageId": str(uuid.uuid4())} for m in messages]
    assert an.deliver(messages + again) == []
    assert an.copies() == [copy_key] and an.world.store.get(copy_key) == copy
    assert an.receive(an.dlq_url) == [] and an.receive() == []
    # the pseudonyms are keyed by the project's key from the stack's Secrets Manager secret
    assert anonymizer_handler.anonymizer().deidentifiers.keys("t7") == project_key(an.secret, "t7")


def test_study_updated_rule_writes_part10_files_to_the_exports_bucket(an: Anonymizing) -> None:
    an.put(2, Modality="MR")
    messages = an.receive()
    assert an.deliver(messages) == []
    study_updated = [m for m in messages if json.loads(m["Body"])["detail-type"] == "StudyUpdated"]
    service = anonymizer_handler.anonymizer()
    event = json.loads(study_updated[0]["Body"])
    assert service.handle(event["detail-type"], event["detail"]).outcome == "up-to-date"  # recorded
    exported = [b.key for b in an.exports.list(f"{SRC}/export/rules/t7-files/files/")]
    assert len(exported) == 1 and exported[0].endswith(".dcm")
    data = an.exports.get(exported[0])
    assert PATIENT[0].encode() not in data and STUDY.encode() not in data
    assert not list(an.world.store.list(f"{SRC}/export/"))  # in the exports bucket, not the originals'


def test_a_malformed_event_is_dead_lettered_with_the_reason(an: Anonymizing) -> None:
    body = json.dumps({"source": "pacs", "detail-type": "InstanceStored",
                       "detail": {"partition": SRC, "studyInstanceUID": "../etc"}})
    an.world.sqs.send_message(QueueUrl=an.url, MessageBody=body)
    an.world.sqs.send_message(QueueUrl=an.url, MessageBody="not json")
    assert an.deliver(an.receive()) == []
    dead = an.receive(an.dlq_url)
    reasons = sorted(m["MessageAttributes"]["error"]["StringValue"] for m in dead)
    assert reasons[0].startswith("not an instance event detail") and "not JSON" in reasons[1]


def test_an_export_job_runs_through_the_anonymizer_function(an: Anonymizing,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """An export job on AWS (as POST /exports makes it): its plan, series and finish tasks travel on the
    anonymizer's queue and are run by its handler (ExportService.handle_delivery) until the job is done,
    the de-identified files in the exports bucket; a task of a job that does not exist is settled (no
    retry, no dead letter)."""
    from pacs.services.exports import ExportService

    monkeypatch.setenv("PACS_PARTITION", SRC)
    _clear()
    an.put(1)
    an.put(2)
    service = ExportService.from_backend(anonymizer_handler.backend())
    job = service.create({"studies": [STUDY], "profile": "basic", "destination": {"type": "files"}})
    an.world.sqs.send_message(QueueUrl=an.url, MessageBody=json.dumps({"exportJob": "no-such-job", "step": "plan"}))
    for _ in range(20):  # rule events, the plan, the series task, ... until the queue is empty
        messages = an.receive()
        if not messages:
            break
        assert an.deliver(messages) == []
    done = service.jobs.get(job.id)
    assert done is not None and (done.status, done.instances, done.done, done.failed) == ("done", 2, 2, 0)
    files = [b.key for b in an.exports.list(f"{SRC}/export/{job.id}/")]
    assert len(files) == 2
    for key in files:
        data = an.exports.get(key)
        for secret in (*PATIENT, STUDY, f"{STUDY}.1.1", f"{STUDY}.1.2"):
            assert secret.encode() not in data, secret
    assert an.receive(an.dlq_url) == []
