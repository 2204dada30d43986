"""The AWS pipeline end to end on moto (in-process `mock_aws`, no Docker, no network):

    IngestService → S3 → (bucket notification) → SQS → indexer Lambda handler → DynamoDB
                                                   → DICOMweb app (TestClient and Mangum/API Gateway)

SQS messages are the ones moto really delivered; they are turned into the Lambda SQS event the
event-source mapping would send, and `functions.indexer.handler.handler` is called with it.

Set CAPTURE_EVENTS=1 to rewrite the captured event fixtures in tests/events/ from what moto delivers.
"""

from __future__ import annotations

import base64
import functools
import importlib
import io
import json
import os
import random
import re
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pydicom
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from fastapi.testclient import TestClient
from mangum import Mangum
from moto import mock_aws
from pacs.backends import open_backend
from pacs.catalog.dynamodb import DynamoCatalog
from pacs.catalog.matching import condition
from pacs.config import Settings
from pacs.events.model import ObjectEvent
from pacs.services.ingest import IngestService, Outcome
from pacs.services.reconcile import reconcile
from pacs.storage.keys import instance_key, parse_instance_key
from pacs.storage.s3 import S3BlobStore
from pydicom.data import get_testdata_file

from functions.dicomweb.app import create_app
from functions.indexer import handler as indexer_handler

BUCKET = "pacs-it-bucket"
TABLE = "pacs-it-catalog"
QUEUE = "pacs-it-index"
REGION = "us-east-1"
P = "default"
EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"
CREATED_FIXTURE = EVENTS_DIR / "s3_object_created_sqs.json"
REMOVED_FIXTURE = EVENTS_DIR / "s3_object_removed_sqs.json"
WADO_ACCEPT = 'multipart/related; type="application/dicom"'
JPEG2000 = "1.2.840.10008.1.2.4.91"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
POISON_KEY = "default/studies/1.2/series/1.3/instances/1.4.dcm"


# -- DICOM test data --------------------------------------------------------------------------------


def _testdata(name: str) -> bytes:
    """A pydicom test file as the PACS stores it: its preamble (a TIFF header in some) zeroed."""
    path = get_testdata_file(name)
    assert path is not None, f"pydicom test file {name} is missing"
    data = Path(str(path)).read_bytes()
    return bytes(128) + data[128:]


def _variant(base: bytes, sop_suffix: str, *, series_suffix: str = "", instance_number: int | None = None,
             comment: str | None = None) -> bytes:
    """A copy of a Part 10 object as another instance (and series): consistent UIDs, meta included."""
    ds = pydicom.dcmread(io.BytesIO(base))
    if sop_suffix:
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{sop_suffix}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if series_suffix:
        ds.SeriesInstanceUID = f"{ds.SeriesInstanceUID}.{series_suffix}"
        ds.SeriesNumber = int(ds.get("SeriesNumber") or 0) + 100
    if instance_number is not None:
        ds.InstanceNumber = instance_number
    if comment is not None:
        ds.ImageComments = comment
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@dataclass(frozen=True)
class Files:
    ct: bytes  # CT_small: study A, series A1 (PatientID 1CT1)
    ct2: bytes  # study A, series A1, a second instance
    ct3: bytes  # study A, series A2
    mr: bytes  # MR_small: study B (PatientID 4MR1)
    mr2: bytes  # study B, a second instance
    mr_v2: bytes  # MR_small with other content: the same SOP Instance, re-sent
    j2k: bytes  # JPEG2000.dcm (JPEG 2000 transfer syntax): study C (PatientID 8NM1)
    j2k2: bytes  # study C, a second instance


