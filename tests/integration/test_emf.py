"""The Lambda handlers' figures as CloudWatch EMF lines (stdout), under the names the dashboard shows.

The indexer handler, invoked with the SQS batch S3 sent (moto), prints InstancesIndexed, IndexedBytes and
IndexerLag; the DICOMweb handler (Mangum), given a STOW-RS request, prints InstancesStored and
InstancesRefused. Namespace PACS, dimension `service` = the function, as `infra/monitoring.py` reads them.
"""

from __future__ import annotations

import base64
import importlib
import json
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pacs.monitoring.metrics import EMF_NAMES

from tests.integration import test_moto_pipeline as pipeline
from tests.integration.test_moto_pipeline import MotoPacs, files, lambda_context, rest_api_event

aws = pipeline.aws  # the moto world fixture


def emf_lines(out: str) -> list[dict[str, Any]]:
    """The EMF documents among the lines printed (powertools' logger prints JSON lines too)."""
    docs = []
    for line in out.splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            if "_aws" in doc:
                docs.append(doc)
    return docs


def figures(docs: list[dict[str, Any]]) -> dict[str, tuple[str, str, list[float]]]:
    """metric name → (namespace, service dimension, values) over every EMF document."""
    out: dict[str, tuple[str, str, list[float]]] = {}
    for doc in docs:
        directive = doc["_aws"]["CloudWatchMetrics"][0]
        assert directive["Dimensions"] == [["service"]]
        for metric in directive["Metrics"]:
            name = metric["Name"]
            value = doc[name]
            values = value if isinstance(value, list) else [value]
            ns, service, seen = out.get(name, (directive["Namespace"], doc["service"], []))
            out[name] = (ns, service, seen + values)
    return out


def test_the_indexer_handler_prints_indexed_instances_and_lag(aws: MotoPacs,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    f = files()
    aws.ingest(f.ct)
    aws.ingest(f.mr)
    messages = aws.receive()
    capsys.readouterr()
    assert aws.deliver(messages) == []
    got = figures(emf_lines(capsys.readouterr().out))
    assert got[EMF_NAMES["indexed"]] == ("PACS", "indexer", [1.0, 1.0])
    ns, service, sizes = got[EMF_NAMES["indexed_bytes"]]
    assert (ns, service) == ("PACS", "indexer") and sorted(sizes) == sorted([len(f.ct), len(f.mr)])
    ns, service, lags = got[EMF_NAMES["indexer_lag"]]
    assert (ns, service) == ("PACS", "indexer") and len(lags) == 2 and all(0 <= lag < 600_000 for lag in lags)


@pytest.fixture
def dicomweb_handler(aws: MotoPacs) -> Iterator[Any]:
    sys.modules.pop("functions.dicomweb.handler", None)
    try:
        yield importlib.import_module("functions.dicomweb.handler").handler
    finally:  # its backend belongs to this test's moto state
        sys.modules.pop("functions.dicomweb.handler", None)


def stow_event(parts: list[bytes]) -> dict[str, Any]:
    boundary = uuid.uuid4().hex
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
                    for p in parts) + b"--" + boundary.encode() + b"--\r\n"
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    event = rest_api_event("/dicomweb/studies", headers={"Content-Type": content_type})
    event["httpMethod"] = event["requestContext"]["httpMethod"] = "POST"
    event["body"] = base64.b64encode(body).decode()
    event["isBase64Encoded"] = True
    return event


def test_the_dicomweb_handler_prints_stored_and_refused_instances(
        aws: MotoPacs, dicomweb_handler: Any, capsys: pytest.CaptureFixture[str]) -> None:
    f = files()
    capsys.readouterr()
    response = dicomweb_handler(stow_event([f.ct, b"not a DICOM file"]), lambda_context())
    assert response["statusCode"] in (200, 202), response
    got = figures(emf_lines(capsys.readouterr().out))
    assert got[EMF_NAMES["instances_stored"]] == ("PACS", "dicomweb", [1.0])
    assert got[EMF_NAMES["instances_refused"]] == ("PACS", "dicomweb", [1.0])


def test_nothing_is_printed_outside_a_handler(aws: MotoPacs, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    aws.ingest(files().ct)  # the gateway's path: Prometheus only
    assert emf_lines(capsys.readouterr().out) == []
