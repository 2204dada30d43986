"""STOW-RS is read-your-writes on the AWS adapters (S3 + DynamoDB on moto, DESIGN.md 4a): with no
indexer Lambda run between the store and the reads, `dicomweb-client` stores an instance and at once
retrieves it by its RetrieveURL, finds it with QIDO-RS and deletes it, 100 times, over a real
uvicorn server. The S3 → SQS notifications delivered to the indexer Lambda afterwards fail none and
leave the catalog as it was (the idempotent safety net).
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pacs.backends import ingest_service, open_backend
from pacs.config import Settings
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO

from functions.dicomweb.app import create_app
from tests.integration import test_moto_pipeline as pipeline
from tests.integration.test_moto_pipeline import MotoPacs, lambda_body, lambda_context, rest_api_event
from tests.unit.conftest import build_dataset, to_part10
from tests.unit.live_server import serve
from tests.unit.test_stow_read_your_writes import attempt

aws = pipeline.aws  # the moto world fixture
S = "1.2.826.0.1.3680043.8.498.4343"
ROUNDS = 100


@pytest.fixture
def web(aws: MotoPacs) -> Iterator[DICOMwebClient]:
    backend = open_backend(Settings.from_env())
    assert backend.settings.backend == "aws"
    try:
        with serve(create_app(backend)) as port:
            yield DICOMwebClient(url=f"http://127.0.0.1:{port}/dicomweb")
    finally:
        backend.close()


def test_store_then_retrieve_search_delete_at_once(web: DICOMwebClient, aws: MotoPacs) -> None:
    not_found: list[str] = []
    accept = {"Accept": 'multipart/related; type="application/dicom"'}
    for n in range(1, ROUNDS + 1):
        series, sop = f"{S}.{n}", f"{S}.{n}.1"
        data = to_part10(build_dataset(StudyInstanceUID=S, SeriesInstanceUID=series, SOPInstanceUID=sop,
                                       InstanceNumber=n))
        (ref,) = web.store_instances([dcmread(DicomBytesIO(data))]).ReferencedSOPSequence
        wado = attempt(not_found, f"WADO-RS of {n}", web.retrieve_instance, S, series, sop)
        assert wado is None or wado.SOPInstanceUID == sop
        found = attempt(not_found, f"QIDO-RS of {n}", web.search_for_instances, S, series)
        assert found is None or [d["00080018"]["Value"] for d in found] == [[sop]]
        attempt(not_found, f"RetrieveURL of {n}", requests.get, ref.RetrieveURL, headers=accept, timeout=30)
        if n % 2:  # every other instance is deleted at once; the others stay
            attempt(not_found, f"DELETE of {n}", web.delete_instance, S, series, sop)
            assert web.search_for_instances(S, series) == []
    assert not_found == []
    # Only now does the indexer Lambda see the notifications: it fails none and changes nothing.
    before = aws.catalog_state()
    messages = aws.receive()
    assert len(messages) >= ROUNDS
    assert aws.deliver(messages) == []
    assert aws.catalog_state() == before
    aws.assert_catalog_matches_store()


@pytest.mark.parametrize(("public_url", "expected"), [
    (None, "https://abc123.execute-api.us-east-1.amazonaws.com/prod/dicomweb/studies/"),  # the stage kept
    ("https://pacs.example.org/imaging/", "https://pacs.example.org/imaging/dicomweb/studies/"),
])
def test_urls_behind_api_gateway(aws: MotoPacs, monkeypatch: pytest.MonkeyPatch, public_url: str | None,
                                 expected: str) -> None:
    """Through Mangum, a REST API's stage (`/prod`) stays in the RetrieveURLs; PACS_PUBLIC_URL wins."""
    if public_url is not None:
        monkeypatch.setenv("PACS_PUBLIC_URL", public_url)
    backend = open_backend(Settings.from_env())
    try:
        data = to_part10(build_dataset(StudyInstanceUID=S))
        ingest_service(backend, index=True).ingest(data)
    finally:
        backend.close()
    sys.modules.pop("functions.dicomweb.handler", None)
    try:
        handler = importlib.import_module("functions.dicomweb.handler").handler
        resp = handler(rest_api_event("/dicomweb/studies"), lambda_context())
    finally:
        sys.modules.pop("functions.dicomweb.handler", None)
    assert resp["statusCode"] == 200, resp
    (study,) = json.loads(lambda_body(resp))
    assert study["00081190"]["Value"] == [expected + S]