@functools.cache
def files() -> Files:
    ct, mr, j2k = _testdata("CT_small.dcm"), _testdata("MR_small.dcm"), _testdata("JPEG2000.dcm")
    return Files(
        ct=ct,
        ct2=_variant(ct, "2", instance_number=2),
        ct3=_variant(ct, "3", series_suffix="3", instance_number=1),
        mr=mr,
        mr2=_variant(mr, "2", instance_number=2),
        mr_v2=_variant(mr, "", comment="re-sent with other content"),
        j2k=j2k,
        j2k2=_variant(j2k, "2", instance_number=2),
    )


def uids(data: bytes) -> tuple[str, str, str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def key_of(data: bytes) -> str:
    return instance_key(P, *uids(data))


# -- the moto world ---------------------------------------------------------------------------------


@dataclass
class FakeLambdaContext:
    """What Powertools reads from a LambdaContext."""

    function_name: str = "pacs-indexer"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:pacs-indexer"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def lambda_context() -> Any:
    """A stand-in for both Powertools' and Mangum's LambdaContext types (they differ)."""
    return FakeLambdaContext()


#: Per study (series, instances, bytes); per series (instances, bytes); instances (key, size, etag).
State = tuple[dict[str, tuple[int, int, int]], dict[tuple[str, str], tuple[int, int]], set[tuple[str, int, str]]]


@dataclass
class MotoPacs:
    s3: Any
    sqs: Any
    queue_url: str
    queue_arn: str
    store: S3BlobStore
    catalog: DynamoCatalog
    #: The s3:TestEvent message S3 sent when the notification was configured.
    test_event: dict[str, Any] | None = None

    def ingest(self, data: bytes, expected: Outcome = Outcome.STORED) -> str:
        """Through the gateway's path; returns the object key."""
        stored = IngestService(self.store, partition=P).ingest(data)
        assert stored.outcome is expected
        return stored.key

    def receive(self, *, keep_test_events: bool = False) -> list[dict[str, Any]]:
        """Every message now in the queue (deleted from it, as Lambda's poller does after a batch)."""
        out: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=60,
                AttributeNames=["All"], MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not got:
                return out
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
            out += [m for m in got if keep_test_events or not is_test_event(m)]

    def record(self, message: dict[str, Any], *, receive_count: int = 1) -> dict[str, Any]:
        """The Lambda SQS event record for one received message (as the event-source mapping builds it)."""
        attributes = dict(message.get("Attributes", {}))
        attributes["ApproximateReceiveCount"] = str(receive_count)
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"] + ("" if receive_count == 1 else f"#{receive_count}"),
            "body": message["Body"],
            "attributes": attributes,
            "messageAttributes": {},
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": REGION,
        }

    def deliver(self, messages: list[dict[str, Any]]) -> list[str]:
        """One Lambda invocation with these messages; returns the messageIds reported as failed."""
        return invoke_indexer([self.record(m) for m in messages])

    # -- ground truth vs catalog ---------------------------------------------------------------------

    def store_state(self, ignore: frozenset[str] = frozenset()) -> State:
        """From the bucket listing: per study (series, instances, bytes), per series (instances, bytes),
        and every instance (key, size, etag). `ignore`: keys that cannot be indexed (not DICOM)."""
        studies: dict[str, tuple[set[str], int, int]] = {}
        series: dict[tuple[str, str], tuple[int, int]] = {}
        instances: set[tuple[str, int, str]] = set()
        for info in self.store.list(f"{P}/studies/"):
            ref = parse_instance_key(info.key)
            if ref is None or info.key in ignore:
                continue
            s, n, b = studies.get(ref.study_uid, (set(), 0, 0))
            studies[ref.study_uid] = (s | {ref.series_uid}, n + 1, b + info.size)
            n2, b2 = series.get((ref.study_uid, ref.series_uid), (0, 0))
            series[(ref.study_uid, ref.series_uid)] = (n2 + 1, b2 + info.size)
            instances.add((info.key, info.size, info.etag))
        return {k: (len(s), n, b) for k, (s, n, b) in studies.items()}, series, instances

    def catalog_state(self) -> State:
        """The same, from the catalog's queries (every study through the date index, no Scan)."""
        studies = {r.study_uid: (r.n_series, r.n_instances, r.size)
                   for r in self.catalog.query_studies(P, []).rows}
        series: dict[tuple[str, str], tuple[int, int]] = {}
        instances: set[tuple[str, int, str]] = set()
        for study_uid in studies:
            for se in self.catalog.query_series(P, study_uid, []).rows:
                series[(study_uid, se.series_uid)] = (se.n_instances, se.size)
            for i in self.catalog.query_instances(P, study_uid, None, []).rows:
                instances.add((i.key, i.size, i.etag))
        return studies, series, instances

    def assert_catalog_matches_store(self, *, ignore: frozenset[str] = frozenset()) -> None:
        assert self.catalog_state() == self.store_state(ignore)


