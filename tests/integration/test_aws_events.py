"""The event side of the AWS pipeline on moto (in-process `mock_aws`), with the production code:

    STOW-RS (Mangum, API Gateway event) → S3 → notification → SQS → indexer handler (moto's batch)
      → DynamoDB → EventBridge (PutEvents) → rule → SQS target (captured here)
      → QIDO-RS / WADO-RS through Mangum

and the SQS index queue the local process tree consumes (`pacs.events.sqs`): a poison message
dead-lettered by the queue's redrive policy, `pacs dlq list|redrive`, the derived bucket, and the
scheduled reconciliation handler.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import random
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pydicom
import pytest
import requests
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from pacs.backends import open_backend
from pacs.cli.main import main as pacs_main
from pacs.config import Settings
from pacs.events.eventbridge import EventBridgePublisher, EventDeliveryFailure
from pacs.events.model import ObjectEvent
from pacs.events.sqs import SqsQueue
from pacs.services import index_worker
from pacs.services.indexer import IndexerService
from pacs.storage.keys import parse_instance_key
from pacs.storage.s3 import S3BlobStore

from functions.indexer import handler as indexer_handler
from functions.reconcile import handler as reconcile_handler
from tests.integration import test_moto_pipeline as pipeline
from tests.integration.test_moto_pipeline import (
    BUCKET,
    POISON_KEY,
    REGION,
    WADO_ACCEPT,
    MotoPacs,
    P,
    _variant,
    batches,
    deliveries,
    files,
    header,
    invoke_indexer,
    key_of,
    lambda_body,
    lambda_context,
    multipart_parts,
    rest_api_event,
    uids,
)

aws = pipeline.aws  # the moto world fixture
BUS = "pacs-it-bus"
DERIVED = "pacs-it-derived"
BOUNDARY = "a1b2c3d4-pacs-it"


@dataclass
class Bus:
    """The event bus, and a rule copying every `pacs` event to an SQS queue read here."""

    sqs: Any
    url: str

    def events(self) -> list[dict[str, Any]]:
        """The events delivered since the last call (each as EventBridge sends it to the target)."""
        out: list[dict[str, Any]] = []
        while got := self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages", []):
            self.sqs.delete_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
            out += [json.loads(m["Body"]) for m in got]
        return out


@pytest.fixture
def bus(aws: MotoPacs, monkeypatch: pytest.MonkeyPatch) -> Bus:
    import boto3

    events = boto3.client("events", region_name=REGION)
    events.create_event_bus(Name=BUS)
    url = aws.sqs.create_queue(QueueName="pacs-it-events")["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="pacs-all", EventBusName=BUS, EventPattern=json.dumps({"source": ["pacs"]}))
    events.put_targets(Rule="pacs-all", EventBusName=BUS, Targets=[{"Id": "capture", "Arn": arn}])
    monkeypatch.setenv("PACS_EVENT_BUS", BUS)
    indexer_handler.indexer.cache_clear()  # its backend is built from the environment
    return Bus(aws.sqs, url)


@pytest.fixture
def dicomweb(aws: MotoPacs) -> Iterator[Any]:
    """The deployed DICOMweb entry point (Mangum), imported fresh: it builds its app from the environment."""
    sys.modules.pop("functions.dicomweb.handler", None)
    try:
        yield importlib.import_module("functions.dicomweb.handler").handler
    finally:  # its backend belongs to this test's moto state
        sys.modules.pop("functions.dicomweb.handler", None)


def stow_event(parts: list[bytes]) -> dict[str, Any]:
    """An API Gateway REST event: POST /dicomweb/studies with a multipart/related body (base64)."""
    body = b"".join(f"\r\n--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p for p in parts)
    body += f"\r\n--{BOUNDARY}--".encode()
    event = rest_api_event("/dicomweb/studies", headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'})
    event["httpMethod"] = event["requestContext"]["httpMethod"] = "POST"
    event["body"] = base64.b64encode(body).decode()
    event["isBase64Encoded"] = True
    return event


def by_type(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        assert e["source"] == "pacs"
        out.setdefault(e["detail-type"], []).append(e["detail"])
    return out


def last_study_updates(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["studyInstanceUID"]: d for d in by_type(events).get("StudyUpdated", [])}


def assert_study_events_match_catalog(world: MotoPacs, updates: dict[str, dict[str, Any]]) -> None:
    for study_uid, d in updates.items():
        row = world.catalog.get_study(P, study_uid)
        if row is None:
            assert d["deleted"] and d["numberOfInstances"] == 0
            continue
        assert (d["numberOfSeries"], d["numberOfInstances"], d["bytes"]) == (
            row.n_series, row.n_instances, row.size)
        assert d["modalities"] == sorted(row.modalities) and d["sopClasses"] == sorted(row.sop_classes)


# -- 1: STOW-RS → … → EventBridge → QIDO/WADO ---------------------------------------------------------


def test_stow_index_events_query_retrieve(aws: MotoPacs, bus: Bus, dicomweb: Any) -> None:
    f = files()
    stored = [f.ct, f.ct2, f.mr]

    def count_put_events(publisher: Any) -> list[int]:
        assert isinstance(publisher, EventBridgePublisher) and publisher.bus == BUS
        counts: list[int] = []
        publisher.client.meta.events.register(
            "provide-client-params.events.PutEvents", lambda params, **_: counts.append(len(params["Entries"])))
        return counts

    # STOW-RS indexes in the request (read-your-writes): the DICOMweb function announces the changes.
    put_events = count_put_events(dicomweb.app.state.services.backend.events)
    resp = dicomweb(stow_event(stored), lambda_context())
    assert resp["statusCode"] == 200, resp
    assert header(resp, "content-type").startswith("application/dicom+json")
    assert len(json.loads(lambda_body(resp))["00081199"]["Value"]) == 3  # ReferencedSOPSequence
    assert put_events == [2, 2, 2]  # one PutEvents per change: the instance event and StudyUpdated
    aws.assert_catalog_matches_store()
    announced = bus.events()

    # The S3 notifications then reach the indexer Lambda: already indexed, nothing more is announced.
    messages = aws.receive()
    assert len(messages) == 3
    indexer_put_events = count_put_events(indexer_handler.indexer().events)
    assert aws.deliver(messages) == []
    assert indexer_put_events == [] and bus.events() == []
    aws.assert_catalog_matches_store()

    events = by_type(announced)
    assert sorted(events) == ["InstanceStored", "StudyUpdated"]
    assert sorted(d["key"] for d in events["InstanceStored"]) == sorted(key_of(d) for d in stored)
    for d in events["InstanceStored"]:
        head = aws.store.head(d["key"])
        assert head is not None
        ref = parse_instance_key(d["key"])
        assert ref is not None
        assert (d["partition"], d["studyInstanceUID"], d["seriesInstanceUID"], d["sopInstanceUID"]) == (
            P, ref.study_uid, ref.series_uid, ref.sop_uid)
        assert (d["size"], d["etag"], d["replaced"]) == (head.size, head.etag, False)
        assert d["sopClassUID"] in ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4")
    assert len(events["StudyUpdated"]) == 3
    updates = last_study_updates([{"source": "pacs", "detail-type": "StudyUpdated", "detail": d}
                                  for d in events["StudyUpdated"]])
    assert set(updates) == {uids(f.ct)[0], uids(f.mr)[0]}
    assert updates[uids(f.ct)[0]]["numberOfInstances"] == 2
    assert_study_events_match_catalog(aws, updates)

    # The same batch again (an SQS redelivery): the catalog does not change, no event is emitted.
    assert aws.deliver(messages) == []
    assert bus.events() == []

    # QIDO-RS and WADO-RS through the same Lambda entry point.
    ct_study, ct_series, ct_sop = uids(f.ct)
    resp = dicomweb(rest_api_event("/dicomweb/studies", {"PatientID": ["1CT1"]}), lambda_context())
    assert resp["statusCode"] == 200
    [item] = json.loads(lambda_body(resp))
    assert item["0020000D"]["Value"] == [ct_study] and item["00201208"]["Value"] == [2]
    path = f"/dicomweb/studies/{ct_study}/series/{ct_series}/instances/{ct_sop}"
    resp = dicomweb(rest_api_event(path, headers={"Accept": WADO_ACCEPT}), lambda_context())
    assert resp["statusCode"] == 200
    assert multipart_parts(header(resp, "content-type"), lambda_body(resp)) == [f.ct]

    # ObjectRemoved: InstanceDeleted, then the study's aggregates; the last one says the study is gone.
    aws.store.delete(key_of(f.mr))
    assert aws.deliver(aws.receive()) == []
    removal = by_type(bus.events())
    [deleted] = removal["InstanceDeleted"]
    assert (deleted["key"], deleted["size"]) == (key_of(f.mr), len(f.mr))
    [update] = removal["StudyUpdated"]
    assert update["deleted"] is True and update["studyInstanceUID"] == uids(f.mr)[0]
    aws.assert_catalog_matches_store()
    resp = dicomweb(rest_api_event("/dicomweb/studies", {"PatientID": ["4MR1"]}), lambda_context())
    assert resp["statusCode"] == 204


# -- 2: 1-3 deliveries, shuffled: each change announced once -------------------------------------------


@pytest.mark.parametrize("seed", [11, 12])
def test_shuffled_redeliveries_announce_each_change_once(aws: MotoPacs, bus: Bus, seed: int) -> None:
    rng = random.Random(seed)
    f = files()
    for data in (f.ct, f.ct2, f.ct3, f.mr, f.j2k):
        aws.ingest(data)
    first = aws.receive()
    for batch in batches(deliveries(aws, first, rng), size=rng.choice([2, 5, 10])):
        assert invoke_indexer(batch) == []
    aws.ingest(f.mr_v2, pipeline.Outcome.REPLACED)
    aws.store.delete(key_of(f.ct3))
    second = aws.receive()
    records = deliveries(aws, second, rng) + [aws.record(m, receive_count=5) for m in rng.sample(first, k=2)]
    rng.shuffle(records)
    for batch in batches(records, size=rng.choice([1, 3])):
        assert invoke_indexer(batch) == []
    aws.assert_catalog_matches_store()

    events = bus.events()
    kinds = by_type(events)
    stored = Counter(d["key"] for d in kinds["InstanceStored"])
    assert stored == Counter({key_of(d): 1 for d in (f.ct, f.ct2, f.ct3, f.j2k)} | {key_of(f.mr): 2})
    assert [d["replaced"] for d in kinds["InstanceStored"] if d["key"] == key_of(f.mr)] == [False, True]
    assert [d["key"] for d in kinds["InstanceDeleted"]] == [key_of(f.ct3)]
    assert len(kinds["StudyUpdated"]) == sum(stored.values()) + 1
    assert_study_events_match_catalog(aws, last_study_updates(events))


def test_a_bus_that_refuses_fails_the_record(aws: MotoPacs, monkeypatch: pytest.MonkeyPatch) -> None:
    """PutEvents to a bus that does not exist: the record is reported failed (SQS retries it)."""
    monkeypatch.setenv("PACS_EVENT_BUS", "no-such-bus")
    indexer_handler.indexer.cache_clear()
    publisher = EventBridgePublisher("no-such-bus", region=REGION)
    with pytest.raises(EventDeliveryFailure):
        publisher.publish("InstanceStored", {"partition": P})
    aws.ingest(files().ct)
    [message] = aws.receive()
    with pytest.raises(BatchProcessingError):  # the only record failed: the whole batch is retried
        aws.deliver([message])


# -- 3: the SQS index queue, its DLQ, `pacs dlq` ---------------------------------------------------------


@pytest.fixture
def dlq(aws: MotoPacs, monkeypatch: pytest.MonkeyPatch) -> str:
    """A dead-letter queue behind the index queue (after 2 receives), named to the settings."""
    url = aws.sqs.create_queue(QueueName="pacs-it-index-dlq")["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws.sqs.set_queue_attributes(QueueUrl=aws.queue_url, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "2"})})
    monkeypatch.setenv("PACS_QUEUE_URL", aws.queue_url)
    monkeypatch.setenv("PACS_DLQ_URL", url)
    return url


def depth(world: MotoPacs, url: str) -> int:
    attrs = world.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_poison_message_goes_to_the_dlq_and_redrive_clears_it(
    aws: MotoPacs, dlq: str, capsys: pytest.CaptureFixture[str]
) -> None:
    f = files()
    backend = open_backend(Settings.from_env())
    queue = backend.queue
    assert isinstance(queue, SqsQueue) and queue.dlq_url == dlq
    indexer = IndexerService(backend.store, backend.catalog, backend.events)
    aws.s3.put_object(Bucket=BUCKET, Key=POISON_KEY, Body=b"this is not DICOM\n" * 64)
    aws.ingest(f.ct)

    # The worker of `pacs up --backend aws`: the good instance is indexed, the poison one fails on
    # each receive until the redrive policy moves it to the DLQ (on the third receive).
    for _ in range(20):
        index_worker.drain_once(queue, indexer, wait=2.0)
        if depth(aws, dlq):
            break
    assert depth(aws, dlq) == 1 and queue.depth() == 0
    assert aws.catalog.get_instance(P, *uids(f.ct)) is not None
    assert aws.catalog.get_study(P, "1.2") is None

    assert pacs_main(["dlq", "list"]) == 0
    listed = capsys.readouterr().out.strip().splitlines()
    assert len(listed) == 1 and f"created\t{POISON_KEY}\tattempts=" in listed[0]
    assert depth(aws, dlq) == 1  # listing leaves the dead letters where they are

    # The cause is repaired (the right object at the key), then the dead letter is redriven.
    repaired = _variant(f.ct, "", comment="repaired")
    ds = pydicom.dcmread(io.BytesIO(repaired))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "1.2", "1.3", "1.4"
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID("1.4")
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    aws.s3.put_object(Bucket=BUCKET, Key=POISON_KEY, Body=out.getvalue())
    assert pacs_main(["dlq", "redrive"]) == 0
    assert capsys.readouterr().out.strip() == "redriven 1"
    assert depth(aws, dlq) == 0
    while index_worker.drain_once(queue, indexer, wait=1.0):
        pass
    assert queue.depth() == 0 and depth(aws, dlq) == 0
    assert aws.catalog.get_instance(P, "1.2", "1.3", "1.4") is not None
    aws.assert_catalog_matches_store()
    backend.close()


def test_poison_message_dead_lettered_on_the_lambda_path(aws: MotoPacs, dlq: str) -> None:
    """As the SQS event source mapping runs the indexer: receive a batch, invoke, delete what succeeded;
    a failed record stays, is received again when its visibility ends, and after maxReceiveCount
    receives the redrive policy moves it to the DLQ."""
    f = files()
    aws.s3.put_object(Bucket=BUCKET, Key=POISON_KEY, Body=b"this is not DICOM\n" * 64)
    aws.ingest(f.mr)
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody='{"not": "an S3 notification"}')
    for _ in range(10):
        got = aws.sqs.receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                      AttributeNames=["All"]).get("Messages", [])
        got = [m for m in got if not pipeline.is_test_event(m)]
        if not got:
            break
        records = [aws.record(m, receive_count=int(m["Attributes"]["ApproximateReceiveCount"])) for m in got]
        try:
            failed = invoke_indexer(records)
        except BatchProcessingError:  # every record failed: the mapping retries the whole batch
            failed = [r["messageId"] for r in records]
        done = [m for m in got if m["MessageId"] not in failed]
        if done:
            aws.sqs.delete_message_batch(QueueUrl=aws.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
    assert depth(aws, aws.queue_url) == 0 and depth(aws, dlq) == 2
    dead = aws.sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    bodies = sorted((json.loads(m["Body"]) for m in dead), key=lambda b: "Records" in b)
    assert bodies[0] == {"not": "an S3 notification"}  # not dropped: failed, then dead-lettered
    assert [e.key for e in ObjectEvent.from_s3_notification(bodies[1])] == [POISON_KEY]
    assert all(int(m["Attributes"]["ApproximateReceiveCount"]) >= 2 for m in dead)
    assert aws.catalog.get_instance(P, *uids(f.mr)) is not None
    aws.assert_catalog_matches_store(ignore=frozenset({POISON_KEY}))


def test_sqs_queue_settles_messages_as_the_local_queue_does(aws: MotoPacs) -> None:
    """One SQS message may carry several records: it is deleted when all are acknowledged; S3's test
    event is dropped; a body that is no notification is left for the redrive policy."""
    f = files()
    queue = SqsQueue(aws.queue_url, client=aws.sqs, visibility_timeout=30)
    aws.ingest(f.ct)
    aws.ingest(f.mr)
    [m1, m2] = aws.receive()
    records = json.loads(m1["Body"])["Records"] + json.loads(m2["Body"])["Records"]
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=json.dumps({"Records": records}))
    assert aws.test_event is not None
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=aws.test_event["Body"])
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody="not a notification")

    got = queue.receive(10)
    assert sorted(m.event.key for m in got) == sorted([key_of(f.ct), key_of(f.mr)])
    assert all(m.attempts == 1 for m in got)
    assert depth(aws, aws.queue_url) == 2  # the test event is gone; the junk body waits, hidden
    queue.ack(got[0].id)
    assert depth(aws, aws.queue_url) == 2  # half of a message acknowledged: it stays
    queue.fail(got[1], "boom", retry_after=0)
    again = queue.receive(10)  # the whole message again (visible at once), its receive counted
    assert sorted(m.event.key for m in again) == sorted([key_of(f.ct), key_of(f.mr)])
    assert all(m.attempts == 2 for m in again)
    queue.fail(again[0], "boom", retry_after=0)  # failed first, the other record acknowledged last:
    queue.ack(again[1].id)  # the failure still decides (visible again at once)
    third = queue.receive(10)
    assert sorted(m.event.key for m in third) == sorted([key_of(f.ct), key_of(f.mr)])
    assert all(m.attempts == 3 for m in third)
    queue.ack(*(m.id for m in third))
    assert depth(aws, aws.queue_url) == 1  # only the junk body is left


# -- 4: the derived bucket ----------------------------------------------------------------------------


def test_derived_data_lives_in_the_derived_bucket(
    aws: MotoPacs, monkeypatch: pytest.MonkeyPatch, dicomweb: Any
) -> None:
    aws.s3.create_bucket(Bucket=DERIVED)
    monkeypatch.setenv("PACS_DERIVED_BUCKET", DERIVED)
    indexer_handler.indexer.cache_clear()
    f = files()
    for data in (f.ct, f.ct2):
        aws.ingest(data)
    assert aws.deliver(aws.receive()) == []  # the indexer writes instance metadata under derived/

    def keys(bucket: str) -> list[str]:
        return [o["Key"] for o in aws.s3.list_objects_v2(Bucket=bucket).get("Contents", [])]

    assert keys(BUCKET) == sorted(key_of(d) for d in (f.ct, f.ct2))
    assert keys(DERIVED) and all(k.startswith(f"{P}/derived/") for k in keys(DERIVED))

    store = S3BlobStore(BUCKET, derived_bucket=DERIVED, client=aws.s3)
    derived_key = f"{P}/derived/{uids(f.ct)[0]}/note.txt"
    store.put(derived_key, b"hello", content_type="text/plain")
    assert derived_key in keys(DERIVED) and derived_key not in keys(BUCKET)
    head = store.head(derived_key)
    assert head is not None and head.size == 5
    assert store.get(derived_key) == b"hello" and store.read_range(derived_key, 1, 3) == b"el"
    listed = [b.key for b in store.list(f"{P}/")]  # both buckets, merged in key order
    assert listed == sorted(keys(BUCKET) + keys(DERIVED))
    assert [b.key for b in store.list(f"{P}/studies/")] == keys(BUCKET)
    assert [b.key for b in store.list(f"{P}/derived/")] == keys(DERIVED)
    url = store.presigned_get(derived_key)
    assert DERIVED in url and requests.get(url, timeout=10).content == b"hello"
    store.delete(derived_key)
    assert store.head(derived_key) is None and derived_key not in keys(DERIVED)
    # Originals are untouched by the routing; one bucket when no derived bucket is set.
    assert store.bucket_for(key_of(f.ct)) == BUCKET
    assert S3BlobStore(BUCKET, client=aws.s3).bucket_for(derived_key) == BUCKET

    # WADO-RS metadata is read from the derived bucket through the Lambda entry point.
    study, series, _ = uids(f.ct)
    resp = dicomweb(rest_api_event(f"/dicomweb/studies/{study}/series/{series}/metadata"), lambda_context())
    assert resp["statusCode"] == 200
    assert len(json.loads(lambda_body(resp))) == 2


def test_packed_bodies_go_to_the_derived_bucket(aws: MotoPacs, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 303 path for bodies above Lambda's limit packs into, and presigns from, the derived bucket."""
    aws.s3.create_bucket(Bucket=DERIVED)
    monkeypatch.setenv("PACS_DERIVED_BUCKET", DERIVED)
    monkeypatch.setenv("PACS_MAX_INLINE_RESPONSE", "30000")
    indexer_handler.indexer.cache_clear()
    f = files()
    for data in (f.ct, f.ct2):
        aws.ingest(data)
    assert aws.deliver(aws.receive()) == []
    sys.modules.pop("functions.dicomweb.handler", None)
    try:
        handler = importlib.import_module("functions.dicomweb.handler").handler
        study = uids(f.ct)[0]
        resp = handler(rest_api_event(f"/dicomweb/studies/{study}", headers={"Accept": WADO_ACCEPT}),
                       lambda_context())
    finally:
        sys.modules.pop("functions.dicomweb.handler", None)
    assert resp["statusCode"] == 303, resp
    location = header(resp, "location")
    split = urlsplit(location)
    assert DERIVED in split.netloc or unquote(split.path).startswith(f"/{DERIVED}/")
    packed = [o["Key"] for o in aws.s3.list_objects_v2(Bucket=DERIVED, Prefix=f"{P}/derived/{study}/packed/")
              .get("Contents", [])]
    assert len(packed) == 1
    tags = aws.s3.get_object_tagging(Bucket=DERIVED, Key=packed[0])["TagSet"]
    assert tags == [{"Key": "pacs-lifecycle", "Value": "transient"}]  # what the lifecycle rule expires
    assert not aws.s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{P}/derived/").get("Contents")
    r = requests.get(location, timeout=10)
    assert r.status_code == 200
    assert multipart_parts(r.headers["content-type"], r.content) == [f.ct, f.ct2]


