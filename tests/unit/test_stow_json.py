"""STOW-RS of DICOM JSON metadata with bulk data parts: native and compressed round trips, bad input."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
from fastapi.testclient import TestClient
from pacs.backends import Backend
from pacs.dicom.json_model import to_dicom_json
from pacs.storage.keys import instance_key
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless, RLELossless

from functions.dicomweb import stow
from tests.unit.conftest import build_dataset
from tests.unit.test_stow import (
    BOUNDARY,
    S,
    _Adapter,
    drain,
    failures,
    post_streamed,
    values,
    wado_parts,
    with_stow,
)

JSON_CT = f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}'
BULK = "http://testserver/bulk"
Part = tuple[dict[str, str], bytes]


@pytest.fixture
def client(embedded: Backend) -> Iterator[TestClient]:
    with TestClient(with_stow(embedded)) as c:
        yield c


def dataset(n: int, **attrs: Any) -> Dataset:
    uids = {"StudyInstanceUID": S, "SeriesInstanceUID": f"{S}.1", "SOPInstanceUID": f"{S}.1.{n}"}
    ds = build_dataset(**{**uids, "InstanceNumber": n, **attrs})
    ds.Rows = ds.Columns = 16
    ds.PixelData = (np.arange(256, dtype=np.int16) * n - 100).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def metadata(ds: Dataset, location: str | None = None) -> dict[str, Any]:
    """The DICOM JSON of `ds` with its Pixel Data as a BulkDataURI (`location`, else one per instance)."""
    uri = location or f"{BULK}/{ds.SOPInstanceUID}"
    return to_dicom_json(ds, bulk_data_threshold=None, bulk_data_uri=lambda path: uri)


def json_part(instances: list[Any] | bytes) -> Part:
    import orjson

    data = instances if isinstance(instances, bytes) else orjson.dumps(instances)
    return {"Content-Type": "application/dicom+json"}, data


def bulk_part(location: str, data: bytes, media: str = "application/octet-stream") -> Part:
    return {"Content-Type": media, "Content-Location": location}, data


def body(*parts: Part, close: bool = True) -> bytes:
    out = bytearray()
    for headers, data in parts:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        out += f"--{BOUNDARY}\r\n{head}\r\n".encode() + data + b"\r\n"
    if close:
        out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


def post(client: TestClient, *parts: Part, url: str = "/dicomweb/studies", ctype: str = JSON_CT) -> Any:
    return client.post(url, content=body(*parts), headers={"Content-Type": ctype})


def stored(embedded: Backend, n: int) -> Dataset | None:
    key = instance_key("default", S, f"{S}.1", f"{S}.1.{n}")
    if embedded.store.head(key) is None:
        return None
    with embedded.store.open(key) as fh:
        return dcmread(io.BytesIO(fh.read()))


def retrieve(client: TestClient, n: int) -> Dataset:
    (part,) = wado_parts(client, f"/dicomweb/studies/{S}/series/{S}.1/instances/{S}.1.{n}")
    return dcmread(io.BytesIO(part))


def test_native_instances_round_trip(client: TestClient, embedded: Backend) -> None:
    sets = [dataset(n) for n in (1, 2)]
    r = post(client, json_part([metadata(ds) for ds in sets]),
             *(bulk_part(f"{BULK}/{ds.SOPInstanceUID}", ds.PixelData) for ds in sets))
    assert r.status_code == 200, r.text
    refs = r.json()["00081199"]["Value"]
    assert [values(i, "00081155")[0] for i in refs] == [f"{S}.1.1", f"{S}.1.2"]
    assert embedded.spool_dir is not None and not list(embedded.spool_dir.iterdir())  # spool cleaned
    drain(embedded)
    for n, ds in enumerate(sets, 1):
        got = retrieve(client, n)
        assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert got.PixelData == ds.PixelData and got["PixelData"].VR == "OW"
        assert (got.PatientName, got.StudyDescription, got.Rows) == ("Doe^John", "CT chest", 16)
        assert np.array_equal(got.pixel_array, ds.pixel_array)
    frames = wado_parts(client, f"/dicomweb/studies/{S}/series/{S}.1/instances/{S}.1.2/frames/1")
    assert frames == [sets[1].PixelData]


def test_json_stow_is_read_your_writes(client: TestClient, embedded: Backend) -> None:
    """No index worker runs: the instance is retrievable and searchable by the next request."""
    ds = dataset(1)
    r = post(client, json_part([metadata(ds)]), bulk_part(f"{BULK}/{ds.SOPInstanceUID}", ds.PixelData))
    assert r.status_code == 200, r.text
    assert retrieve(client, 1).PixelData == ds.PixelData
    found = client.get(f"/dicomweb/studies/{S}/instances")
    assert found.status_code == 200 and [i["00080018"]["Value"] for i in found.json()] == [[f"{S}.1.1"]]


def test_relative_locations_inline_binary_and_implicit_vr(client: TestClient, embedded: Backend) -> None:
    one, two = dataset(1), dataset(2)
    first = metadata(one, location="/bulk/one")  # matched with an absolute Content-Location
    first["00020010"] = {"vr": "UI", "Value": [ImplicitVRLittleEndian]}
    second = to_dicom_json(two, bulk_data_threshold=None)  # Pixel Data as InlineBinary
    assert "InlineBinary" in second["7FE00010"]
    r = post(client, json_part([first, second]), bulk_part("http://testserver/bulk/one", one.PixelData))
    assert r.status_code == 200, r.text
    got = stored(embedded, 1)
    assert got is not None and got.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert got.PixelData == one.PixelData
    got = stored(embedded, 2)
    assert got is not None and got.PixelData == two.PixelData


def test_lower_case_tag_keys(client: TestClient, embedded: Backend) -> None:
    ds = dataset(1)
    meta = {k.lower(): v for k, v in metadata(ds).items()}
    r = post(client, json_part([meta]), bulk_part(f"{BULK}/{S}.1.1", ds.PixelData))
    assert r.status_code == 200, r.text
    got = stored(embedded, 1)
    assert got is not None and got.PixelData == ds.PixelData and got.StudyDescription == "CT chest"


def compressed(ds: Dataset, syntax: str) -> list[bytes]:
    """Compress `ds` in place; its frames as encoded."""
    ds.compress(syntax, generate_instance_uid=False)
    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))


@pytest.mark.parametrize(("syntax", "media"), [(JPEGLSLossless, "image/jls"), (RLELossless, "image/dicom-rle")])
def test_compressed_multiframe_round_trip(client: TestClient, embedded: Backend, syntax: str, media: str) -> None:
    ds = dataset(1, NumberOfFrames=3)
    ds.PixelData = (np.arange(3 * 256, dtype=np.int16) % 977).tobytes()
    original = ds.pixel_array.copy()
    frames = compressed(ds, syntax)
    meta = metadata(ds, location="frames-1")  # no (0002,0010): the syntax comes from the media type
    r = post(client, json_part([meta]), *(bulk_part("frames-1", f, media) for f in frames))
    assert r.status_code == 200, r.text
    drain(embedded)
    got = retrieve(client, 1)
    assert got.file_meta.TransferSyntaxUID == syntax
    assert list(generate_frames(got.PixelData, number_of_frames=3)) == frames
    assert np.array_equal(got.pixel_array, original)
    served = wado_parts(client, f"/dicomweb/studies/{S}/series/{S}.1/instances/{S}.1.1/frames/2")
    assert served == [frames[1]]


def test_transfer_syntax_parameter_of_the_bulk_part(client: TestClient, embedded: Backend) -> None:
    ds = dataset(1)
    frames = compressed(ds, JPEGLSLossless)
    meta = metadata(ds)
    r = post(client, json_part([meta]),
             bulk_part(f"{BULK}/{S}.1.1", frames[0], f"image/jls; transfer-syntax={JPEGLSLossless}"))
    assert r.status_code == 200, r.text
    got = stored(embedded, 1)
    assert got is not None and got.file_meta.TransferSyntaxUID == JPEGLSLossless


def test_dicomweb_client_retrieves_what_json_stored(client: TestClient, embedded: Backend) -> None:
    """dicomweb-client 0.61 cannot send this form (its store_instances writes Part 10 parts only); it
    reads back what plain HTTP stored."""
    from dicomweb_client.api import DICOMwebClient

    ds = dataset(1)
    frames = compressed(ds, JPEGLSLossless)
    assert post(client, json_part([metadata(ds)]), bulk_part(f"{BULK}/{S}.1.1", frames[0], "image/jls")
                ).status_code == 200
    drain(embedded)
    session = requests.Session()
    session.mount("http://testserver", _Adapter(client))
    dw = DICOMwebClient(url="http://testserver/dicomweb", session=session)
    got = dw.retrieve_instance(S, f"{S}.1", f"{S}.1.1")
    assert got.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert list(generate_frames(got.PixelData, number_of_frames=1)) == frames
    assert dw.retrieve_instance_frames(S, f"{S}.1", f"{S}.1.1", [1], media_types=("image/jls",)) == frames


def test_bad_instances_fail_alone(client: TestClient, embedded: Backend) -> None:
    good, no_bulk, no_uid, bad_uid = dataset(1), dataset(2), dataset(3), dataset(4)
    missing = metadata(no_uid)
    del missing["00080018"]
    wrong = metadata(bad_uid)
    wrong["0020000E"] = {"vr": "UI", "Value": ["1.2.abc_d"]}
    r = post(client, json_part([metadata(good), metadata(no_bulk), missing, wrong, "not an object"]),
             bulk_part(f"{BULK}/{S}.1.1", good.PixelData), bulk_part(f"{BULK}/{S}.1.3", no_uid.PixelData),
             bulk_part(f"{BULK}/{S}.1.4", bad_uid.PixelData))
    assert r.status_code == 202, r.text
    assert failures(r) == [0xC000, 0xC000, 0xA900, 0xC000]
    failed = r.json()["00081198"]["Value"]
    assert values(failed[0], "00081155") == [f"{S}.1.2"] and "00081155" not in failed[1]
    warning = r.headers["warning"]
    assert "is not the Content-Location of any part" in warning and "SOPInstanceUID" in warning
    assert "SeriesInstanceUID" in warning and "not an object" in warning
    assert stored(embedded, 1) is not None
    assert all(stored(embedded, n) is None for n in (2, 3, 4))


def test_pixel_data_of_the_wrong_length_or_type(client: TestClient, embedded: Backend) -> None:
    short, jls = dataset(1), dataset(2)
    jls_meta = metadata(jls)
    jls_meta["00020010"] = {"vr": "UI", "Value": [ExplicitVRLittleEndian]}  # but the part is JPEG-LS
    r = post(client, json_part([metadata(short), jls_meta]),
             bulk_part(f"{BULK}/{S}.1.1", short.PixelData[:-2]),
             bulk_part(f"{BULK}/{S}.1.2", compressed(dataset(2), JPEGLSLossless)[0], "image/jls"))
    assert r.status_code == 409 and failures(r) == [0xC000, 0xC000]
    assert "call for 512" in r.headers["warning"] and "native transfer syntax" in r.headers["warning"]


def test_an_instance_of_another_study_is_not_stored(client: TestClient, embedded: Backend) -> None:
    ds = dataset(1)
    r = post(client, json_part([metadata(ds)]), bulk_part(f"{BULK}/{S}.1.1", ds.PixelData),
             url="/dicomweb/studies/1.2.3")
    assert r.status_code == 409 and failures(r) == [0xA900]
    assert stored(embedded, 1) is None


@pytest.mark.parametrize(
    ("metadata_body", "reason"),
    [(b"{not json", "not valid JSON"), (b'{"00080018": {"vr": "UI"}}', "not an array"),
     (b"[]", "no instance metadata")],
)
def test_malformed_metadata_is_400(client: TestClient, embedded: Backend, metadata_body: bytes,
                                   reason: str) -> None:
    r = post(client, json_part(metadata_body))
    assert r.status_code == 400 and reason in r.json()["error"]
    assert embedded.spool_dir is not None and not list(embedded.spool_dir.iterdir())


def test_a_truncated_body_stores_nothing(client: TestClient, embedded: Backend) -> None:
    sets = [dataset(n) for n in (1, 2)]
    content = body(json_part([metadata(ds) for ds in sets]),
                   *(bulk_part(f"{BULK}/{ds.SOPInstanceUID}", ds.PixelData) for ds in sets), close=False)
    r = client.post("/dicomweb/studies", content=content[:-100], headers={"Content-Type": JSON_CT})
    assert r.status_code == 400 and "malformed multipart body" in r.json()["error"]
    assert stored(embedded, 1) is None and stored(embedded, 2) is None
    assert embedded.spool_dir is not None and not list(embedded.spool_dir.iterdir())


def test_metadata_over_the_cap_is_413(client: TestClient, embedded: Backend,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stow, "MAX_METADATA_BYTES", 1000)
    ds = dataset(1)
    r = post(client, json_part([metadata(ds)] * 3), bulk_part(f"{BULK}/{S}.1.1", ds.PixelData))
    assert r.status_code == 413 and "exceeds 1000 bytes" in r.json()["error"]
    assert stored(embedded, 1) is None


def test_large_bulk_data_is_streamed_not_held(embedded: Backend) -> None:
    size = 50 * 1024 * 1024
    ds = dataset(1)
    ds.Rows, ds.Columns = size // 2 // 1024, 1024
    pixels = np.full(size // 2, 7, dtype=np.int16).tobytes()
    content = memoryview(body(json_part([metadata(ds)]), bulk_part(f"{BULK}/{S}.1.1", pixels)))
    del pixels
    status, out, peak = post_streamed(with_stow(embedded), JSON_CT, content)
    assert status == 200, out
    assert peak < 10 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while streaming {len(content) / 2**20:.0f} MiB"
    key = instance_key("default", S, f"{S}.1", f"{S}.1.1")
    with embedded.store.open(key) as fh:
        got = dcmread(fh, stop_before_pixels=True)
        assert got.Rows == size // 2 // 1024
    info = embedded.store.head(key)
    assert info is not None and info.size > size
