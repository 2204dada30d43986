"""DICOMweb app (QIDO-RS, WADO-RS, health, metrics) on the embedded backend, through HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pacs.backends import Backend
from pacs.services import index_worker
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService

from functions.dicomweb.app import create_app
from tests.unit.conftest import MakePart10

S1, S2 = "1.2.826.0.1.3680043.8.498.10", "1.2.826.0.1.3680043.8.498.20"


@pytest.fixture
def sent(embedded: Backend, make_part10: MakePart10) -> dict[str, bytes]:
    """Two patients: a CT study (2 series × 2) in January, an MR study (1 × 3) in March."""
    objects = {}
    ingest = IngestService(embedded.store)
    for series in (1, 2):
        for n in (1, 2):
            data = make_part10(
                StudyInstanceUID=S1, SeriesInstanceUID=f"{S1}.{series}", SOPInstanceUID=f"{S1}.{series}.{n}",
                SeriesNumber=series, InstanceNumber=n,
            )
            objects[f"{S1}.{series}.{n}"] = data
            ingest.ingest(data)
    for n in (1, 2, 3):
        data = make_part10(
            StudyInstanceUID=S2, SeriesInstanceUID=f"{S2}.1", SOPInstanceUID=f"{S2}.1.{n}",
            PatientName="Smith^Jane", PatientID="PID2", StudyDate="20240315", AccessionNumber="ACC2",
            Modality="MR", InstanceNumber=n, StudyDescription="MR brain",
        )
        objects[f"{S2}.1.{n}"] = data
        ingest.ingest(data)
    assert embedded.queue is not None
    while index_worker.drain_once(embedded.queue, IndexerService(embedded.store, embedded.catalog)):
        pass
    return objects


@pytest.fixture
def client(embedded: Backend, sent: dict[str, bytes]) -> Iterator[TestClient]:
    with TestClient(create_app(embedded)) as c:
        yield c


def uids(response, tag: str = "0020000D") -> list[str]:  # type: ignore[no-untyped-def]
    return [item[tag]["Value"][0] for item in response.json()]


def test_all_studies_newest_first_with_aggregates(client: TestClient) -> None:
    r = client.get("/dicomweb/studies")
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom+json"
    mr, ct = r.json()
    assert mr["0020000D"]["Value"] == [S2] and ct["0020000D"]["Value"] == [S1]
    assert ct["00201206"]["Value"] == [2] and ct["00201208"]["Value"] == [4]
    assert mr["00201206"]["Value"] == [1] and mr["00201208"]["Value"] == [3]
    assert mr["00080061"]["Value"] == ["MR"]
    assert ct["00100010"]["Value"] == [{"Alphabetic": "Doe^John"}]
    assert ct["00081190"]["Value"] == [f"http://testserver/dicomweb/studies/{S1}"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("PatientID=PID2", [S2]),
        ("00100020=PID1", [S1]),
        ("PatientName=doe*", [S1]),
        ("PatientName=SMITH^JANE", [S2]),
        ("PatientName=jan&fuzzymatching=true", [S2]),
        ("StudyDate=20240101-20240201", [S1]),
        ("StudyDate=20240301-", [S2]),
        ("ModalitiesInStudy=CT", [S1]),
        ("AccessionNumber=ACC2", [S2]),
        (f"StudyInstanceUID={S1}%5C{S2}", [S2, S1]),
        ("StudyDescription=*brain*", [S2]),
    ],
)
def test_study_matching(client: TestClient, query: str, expected: list[str]) -> None:
    assert uids(client.get(f"/dicomweb/studies?{query}")) == expected


def test_no_match_is_204(client: TestClient) -> None:
    assert client.get("/dicomweb/studies?PatientID=nobody").status_code == 204


def test_limit_offset_and_warning(client: TestClient) -> None:
    r = client.get("/dicomweb/studies?limit=1")
    assert uids(r) == [S2] and "additional results" in r.headers["warning"]
    r = client.get("/dicomweb/studies?limit=1&offset=1")
    assert uids(r) == [S1] and "warning" not in r.headers


@pytest.mark.parametrize(
    "query", ["limit=-1", "offset=x", "NoSuchAttribute=1", "StudyDate=2024-13", "fuzzymatching=maybe",
              "includefield=NotAKeyword"],
)
def test_bad_parameters_are_400(client: TestClient, query: str) -> None:
    r = client.get(f"/dicomweb/studies?{query}")
    assert r.status_code == 400 and r.json()["error"]


def test_series_of_a_study(client: TestClient) -> None:
    r = client.get(f"/dicomweb/studies/{S1}/series")
    assert uids(r, "0020000E") == [f"{S1}.1", f"{S1}.2"]
    assert [s["00201209"]["Value"] for s in r.json()] == [[2], [2]]
    assert uids(client.get(f"/dicomweb/studies/{S1}/series?SeriesNumber=2"), "0020000E") == [f"{S1}.2"]
    assert client.get(f"/dicomweb/studies/{S1}/series?Modality=MR").status_code == 204


def test_instances_and_includefield(client: TestClient) -> None:
    r = client.get(f"/dicomweb/studies/{S1}/series/{S1}.1/instances")
    items = r.json()
    assert uids(r, "00080018") == [f"{S1}.1.1", f"{S1}.1.2"]
    assert "00280010" in items[0] and "00280030" not in items[0]
    assert items[0]["00081190"]["Value"] == [
        f"http://testserver/dicomweb/studies/{S1}/series/{S1}.1/instances/{S1}.1.1"
    ]
    assert items[0]["00083002"]["Value"] == ["1.2.840.10008.1.2.1"]
    r = client.get(f"/dicomweb/studies/{S1}/series/{S1}.1/instances?includefield=00280101%2CPixelRepresentation")
    assert "00280101" in r.json()[0] and "00280103" in r.json()[0]
    r = client.get(f"/dicomweb/studies/{S1}/instances?InstanceNumber=2&includefield=all")
    assert uids(r, "00080018") == [f"{S1}.1.2", f"{S1}.2.2"]


def parts(response) -> list[bytes]:  # type: ignore[no-untyped-def]
    boundary = re.search(r"boundary=([^;]+)", response.headers["content-type"])[1]  # type: ignore[index]
    body = response.content
    chunks = body.split(b"--" + boundary.encode())[1:-1]
    out = []
    for c in chunks:
        head, _, payload = c.partition(b"\r\n\r\n")
        assert b"Content-Type: application/dicom" in head
        out.append(payload[:-2])  # the CRLF before the next boundary
    assert body.endswith(f"--{boundary}--\r\n".encode())
    return out


def test_retrieve_instance_series_study(client: TestClient, sent: dict[str, bytes]) -> None:
    r = client.get(f"/dicomweb/studies/{S1}/series/{S1}.2/instances/{S1}.2.1")
    assert r.status_code == 200 and r.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    assert parts(r) == [sent[f"{S1}.2.1"]]
    assert parts(client.get(f"/dicomweb/studies/{S1}/series/{S1}.1")) == [sent[f"{S1}.1.1"], sent[f"{S1}.1.2"]]
    assert sorted(parts(client.get(f"/dicomweb/studies/{S2}"))) == sorted(
        v for k, v in sent.items() if k.startswith(S2)
    )


@pytest.mark.parametrize(
    "accept",
    [
        'multipart/related; type="application/dicom"',
        "multipart/related; type=application/dicom",
        'multipart/related; type="application/dicom"; transfer-syntax=*',
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1',
        'application/json;q=0.5, multipart/related; type="application/dicom"',
        "*/*",
    ],
)
def test_accept_variants(client: TestClient, accept: str) -> None:
    r = client.get(f"/dicomweb/studies/{S2}", headers={"Accept": accept})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "accept",
    [
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.110',
        "application/json",
        'multipart/related; type="application/octet-stream"',
    ],
)
def test_unavailable_representations_are_406(client: TestClient, accept: str) -> None:
    r = client.get(f"/dicomweb/studies/{S2}", headers={"Accept": accept})
    assert r.status_code == 406 and r.json()["error"]


def test_unknown_and_invalid_uids(client: TestClient) -> None:
    assert client.get("/dicomweb/studies/1.2.3").status_code == 404
    assert client.get(f"/dicomweb/studies/{S1}/series/1.2.3/instances/1.2.3.4").status_code == 404
    r = client.get("/dicomweb/studies/1.2_abc/series")
    assert r.status_code == 400 and "StudyInstanceUID" in r.json()["error"]


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    client.get("/dicomweb/studies")
    text = client.get("/metrics").text
    assert 'pacs_http_requests_total{method="GET",route="/dicomweb/studies",status="200"}' in text


# -- searches across studies, and attributes matched at their own level -----------------------------


def test_all_series(client: TestClient) -> None:
    r = client.get("/dicomweb/series")
    assert uids(r, "0020000E") == [f"{S2}.1", f"{S1}.1", f"{S1}.2"]  # newest study first
    mr = r.json()[0]
    assert mr["00100020"]["Value"] == ["PID2"] and mr["0020000D"]["Value"] == [S2]  # study attributes too
    assert mr["00201209"]["Value"] == [3]
    assert mr["00081190"]["Value"] == [f"http://testserver/dicomweb/studies/{S2}/series/{S2}.1"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Modality=MR", [f"{S2}.1"]),
        ("PatientID=PID1", [f"{S1}.1", f"{S1}.2"]),
        ("PatientID=PID1&SeriesNumber=2", [f"{S1}.2"]),
        ("StudyDate=20240301-&Modality=CT", []),
        ("limit=1&offset=1", [f"{S1}.1"]),
    ],
)
def test_series_matching_across_levels(client: TestClient, query: str, expected: list[str]) -> None:
    r = client.get(f"/dicomweb/series?{query}")
    assert (uids(r, "0020000E") if r.status_code == 200 else []) == expected


def test_all_instances(client: TestClient) -> None:
    r = client.get("/dicomweb/instances?PatientID=PID2")
    assert uids(r, "00080018") == [f"{S2}.1.{n}" for n in (1, 2, 3)]
    first = r.json()[0]
    assert first["0020000E"]["Value"] == [f"{S2}.1"] and first["00080060"]["Value"] == ["MR"]
    r = client.get("/dicomweb/instances?Modality=CT&InstanceNumber=2")
    assert uids(r, "00080018") == [f"{S1}.1.2", f"{S1}.2.2"]
    r = client.get("/dicomweb/instances?limit=2")
    assert len(r.json()) == 2 and "additional results" in r.headers["warning"]


def test_study_attributes_in_a_series_search_of_one_study(client: TestClient) -> None:
    assert uids(client.get(f"/dicomweb/studies/{S1}/series?PatientName=doe*"), "0020000E") == [f"{S1}.1", f"{S1}.2"]
    assert client.get(f"/dicomweb/studies/{S1}/series?PatientName=smith").status_code == 204
    r = client.get(f"/dicomweb/studies/{S1}/instances?Modality=CT&SeriesNumber=1")
    assert uids(r, "00080018") == [f"{S1}.1.1", f"{S1}.1.2"]


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/dicomweb/studies", {"Accept": "application/dicom+json"}, 200),
        ("/dicomweb/studies", {"Accept": "application/json"}, 200),
        ("/dicomweb/studies", {"Accept": "application/dicom+xml;q=0.9, */*;q=0.1"}, 200),
        ("/dicomweb/studies", {"Accept": "application/dicom+xml"}, 406),
        ("/dicomweb/studies", {"Accept": 'multipart/related; type="application/dicom+xml"'}, 406),
        ("/dicomweb/studies?accept=application/dicom%2Bjson", {"Accept": "application/dicom+xml"}, 200),
        ("/dicomweb/studies?accept=application/dicom%2Bxml", {}, 406),
        ("/dicomweb/studies?charset=utf-8", {}, 200),
        ("/dicomweb/studies?charset=ISO-8859-1,utf-8", {}, 200),
        ("/dicomweb/studies?charset=ISO-8859-1", {}, 406),
        (f"/dicomweb/studies/{S1}/series", {"Accept": "application/dicom+xml"}, 406),
    ],
)
def test_qido_media_types_and_charset(client: TestClient, path: str, headers: dict[str, str], status: int) -> None:
    r = client.get(path, headers=headers)
    assert r.status_code == status, r.text
    if status == 406:
        assert r.json()["error"]
    else:
        assert r.headers["content-type"].startswith("application/dicom+json")
