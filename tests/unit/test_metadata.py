"""WADO-RS metadata and bulk data: precomputed at index time, served in one read, kept consistent."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from typing import Any

import orjson
import pydicom
import pytest
from fastapi.testclient import TestClient
from pacs.backends import Backend
from pacs.dicom.json_model import to_dicom_json
from pacs.services import index_worker
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService
from pacs.services.metadata import series_metadata_key
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from functions.dicomweb import metadata
from functions.dicomweb.app import create_app
from tests.unit.conftest import build_dataset, to_part10

ST = "1.2.826.0.1.3680043.8.498.30"
SE1, SE2 = f"{ST}.1", f"{ST}.2"
BASE = "http://testserver/dicomweb/"
JSON = {"accept": "application/dicom+json", "accept-encoding": "identity"}


def make(series: str, n: int, **attrs: Any) -> Dataset:
    seq = Dataset()
    seq.LongCodeValue = "x" * 1500  # a long value inside a sequence: a nested BulkDataURI
    seq.CodeValue = "C1"
    return build_dataset(StudyInstanceUID=ST, SeriesInstanceUID=series, SOPInstanceUID=f"{series}.{n}",
                         InstanceNumber=n, ProcedureCodeSequence=[seq], **attrs)


def encapsulated(series: str, n: int) -> Dataset:
    ds = make(series, n)
    ds.PixelData = encapsulate([b"abcd" * 5, b"xyz1" * 3])
    ds["PixelData"].VR = "OB"
    return ds


class Env:
    def __init__(self, backend: Backend, client: TestClient) -> None:
        self.backend, self.client = backend, client
        self.indexer = IndexerService(backend.store, backend.catalog)
        self.sent: dict[str, bytes] = {}

    def send(self, ds: Dataset, ts: str | None = None) -> bytes:
        data = to_part10(ds, ts) if ts else to_part10(ds)
        IngestService(self.backend.store).ingest(data)
        self.sent[str(ds.SOPInstanceUID)] = data
        return data

    def drain(self) -> None:
        assert self.backend.queue is not None
        with self.indexer.batch():
            while index_worker.drain_once(self.backend.queue, self.indexer):
                pass

    def remove(self, series: str, sop: str) -> None:
        self.backend.store.delete(f"default/studies/{ST}/series/{series}/instances/{sop}.dcm")
        self.sent.pop(sop)

    def expected(self, sop: str) -> dict[str, Any]:
        ds = pydicom.dcmread(io.BytesIO(self.sent[sop]))
        series = str(ds.SeriesInstanceUID)
        obj = to_dicom_json(ds, bulk_data_threshold=1024, bulk_data_uri=lambda p: (
            f"{BASE}studies/{ST}/series/{series}/instances/{sop}/bulkdata/{p}"))
        obj["00083002"] = {"vr": "UI", "Value": [str(ds.file_meta.TransferSyntaxUID)]}
        return obj


@pytest.fixture
def env(embedded: Backend) -> Iterator[Env]:
    app = create_app(embedded)
    app.include_router(metadata.router, prefix="/dicomweb")
    with TestClient(app) as c:
        e = Env(embedded, c)
        for n in (3, 1, 2):
            e.send(make(SE1, n))
        e.send(encapsulated(SE2, 1), RLELossless)
        e.drain()
        yield e


def sops(objs: list[dict[str, Any]]) -> list[str]:
    return [o["00080018"]["Value"][0] for o in objs]


def test_instance_metadata_is_the_header_with_absolute_uris(env: Env) -> None:
    r = env.client.get(f"/dicomweb/studies/{ST}/series/{SE1}/instances/{SE1}.1/metadata", headers=JSON)
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom+json"
    (obj,) = r.json()
    assert obj == env.expected(f"{SE1}.1")
    assert obj["7FE00010"]["BulkDataURI"].startswith(BASE)
    nested = obj["00081032"]["Value"][0]["00080119"]["BulkDataURI"]
    assert nested.endswith("/bulkdata/00081032/0/00080119")


def test_series_metadata_sorted_precomputed_and_consistent(env: Env) -> None:
    assert env.backend.store.head(series_metadata_key("default", ST, SE1)) is not None  # built at index
    url = f"/dicomweb/studies/{ST}/series/{SE1}/metadata"
    r = env.client.get(url, headers=JSON)
    assert r.json() == [env.expected(f"{SE1}.{n}") for n in (1, 2, 3)]
    # replace one, add one, remove one
    env.send(make(SE1, 2, PatientName="Changed^Name"))
    env.send(make(SE1, 4))
    env.remove(SE1, f"{SE1}.3")
    env.drain()
    r = env.client.get(url, headers=JSON)
    assert r.json() == [env.expected(f"{SE1}.{n}") for n in (1, 2, 4)]
    assert r.json()[1]["00100010"]["Value"] == [{"Alphabetic": "Changed^Name"}]
    # outside a batch: the object is dropped and the read rebuilds it
    env.remove(SE1, f"{SE1}.1")
    assert env.backend.queue is not None
    for msg in env.backend.queue.receive(100):  # the indexer by itself, not the batching worker
        env.indexer.handle(msg.event)
        env.backend.queue.ack(msg.id)
    assert env.backend.store.head(series_metadata_key("default", ST, SE1)) is None
    assert sops(env.client.get(url, headers=JSON).json()) == [f"{SE1}.2", f"{SE1}.4"]
    assert env.backend.store.head(series_metadata_key("default", ST, SE1)) is not None
    # all removed: 404
    env.remove(SE1, f"{SE1}.2")
    env.remove(SE1, f"{SE1}.4")
    env.drain()
    assert env.client.get(url, headers=JSON).status_code == 404


def test_legacy_series_built_from_originals(env: Env) -> None:
    store = env.backend.store
    for b in list(store.list(f"default/derived/{ST}/")):
        store.delete(b.key)
    r = env.client.get(f"/dicomweb/studies/{ST}/series/{SE1}/metadata", headers=JSON)
    assert r.json() == [env.expected(f"{SE1}.{n}") for n in (1, 2, 3)]
    assert store.head(series_metadata_key("default", ST, SE1)) is not None
    r = env.client.get(f"/dicomweb/studies/{ST}/series/{SE2}/instances/{SE2}.1/metadata", headers=JSON)
    assert r.json() == [env.expected(f"{SE2}.1")]


def test_etag_and_if_none_match(env: Env) -> None:
    url = f"/dicomweb/studies/{ST}/series/{SE1}/metadata"
    r = env.client.get(url)
    etag = r.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    r2 = env.client.get(url, headers={"if-none-match": etag})
    assert r2.status_code == 304 and r2.headers["etag"] == etag
    env.send(make(SE1, 5))
    env.drain()
    r3 = env.client.get(url, headers={"if-none-match": etag})
    assert r3.status_code == 200 and r3.headers["etag"] != etag


def test_gzip_when_accepted_plain_otherwise(env: Env) -> None:
    url = f"/dicomweb/studies/{ST}/series/{SE1}/metadata"
    with env.client.stream("GET", url, headers={"accept-encoding": "gzip"}) as r:
        assert r.headers["content-encoding"] == "gzip"
        raw = b"".join(r.iter_raw())
    assert orjson.loads(gzip.decompress(raw)) == [env.expected(f"{SE1}.{n}") for n in (1, 2, 3)]
    with env.client.stream("GET", url, headers={"accept-encoding": "identity"}) as r:
        assert "content-encoding" not in r.headers
        assert orjson.loads(b"".join(r.iter_raw()))[0]["00080018"]["Value"] == [f"{SE1}.1"]


def test_study_metadata_is_the_union_of_its_series(env: Env) -> None:
    r = env.client.get(f"/dicomweb/studies/{ST}/metadata", headers=JSON)
    assert r.status_code == 200
    assert sorted(sops(r.json())) == sorted([f"{SE1}.1", f"{SE1}.2", f"{SE1}.3", f"{SE2}.1"])


def test_accept_and_404s(env: Env) -> None:
    url = f"/dicomweb/studies/{ST}/series/{SE1}/metadata"
    for accept in ("application/json", "*/*", "application/dicom+json; q=0.9"):
        assert env.client.get(url, headers={"accept": accept}).status_code == 200
    assert env.client.get(url, headers={"accept": "application/dicom"}).status_code == 406
    assert env.client.get(f"/dicomweb/studies/{ST}/series/1.2.3/metadata").status_code == 404
    assert env.client.get("/dicomweb/studies/1.2.3/metadata").status_code == 404
    assert env.client.get(f"/dicomweb/studies/{ST}/series/{SE1}/instances/1.2.3/metadata").status_code == 404
    bulk = f"/dicomweb/studies/{ST}/series/{SE1}/instances/{SE1}.1/bulkdata"
    assert env.client.get(f"{bulk}/00091010").status_code == 404
    assert env.client.get(f"{bulk}/nonsense").status_code == 404
    assert env.client.get(f"/dicomweb/studies/{ST}/series/{SE1}/instances/1.2.3/bulkdata/7FE00010").status_code == 404
    assert env.client.get(f"/dicomweb/studies/{ST}/series/-x/metadata").status_code == 400


@pytest.mark.parametrize("which", ["native", "encapsulated"])
def test_pixel_data_bulkdata(env: Env, which: str) -> None:
    series, sop = (SE1, f"{SE1}.1") if which == "native" else (SE2, f"{SE2}.1")
    pixels = pydicom.dcmread(io.BytesIO(env.sent[sop])).PixelData
    meta = env.client.get(f"/dicomweb/studies/{ST}/series/{series}/instances/{sop}/metadata").json()
    uri = meta[0]["7FE00010"]["BulkDataURI"]
    r = env.client.get(uri, headers={"accept": "application/octet-stream"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert r.content == pixels
    r = env.client.get(uri, headers={"range": "bytes=4-11"})
    assert r.status_code == 206 and r.content == pixels[4:12]
    assert r.headers["content-range"] == f"bytes 4-11/{len(pixels)}"
    r = env.client.get(uri, headers={"range": "bytes=-5"})
    assert r.status_code == 206 and r.content == pixels[-5:]
    r = env.client.get(uri, headers={"accept": "multipart/related; type=application/octet-stream"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/related")
    boundary = r.headers["content-type"].split("boundary=")[1]
    head, rest = r.content.split(b"\r\n\r\n", 1)
    assert b"application/octet-stream" in head
    assert rest == pixels + f"\r\n--{boundary}--\r\n".encode()
    # more than 8 bits: no JPEG Baseline (PS3.5 8.2.1), whatever the stored syntax
    baseline = "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
    assert env.client.get(uri, headers={"accept": baseline}).status_code == 406


def test_nested_bulkdata_and_implicit_vr(env: Env) -> None:
    env.send(make(SE1, 7), ImplicitVRLittleEndian)
    env.drain()
    sop = f"{SE1}.7"
    (obj,) = env.client.get(f"/dicomweb/studies/{ST}/series/{SE1}/instances/{sop}/metadata").json()
    assert obj == env.expected(sop)
    r = env.client.get(obj["00081032"]["Value"][0]["00080119"]["BulkDataURI"])
    assert r.content == b"x" * 1500
    assert env.client.get(obj["7FE00010"]["BulkDataURI"]).content == pydicom.dcmread(
        io.BytesIO(env.sent[sop])).PixelData