# -- 5: the scheduled reconciliation handler -----------------------------------------------------------


def test_reconcile_handler_indexes_what_events_missed(aws: MotoPacs, bus: Bus) -> None:
    f = files()
    aws.ingest(f.ct)
    assert aws.deliver(aws.receive()) == []
    assert len(bus.events()) == 2  # the indexer's InstanceStored + StudyUpdated
    aws.s3.put_object(Bucket=BUCKET, Key=key_of(f.mr), Body=f.mr)
    aws.s3.put_object(Bucket=BUCKET, Key=POISON_KEY, Body=b"not DICOM")
    assert len(aws.receive()) == 2  # lost
    reconcile_handler.backend.cache_clear()
    try:
        result = reconcile_handler.handler({"source": "aws.events", "detail-type": "Scheduled Event"},
                                           lambda_context())
        assert result["partition"] == P
        assert (result["scanned"], result["indexed"], result["failedCount"]) == (3, 1, 1)
        assert [x["key"] for x in result["failed"]] == [POISON_KEY]
        json.dumps(result)  # a Lambda result: plain JSON
        aws.assert_catalog_matches_store(ignore=frozenset({POISON_KEY}))
        kinds = by_type(bus.events())
        assert [d["key"] for d in kinds["InstanceStored"]] == [key_of(f.mr)]
        again = reconcile_handler.handler({}, lambda_context())
        assert (again["indexed"], again["failedCount"]) == (0, 1)
        assert bus.events() == []
    finally:
        reconcile_handler.backend.cache_clear()


def test_pacs_events_points_at_the_bus_on_aws(aws: MotoPacs, bus: Bus, capsys: pytest.CaptureFixture[str]) -> None:
    assert pacs_main(["events"]) == 2
    assert f"EventBridge bus {BUS}" in capsys.readouterr().err
