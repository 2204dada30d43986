"""Export jobs on the aws backend (moto): job records in DynamoDB, tasks on the anonymizer's SQS queue
(as the anonymizer function receives them), the ZIP uploaded to the exports bucket in parts and
presigned for download."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import boto3
import pytest
from pacs.backends import Backend, ingest_service, open_backend
from pacs.catalog.dynamodb import DynamoCatalog
from pacs.config import Settings
from pacs.events.tasks import SqsTaskQueue
from pacs.services.exports import ExportService

from tests.unit.aws import fake_aws_credentials
from tests.unit.conftest import MakePart10

STUDY = "1.2.826.0.1.3680043.8.498.55"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> Iterator[Backend]:
    import moto

    fake_aws_credentials(monkeypatch)
    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        for bucket in ("pacs-objects", "pacs-exports"):
            s3.create_bucket(Bucket=bucket)
        DynamoCatalog("pacs-table", create=True).close()
        url = boto3.client("sqs", region_name="us-east-1").create_queue(QueueName="anonymizer")["QueueUrl"]
        arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="pacs-deid", SecretString="0123456789abcdef" * 4)["ARN"]
        backend = open_backend(Settings(backend="aws", bucket="pacs-objects", table="pacs-table",
                                        exports_bucket="pacs-exports", anonymizer_queue_url=url,
                                        deid_secret=arn))
        yield backend
        backend.close()


def test_a_zip_job_runs_from_the_sqs_queue(aws: Backend, make_part10: MakePart10) -> None:
    ingest = ingest_service(aws, index=True)
    for series in (1, 2):
        for n in range(3):
            ingest.ingest(make_part10(StudyInstanceUID=STUDY, SeriesInstanceUID=f"{STUDY}.{series}",
                                      SOPInstanceUID=f"{STUDY}.{series}.{n}"))
    svc = ExportService.from_backend(aws)
    svc.chunk = 2
    assert isinstance(svc.queue, SqsTaskQueue)
    job = svc.create({"studies": [STUDY], "destination": {"type": "zip"}})
    handled = 0
    while tasks := svc.queue.receive(10):  # what the anonymizer function does with each record
        for t in tasks:
            svc.handle_task(t.body)
            if t.body["step"] == "series" and t.body["task"] == 0:
                svc.handle_task(t.body)  # a redelivery: counted once
            svc.queue.ack(t.id)
            handled += 1
    got = svc.get(job.id)
    assert got is not None and got.status == "done", got
    assert (got.instances, got.done, got.tasks, got.tasks_done, handled) == (6, 6, 4, 4, 1 + 4 + 1)
    key = got.output["zip"]
    assert got.output["bucket"] == "pacs-exports" and key.startswith(f"default/export/{job.id}/export-{job.id}-")
    assert [i.key for i in aws.exports_store.list(f"default/export/{job.id}/")] == [key]  # nothing else
    assert list(aws.store.list("default/derived/exports/")) == []  # the plan, once the job is done
    with zipfile.ZipFile(io.BytesIO(aws.exports_store.get(key))) as zf:
        assert len(zf.namelist()) == 6 and zf.testzip() is None
    assert list(aws.exports_store.list(f"default/export/{job.id}/files/")) == []
    assert aws.store.head(key) is None  # in the exports bucket, not beside the originals
    url = aws.exports_store.presigned_get(key, 60)
    assert url is not None and "pacs-exports" in url
    assert [j.id for j in svc.recent()] == [job.id]


def test_without_a_task_queue_the_api_says_why(aws: Backend) -> None:
    import dataclasses

    from fastapi.testclient import TestClient

    from functions.dicomweb.app import create_app

    aws.settings = dataclasses.replace(aws.settings, anonymizer_queue_url="")
    with TestClient(create_app(aws)) as client:
        r = client.post("/exports", json={"studies": [STUDY], "destination": {"type": "zip"}})
    assert r.status_code == 503
    assert r.json()["error"] == ("export jobs are not available here: export jobs on the aws backend need "
                                 "PACS_ANONYMIZER_QUEUE_URL")