def is_test_event(message: dict[str, Any]) -> bool:
    return bool(json.loads(message["Body"]).get("Event") == "s3:TestEvent")


def invoke_indexer(records: list[dict[str, Any]]) -> list[str]:
    result = indexer_handler.handler({"Records": records}, lambda_context())
    assert set(result) == {"batchItemFailures"}
    return [f["itemIdentifier"] for f in result["batchItemFailures"]]


def event_names(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for m in messages:
        for r in json.loads(m["Body"])["Records"]:
            out.append((r["eventName"], ObjectEvent.from_s3_record(r).key))  # type: ignore[union-attr]
    return out


@pytest.fixture
def aws(aws_credentials: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoPacs]:
    """Bucket → queue notifications, the catalog table, and the `PACS_*` settings naming them."""
    monkeypatch.setenv("PACS_BACKEND", "aws")
    monkeypatch.setenv("PACS_BUCKET", BUCKET)
    monkeypatch.setenv("PACS_TABLE", TABLE)
    monkeypatch.setenv("PACS_REGION", REGION)
    indexer_handler.indexer.cache_clear()
    try:
        with mock_aws():
            s3 = boto3.client("s3", region_name=REGION)
            sqs = boto3.client("sqs", region_name=REGION)
            s3.create_bucket(Bucket=BUCKET)
            queue_url = sqs.create_queue(QueueName=QUEUE, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
            queue_arn = sqs.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            policy = {
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "S3Notifications",
                    "Effect": "Allow",
                    "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{BUCKET}"}},
                }],
            }
            sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
            s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={
                "QueueConfigurations": [{
                    "Id": "pacs-index",
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                    "Filter": {"Key": {"FilterRules": [
                        {"Name": "prefix", "Value": f"{P}/studies/"},
                        {"Name": "suffix", "Value": ".dcm"},
                    ]}},
                }],
            })
            world = MotoPacs(
                s3=s3, sqs=sqs, queue_url=queue_url, queue_arn=queue_arn,
                store=S3BlobStore(BUCKET, client=s3),
                catalog=DynamoCatalog(TABLE, region=REGION, create=True),
            )
            setup_messages = world.receive(keep_test_events=True)
            assert [is_test_event(m) for m in setup_messages] == [True]
            world.test_event = setup_messages[0]
            yield world
    finally:
        indexer_handler.indexer.cache_clear()


# -- DICOMweb helpers -------------------------------------------------------------------------------


