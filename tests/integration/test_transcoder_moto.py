"""The transcoder on moto (in-process `mock_aws`), with the production handlers:

    S3 put → notification → SQS → indexer handler → DynamoDB → EventBridge (InstanceStored)
      → rule (detail-type InstanceStored, InstanceDeleted) → transcoder SQS queue
      → transcoder handler (the SQS batch moto delivered) → derived object + catalog row

moto cannot invoke a Lambda from EventBridge or SQS without Docker (FIELD-NOTES §2a): the messages the
rule really delivered to the queue are turned into the Lambda SQS event and the handler is called.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate

from functions.indexer import handler as indexer_handler
from functions.transcoder import handler as transcoder_handler
from tests.integration import test_moto_pipeline as pipeline
from tests.integration.sqs_consumer import Consumer, event_queue
from tests.integration.test_moto_pipeline import MotoPacs, P, files, key_of, uids

aws = pipeline.aws  # the moto world fixture
BUS = "pacs-it-bus"
JLS, RLE = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5"
POLICY = {"rule": [{"name": "ct", "modalities": ["CT"], "copies": ["JPEGLSLossless", {"syntax": RLE}]}]}


@dataclass
class Transcoding(Consumer):
    def index(self, *data: bytes) -> None:
        for d in data:
            self.world.ingest(d)
        assert self.world.deliver(self.world.receive()) == []

    def deliver(self, messages: list[dict[str, Any]]) -> list[str]:
        return self.batch(transcoder_handler.handler, messages)

    def derived_keys(self) -> dict[str, str]:
        """Derived copies in the bucket: key → ETag."""
        return {b.key: b.etag for b in self.world.store.list(f"{P}/derived/") if "/ts/" in b.key}


@pytest.fixture
def tc(aws: MotoPacs, monkeypatch: pytest.MonkeyPatch) -> Iterator[Transcoding]:
    # the queue, DLQ and rule of infra/transcoder.py
    url, arn, dlq_url = event_queue(aws, BUS, "transcoder", ["InstanceStored", "InstanceDeleted"])
    monkeypatch.setenv("PACS_EVENT_BUS", BUS)
    monkeypatch.setenv("PACS_TRANSCODE_POLICY", json.dumps(POLICY))
    monkeypatch.setenv("PACS_TRANSCODE_DLQ_URL", dlq_url)
    for cached in (indexer_handler.indexer, transcoder_handler.settings, transcoder_handler.transcoder,
                   transcoder_handler._sqs):
        cached.cache_clear()
    try:
        yield Transcoding(aws, url, arn, dlq_url)
    finally:
        for cached in (indexer_handler.indexer, transcoder_handler.settings, transcoder_handler.transcoder,
                       transcoder_handler._sqs):
            cached.cache_clear()


def test_instance_stored_makes_derived_copies_once(tc: Transcoding) -> None:
    f = files()
    tc.index(f.ct, f.mr)
    messages = tc.receive()
    kinds = sorted((json.loads(m["Body"])["detail-type"], json.loads(m["Body"])["detail"]["modality"])
                   for m in messages)
    assert kinds == [("InstanceStored", "CT"), ("InstanceStored", "MR")]  # StudyUpdated is not routed here
    assert tc.deliver(messages) == []
    study, _series, sop = uids(f.ct)
    rows = tc.world.catalog.list_derived(P, study)
    assert sorted(r.syntax for r in rows) == [JLS, RLE]  # the MR matched no rule
    head = tc.world.store.head(key_of(f.ct))
    assert head is not None
    original = pydicom.dcmread(io.BytesIO(f.ct)).pixel_array
    for r in rows:
        assert (r.sop_uid, r.source_etag) == (sop, head.etag)
        copy = pydicom.dcmread(io.BytesIO(tc.world.store.get(r.key)))
        assert copy.file_meta.TransferSyntaxUID == r.syntax
        assert np.array_equal(copy.pixel_array, original)
    assert tc.world.store.get(key_of(f.ct)) == f.ct  # the original is never changed
    made = tc.derived_keys()
    assert len(made) == 2
    # the same event delivered again (SQS at-least-once; another messageId too): no second copy
    again = [{**m, "MessageId": str(uuid.uuid4())} for m in messages]
    assert tc.deliver(messages + again) == []
    assert tc.derived_keys() == made
    assert len(tc.world.catalog.list_derived(P, study)) == 2
    assert tc.receive(tc.dlq_url) == []


def test_deleted_instance_loses_its_copies(tc: Transcoding) -> None:
    f = files()
    tc.index(f.ct)
    assert tc.deliver(tc.receive()) == []
    assert len(tc.derived_keys()) == 2
    tc.world.store.delete(key_of(f.ct))  # the original removed from the bucket: the indexer's removal path
    assert tc.world.deliver(tc.world.receive()) == []
    deleted = tc.receive()
    assert [json.loads(m["Body"])["detail-type"] for m in deleted] == ["InstanceDeleted"]
    assert tc.deliver(deleted) == []
    assert tc.derived_keys() == {}
    assert tc.world.catalog.list_derived(P, uids(f.ct)[0]) == []


def corrupt_ct() -> bytes:
    """CT_small as RLE whose one fragment is not RLE: indexable (the header is fine), not decodable."""
    ds = pydicom.dcmread(io.BytesIO(files().ct))
    ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.666"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = RLE
    ds.PixelData = encapsulate([b"\x00\x01 garbage, not an RLE segment table"])
    ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_corrupt_original_is_dead_lettered_with_the_reason(tc: Transcoding) -> None:
    bad = corrupt_ct()
    tc.index(bad, files().ct)
    messages = tc.receive()
    assert len(messages) == 2
    assert tc.deliver(messages) == []  # the corrupt one is dead-lettered, not retried
    [dead] = tc.receive(tc.dlq_url)
    assert json.loads(dead["Body"])["detail"]["sopInstanceUID"] == uids(bad)[2]
    reason = dead["MessageAttributes"]["error"]["StringValue"]
    assert "cannot decode the RLE Lossless pixel data" in reason and key_of(bad) in reason
    assert tc.world.catalog.list_derived(P, uids(bad)[0], uids(bad)[1], uids(bad)[2]) == []
    assert len(tc.derived_keys()) == 2  # the good one was transcoded in the same batch


def test_transient_failure_fails_only_its_record(tc: Transcoding, monkeypatch: pytest.MonkeyPatch) -> None:
    f = files()
    tc.index(f.ct, f.ct2)
    messages = tc.receive()
    service = transcoder_handler.transcoder()
    real = service.store.get
    ct2 = key_of(f.ct2)

    def flaky(key: str) -> bytes:
        if key == ct2:
            raise ConnectionError("S3 did not answer")
        return real(key)

    monkeypatch.setattr(service.store, "get", flaky)
    failed = tc.deliver(messages)
    assert failed == [m["MessageId"] for m in messages if json.loads(m["Body"])["detail"]["key"] == ct2]
    assert tc.receive(tc.dlq_url) == []  # retried by SQS, not dead-lettered at once
    monkeypatch.setattr(service.store, "get", real)
    assert tc.deliver(messages) == []
    assert len(tc.derived_keys()) == 4