def multipart_parts(content_type: str, body: bytes) -> list[bytes]:
    """The bodies of a multipart/related response (RFC 2046 delimiters)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    assert m is not None, content_type
    sections = (b"\r\n" + body).split(b"\r\n--" + m[1].encode())
    assert sections[0] == b"" and sections[-1].startswith(b"--"), "malformed multipart body"
    parts = []
    for section in sections[1:-1]:
        head, sep, content = section.partition(b"\r\n\r\n")
        assert sep and b"content-type: application/dicom" in head.lower()
        parts.append(content)
    return parts


def rest_api_event(path: str, query: dict[str, list[str]] | None = None,
                   headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy-integration event for GET `path` on stage `prod`."""
    hdrs = {
        "Host": "abc123.execute-api.us-east-1.amazonaws.com",
        "User-Agent": "pytest",
        "X-Forwarded-For": "10.0.0.1",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        "Accept": "application/dicom+json",
        **(headers or {}),
    }
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": "GET",
        "headers": hdrs,
        "multiValueHeaders": {k: [v] for k, v in hdrs.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} if query else None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourceId": "abc123",
            "resourcePath": "/{proxy+}",
            "httpMethod": "GET",
            "extendedRequestId": "a1b2c3=",
            "requestTime": "01/Jan/2026:00:00:00 +0000",
            "path": f"/prod{path}",
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": "prod",
            "domainPrefix": "abc123",
            "requestTimeEpoch": int(time.time() * 1000),
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "10.0.0.1", "userAgent": "pytest"},
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "apiId": "abc123",
        },
        "body": None,
        "isBase64Encoded": False,
    }


def lambda_body(response: dict[str, Any]) -> bytes:
    body = response.get("body") or ""
    return base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()


def header(response: dict[str, Any], name: str) -> str:
    return next(v for k, v in response["headers"].items() if k.lower() == name.lower())


def first(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


# -- 1-2: the happy path ----------------------------------------------------------------------------


def test_ingest_index_query_retrieve(aws: MotoPacs, monkeypatch: pytest.MonkeyPatch) -> None:
    f = files()
    originals = {key: data for data in (f.ct, f.ct2, f.mr, f.j2k) for key in [aws.ingest(data)]}
    messages = aws.receive()
    assert sorted(event_names(messages)) == sorted(("ObjectCreated:Put", k) for k in originals)

    # The s3:TestEvent rides along in the batch: it is ignored, not a failure.
    assert aws.test_event is not None
    assert aws.deliver([aws.test_event, *messages]) == []

    # The catalog (DynamoDB), queried directly.
    ct_study, ct_series, _ = uids(f.ct)
    [study] = aws.catalog.query_studies(P, [condition("PatientID", "1CT1")]).rows
    assert study.study_uid == ct_study
    assert (study.n_series, study.n_instances, study.size) == (1, 2, len(f.ct) + len(f.ct2))
    assert study.modalities == ["CT"] and study.sop_classes == [CT_IMAGE_STORAGE]
    [series] = aws.catalog.query_series(P, ct_study, []).rows
    assert (series.series_uid, series.n_instances, series.size, series.modality) == (
        ct_series, 2, len(f.ct) + len(f.ct2), "CT")
    rows = aws.catalog.query_instances(P, ct_study, ct_series, []).rows
    assert [r.sop_uid for r in rows] == [uids(f.ct)[2], uids(f.ct2)[2]]  # by InstanceNumber
    for r in rows:
        head = aws.store.head(r.key)
        assert head is not None and (r.size, r.etag) == (head.size, head.etag)
    j2k_row = aws.catalog.get_instance(P, *uids(f.j2k))
    assert j2k_row is not None and j2k_row.transfer_syntax_uid == JPEG2000
    for pid in ("4MR1", "8NM1"):
        assert len(aws.catalog.query_studies(P, [condition("PatientID", pid)]).rows) == 1
    aws.assert_catalog_matches_store()

    # QIDO-RS and WADO-RS through the app on the AWS backend the environment names.
    backend = open_backend(Settings.from_env())
    assert backend.settings.backend == "aws" and backend.queue is None
    client = TestClient(create_app(backend))
    r = client.get("/dicomweb/studies", params={"PatientID": "1CT1"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/dicom+json")
    [item] = r.json()
    assert first(item, "0020000D") == ct_study
    assert first(item, "00201208") == 2 and first(item, "00201206") == 1
    assert item["00080061"]["Value"] == ["CT"]
    r = client.get(f"/dicomweb/studies/{uids(f.j2k)[0]}/instances")
    assert r.status_code == 200
    [inst] = r.json()
    assert first(inst, "00083002") == JPEG2000
    for key, data in originals.items():
        study_uid, series_uid, sop_uid = uids(data)
        r = client.get(f"/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
                       headers={"Accept": WADO_ACCEPT})
        assert r.status_code == 200, key
        assert multipart_parts(r.headers["content-type"], r.content) == [data]
    r = client.get(f"/dicomweb/studies/{ct_study}", headers={"Accept": WADO_ACCEPT})
    assert multipart_parts(r.headers["content-type"], r.content) == [f.ct, f.ct2]

    # The same through the deployed Lambda entry point: Mangum behind API Gateway (REST, v1 event).
    # The module builds its app at import from the environment, so import it here, fresh.
    monkeypatch.delitem(sys.modules, "functions.dicomweb.handler", raising=False)
    try:
        dicomweb = importlib.import_module("functions.dicomweb.handler")
        check_dicomweb_lambda(dicomweb.handler, ct_study, f.j2k)
    finally:  # its backend belongs to this test's moto state: never leave it to other tests
        sys.modules.pop("functions.dicomweb.handler", None)


def check_dicomweb_lambda(handler: Any, ct_study: str, j2k: bytes) -> None:
    assert isinstance(getattr(handler, "__wrapped__", handler), Mangum)  # under the EMF flush (emf.flushed)
    resp = handler(rest_api_event("/dicomweb/studies", {"PatientID": ["1CT1"]}), lambda_context())
    assert resp["statusCode"] == 200, resp
    assert header(resp, "content-type").startswith("application/dicom+json")
    [item] = json.loads(lambda_body(resp))
    assert first(item, "0020000D") == ct_study and first(item, "00201208") == 2
    resp = handler(rest_api_event("/dicomweb/studies", {"PatientID": ["nobody"]}), lambda_context())
    assert resp["statusCode"] == 204
    j2k_study, j2k_series, j2k_sop = uids(j2k)
    path = f"/dicomweb/studies/{j2k_study}/series/{j2k_series}/instances/{j2k_sop}"
    resp = handler(rest_api_event(path, headers={"Accept": WADO_ACCEPT}), lambda_context())
    assert resp["statusCode"] == 200 and resp["isBase64Encoded"] is True
    assert multipart_parts(header(resp, "content-type"), lambda_body(resp)) == [j2k]


# -- 3: captured event fixtures ---------------------------------------------------------------------


def test_captured_events_parse() -> None:
    """The fixtures are moto's real S3 → SQS bodies: keys arrive quote_plus-encoded, '/' included."""
    f = files()
    created = json.loads(CREATED_FIXTURE.read_text())
    removed = json.loads(REMOVED_FIXTURE.read_text())
    for body, kind, name in ((created, "created", "ObjectCreated:Put"),
                             (removed, "removed", "ObjectRemoved:Delete")):
        [record] = body["Records"]
        assert record["eventName"] == name
        assert "%2F" in record["s3"]["object"]["key"]
        [event] = ObjectEvent.from_s3_notification(body)
        assert event.kind == kind
        assert event.key == key_of(f.ct)
        assert parse_instance_key(event.key) is not None
        assert event.bucket == BUCKET
        assert event.etag and '"' not in event.etag
    [event] = ObjectEvent.from_s3_notification(created)
    assert event.size == len(f.ct)
    # The test event S3 sends on configuration is no object event.
    assert ObjectEvent.from_s3_notification(
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-01-01T00:00:00.000Z",
         "Bucket": BUCKET}) == []


def _shape(doc: Any) -> Any:
    """The structure of a JSON document (keys and value types), values left out."""
    if isinstance(doc, dict):
        return {k: _shape(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_shape(v) for v in doc]
    return type(doc).__name__


def test_captured_events_match_what_moto_delivers(aws: MotoPacs) -> None:
    """Guards the fixtures against drift in moto (CAPTURE_EVENTS=1 rewrites them)."""
    key = aws.ingest(files().ct)
    [created] = aws.receive()
    aws.store.delete(key)
    [removed] = aws.receive()
    bodies = {CREATED_FIXTURE: json.loads(created["Body"]), REMOVED_FIXTURE: json.loads(removed["Body"])}
    if os.environ.get("CAPTURE_EVENTS") == "1":
        EVENTS_DIR.mkdir(parents=True, exist_ok=True)
        for path, body in bodies.items():
            path.write_text(json.dumps(body, indent=2) + "\n")
    for path, body in bodies.items():
        assert _shape(json.loads(path.read_text())) == _shape(body), path.name
        assert body["Records"][0]["s3"]["object"]["key"] == json.loads(
            path.read_text())["Records"][0]["s3"]["object"]["key"]


# -- 4: idempotency under duplicates, reordering, replacement, multipart ----------------------------


def deliveries(world: MotoPacs, messages: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Each message delivered 1-3 times, shuffled: a copy is an SQS redelivery (same messageId) or S3
    sending the notification twice (another messageId)."""
    out = []
    for m in messages:
        for n in range(1, rng.randint(1, 3) + 1):
            record = world.record(m, receive_count=n)
            if n > 1 and rng.random() < 0.5:
                record["messageId"] = str(uuid.uuid4())
            out.append(record)
    rng.shuffle(out)
    return out


def batches(records: list[dict[str, Any]], size: int = 10) -> list[list[dict[str, Any]]]:
    """Lambda batches of up to `size`; one message is never twice in a batch (it is in flight)."""
    pending, out = list(records), []
    while pending:
        batch: list[dict[str, Any]] = []
        ids: set[str] = set()
        rest = []
        for r in pending:
            if len(batch) < size and r["messageId"] not in ids:
                batch.append(r)
                ids.add(r["messageId"])
            else:
                rest.append(r)
        out.append(batch)
        pending = rest
    return out


def multipart_put(world: MotoPacs, key: str, data: bytes) -> None:
    upload = world.s3.create_multipart_upload(Bucket=BUCKET, Key=key, ContentType="application/dicom")
    part = world.s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=data)
    world.s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"],
                                       MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_duplicate_and_shuffled_deliveries_leave_exact_aggregates(aws: MotoPacs, seed: int) -> None:
    rng = random.Random(seed)
    f = files()

    # Phase 1: three studies arrive; every event is delivered 1-3 times, in any order.
    for data in (f.ct, f.ct2, f.ct3, f.mr, f.j2k):
        aws.ingest(data)
    first_messages = aws.receive()
    for batch in batches(deliveries(aws, first_messages, rng)):
        assert invoke_indexer(batch) == []
    aws.assert_catalog_matches_store()
    [ct_study] = aws.catalog.query_studies(P, [condition("PatientID", "1CT1")]).rows
    assert (ct_study.n_series, ct_study.n_instances) == (2, 3)

    # Phase 2: a multipart upload (two events for one key), an instance created then deleted, an
    # indexed instance deleted (its series goes), and stale phase-1 events delivered again, late.
    mr2_key = key_of(f.mr2)
    multipart_put(aws, mr2_key, f.mr2)
    gone = aws.ingest(f.j2k2)
    aws.store.delete(gone)
    aws.store.delete(key_of(f.ct3))
    second_messages = aws.receive()
    names = event_names(second_messages)
    assert ("ObjectCreated:Put", mr2_key) in names
    assert ("ObjectCreated:CompleteMultipartUpload", mr2_key) in names
    assert ("ObjectRemoved:Delete", gone) in names and ("ObjectRemoved:Delete", key_of(f.ct3)) in names
    ct3_created = next(m for m in first_messages if event_names([m])[0][1] == key_of(f.ct3))
    stale = [ct3_created, *rng.sample(first_messages, k=3)]
    records = deliveries(aws, second_messages, rng) + [aws.record(m, receive_count=9) for m in stale]
    rng.shuffle(records)
    for batch in batches(records, size=rng.choice([1, 3, 10])):
        assert invoke_indexer(batch) == []
    aws.assert_catalog_matches_store()

    [mr_study] = aws.catalog.query_studies(P, [condition("PatientID", "4MR1")]).rows
    assert (mr_study.n_series, mr_study.n_instances, mr_study.size) == (1, 2, len(f.mr) + len(f.mr2))
    assert aws.catalog.get_instance(P, *uids(f.j2k2)) is None
    [ct_study] = aws.catalog.query_studies(P, [condition("PatientID", "1CT1")]).rows
    assert (ct_study.n_series, ct_study.n_instances) == (1, 2)
    [j2k_study] = aws.catalog.query_studies(P, [condition("PatientID", "8NM1")]).rows
    assert j2k_study.n_instances == 1


def _start_of_a_second() -> None:
    time.sleep(1.02 - time.time() % 1)


@pytest.mark.parametrize("timing", [
    "same-second",
    "next-second",
])
def test_resent_instance_with_other_content_replaces_the_catalog_row(aws: MotoPacs, timing: str) -> None:
    """DESIGN ingest contract 4 (default policy: keep the newest) on the AWS path."""
    f = files()
    # S3 times objects to the second: "same-second" needs both writes (and the indexing between them)
    # within one second. A loaded machine may miss it: then v1 is written back and the round retried.
    for attempt in range(5):
        _start_of_a_second()
        key = aws.ingest(f.mr, Outcome.REPLACED if attempt else Outcome.STORED)
        assert aws.deliver(aws.receive()) == []
        first_put = aws.s3.head_object(Bucket=BUCKET, Key=key)["LastModified"]
        if timing == "next-second":
            _start_of_a_second()
        assert aws.ingest(f.mr_v2, Outcome.REPLACED) == key
        second_put = aws.s3.head_object(Bucket=BUCKET, Key=key)["LastModified"]
        messages = aws.receive()
        assert event_names(messages) == [("ObjectCreated:Put", key)]  # history/ is not under the filter
        assert aws.deliver(messages) == []
        if (first_put == second_put) is (timing == "same-second"):
            break
    else:
        pytest.fail("the timing precondition never held")

    row = aws.catalog.get_instance(P, *uids(f.mr))
    head = aws.store.head(key)
    assert row is not None and head is not None
    assert (row.size, row.etag) == (len(f.mr_v2), head.etag)
    aws.assert_catalog_matches_store()
    history = [aws.store.get(i.key) for i in aws.store.list(f"{P}/history/")]
    assert len(history) == 2 * attempt + 1 and history.count(f.mr) == attempt + 1


# -- 5: partial batch failure -----------------------------------------------------------------------


@pytest.mark.parametrize("poison", ["garbage", "uids-not-those-of-the-key"])
def test_one_poison_message_fails_alone(aws: MotoPacs, poison: str) -> None:
    f = files()
    body = b"this is not DICOM\n" * 64 if poison == "garbage" else f.ct
    aws.s3.put_object(Bucket=BUCKET, Key=POISON_KEY, Body=body)
    [poison_message] = aws.receive()
    for data in (f.mr, f.j2k, f.ct2):
        aws.ingest(data)
    good = aws.receive()
    assert len(good) == 3
    batch = [good[0], poison_message, *good[1:]]

    assert aws.deliver(batch) == [poison_message["MessageId"]]
    for data in (f.mr, f.j2k, f.ct2):
        assert aws.catalog.get_instance(P, *uids(data)) is not None
    assert aws.catalog.get_study(P, "1.2") is None
    aws.assert_catalog_matches_store(ignore=frozenset({POISON_KEY}))

    # Redelivered alone (SQS retries until the DLQ), it fails again and changes nothing; a batch whose
    # every record failed makes Powertools raise (the invocation fails: the batch is retried whole).
    with pytest.raises(BatchProcessingError):
        invoke_indexer([aws.record(poison_message, receive_count=2)])
    aws.assert_catalog_matches_store(ignore=frozenset({POISON_KEY}))


# -- 6: ObjectRemoved -------------------------------------------------------------------------------


def test_removed_objects_leave_the_catalog(aws: MotoPacs) -> None:
    f = files()
    for data in (f.ct, f.ct2, f.mr):
        aws.ingest(data)
    assert aws.deliver(aws.receive()) == []
    ct_study, ct_series, _ = uids(f.ct)
    before = aws.catalog.get_study(P, ct_study)
    assert before is not None and (before.n_instances, before.size) == (2, len(f.ct) + len(f.ct2))

    aws.store.delete(key_of(f.ct2))
    removed = aws.receive()
    assert event_names(removed) == [("ObjectRemoved:Delete", key_of(f.ct2))]
    assert aws.deliver(removed) == []
    after = aws.catalog.get_study(P, ct_study)
    assert after is not None
    assert (after.n_series, after.n_instances, after.size) == (1, 1, len(f.ct))
    [series] = aws.catalog.query_series(P, ct_study, []).rows
    assert (series.n_instances, series.size) == (1, len(f.ct))
    assert aws.catalog.get_instance(P, *uids(f.ct2)) is None
    aws.assert_catalog_matches_store()

    aws.s3.delete_object(Bucket=BUCKET, Key=key_of(f.ct))
    removed = aws.receive()
    assert aws.deliver(removed) == []
    assert aws.deliver(removed) == []  # a duplicate removal is a no-op
    assert aws.catalog.get_study(P, ct_study) is None
    assert aws.catalog.query_series(P, ct_study, []).rows == []
    assert aws.catalog.query_studies(P, [condition("PatientID", "1CT1")]).rows == []
    assert [r.study_uid for r in aws.catalog.query_studies(P, []).rows] == [uids(f.mr)[0]]
    aws.assert_catalog_matches_store()

    client = TestClient(create_app(open_backend(Settings.from_env())))
    assert client.get("/dicomweb/studies", params={"PatientID": "1CT1"}).status_code == 204
    assert client.get(f"/dicomweb/studies/{ct_study}/series/{ct_series}").status_code == 404


# -- 7: reconciliation ------------------------------------------------------------------------------


def test_reconcile_indexes_objects_whose_event_was_lost(aws: MotoPacs) -> None:
    f = files()
    for data in (f.ct, f.mr):
        aws.ingest(data)
    assert aws.deliver(aws.receive()) == []

    # Stored, but the events never reach the indexer (a crash between the write and the event).
    lost = key_of(f.j2k)
    aws.s3.put_object(Bucket=BUCKET, Key=lost, Body=f.j2k, ContentType="application/dicom")
    aws.s3.put_object(Bucket=BUCKET, Key=POISON_KEY, Body=b"not DICOM at all")
    assert len(aws.receive()) == 2  # dropped
    assert aws.catalog.missing_keys(P, [lost, key_of(f.ct)]) == {lost}

    report = reconcile(aws.store, aws.catalog, P)
    assert (report.scanned, report.indexed) == (4, 1)
    assert [k for k, _ in report.failed] == [POISON_KEY]
    row = aws.catalog.get_instance(P, *uids(f.j2k))
    assert row is not None and row.transfer_syntax_uid == JPEG2000 and row.size == len(f.j2k)
    aws.assert_catalog_matches_store(ignore=frozenset({POISON_KEY}))

    again = reconcile(aws.store, aws.catalog, P)
    assert (again.scanned, again.indexed) == (4, 0)
    aws.assert_catalog_matches_store(ignore=frozenset({POISON_KEY}))

