"""WADO-RS frames: native, big endian, packed bits and compressed instances, Accept, errors."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pacs.backends import Backend
from pacs.services import frames as frame_service_module
from pacs.services import index_worker
from pacs.services.frames import FrameService, LayoutCache
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService
from pacs.services.retrieve import RetrieveService
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.pixels import get_decoder
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from functions.dicomweb import frames
from functions.dicomweb.app import create_app
from tests.unit.conftest import build_dataset, to_part10

STUDY, SERIES = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.1.1"
OHIF = "multipart/related; type=application/octet-stream; transfer-syntax=*"
Store = Callable[..., str]


@pytest.fixture
def client(embedded: Backend) -> Iterator[TestClient]:
    app = create_app(embedded)
    app.include_router(frames.router, prefix="/dicomweb")
    with TestClient(app) as c:
        yield c


@pytest.fixture
def store(embedded: Backend) -> Store:
    """Ingest and index a dataset under a new SOP Instance UID; return its frames URL prefix."""
    counter = iter(range(1, 1000))

    def put(ds: Dataset, transfer_syntax: str, sop: str | None = None) -> str:
        sop = sop or f"{SERIES}.{next(counter)}"
        ds.SOPInstanceUID = sop
        data = to_part10(ds, transfer_syntax)
        IngestService(embedded.store).ingest(data)
        assert embedded.queue is not None
        while index_worker.drain_once(embedded.queue, IndexerService(embedded.store, embedded.catalog)):
            pass
        return f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{sop}/frames"

    return put


def parts(response) -> list[tuple[str, bytes]]:  # type: ignore[no-untyped-def]
    """(part Content-Type, body) of each part of a multipart/related response."""
    boundary = re.search(r"boundary=([^;\s]+)", response.headers["content-type"]).group(1)  # type: ignore[union-attr]
    out = []
    for chunk in response.content.split(f"--{boundary}".encode())[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        assert body.endswith(b"\r\n")
        ctype = re.search(rb"Content-Type: ([^\r\n]+)", head).group(1).decode()  # type: ignore[union-attr]
        out.append((ctype, body[:-2]))
    return out


def multiframe(n: int = 5, rows: int = 4, **attrs: object) -> tuple[Dataset, np.ndarray]:
    pixels = np.arange(n * rows * rows, dtype=np.uint16).reshape(n, rows, rows) * 7
    ds = build_dataset(Rows=rows, Columns=rows, NumberOfFrames=n, PixelRepresentation=0,
                       PixelData=pixels.tobytes(), **attrs)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # so that ds.compress() knows the start
    return ds, pixels


def test_native_single_frame(client: TestClient, store: Store) -> None:
    ds = build_dataset()
    url = store(ds, "1.2.840.10008.1.2.1")
    r = client.get(f"{url}/1")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith('multipart/related; type="application/octet-stream"')
    assert "content-encoding" not in r.headers
    assert parts(r) == [("application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1", ds.PixelData)]


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", ImplicitVRLittleEndian, ExplicitVRBigEndian])
def test_native_multiframe_picks_the_right_frames(client: TestClient, store: Store, syntax: str) -> None:
    ds, pixels = multiframe()
    if syntax == ExplicitVRBigEndian:  # pydicom writes the value as given
        ds.PixelData = pixels.astype(">u2").tobytes()
    url = store(ds, syntax)
    got = parts(client.get(f"{url}/1,3,5", headers={"Accept": OHIF}))
    assert [body for _, body in got] == [pixels[i].astype("<u2").tobytes() for i in (0, 2, 4)]
    served = syntax if syntax != ExplicitVRBigEndian else "1.2.840.10008.1.2.1"  # swapped to little endian
    assert {ctype for ctype, _ in got} == {f"application/octet-stream; transfer-syntax={served}"}


def test_big_endian_8_bit(client: TestClient, store: Store) -> None:
    pixels = np.arange(3 * 5 * 5, dtype=np.uint8).reshape(3, 5, 5)
    ds = build_dataset(Rows=5, Columns=5, NumberOfFrames=3, BitsAllocated=8, BitsStored=8, HighBit=7,
                       PixelRepresentation=0, PixelData=pixels.tobytes())
    url = store(ds, ExplicitVRBigEndian)
    assert [b for _, b in parts(client.get(f"{url}/2,3"))] == [pixels[1].tobytes(), pixels[2].tobytes()]


def test_packed_bits_frames_are_realigned(client: TestClient, store: Store) -> None:
    bits = (np.arange(3 * 3 * 3) % 3 == 0).astype(np.uint8).reshape(3, 9)  # 9 bits a frame: not aligned
    ds = build_dataset(Rows=3, Columns=3, NumberOfFrames=3, BitsAllocated=1, BitsStored=1, HighBit=0,
                       PixelRepresentation=0, PixelData=np.packbits(bits.ravel(), bitorder="little").tobytes())
    url = store(ds, "1.2.840.10008.1.2.1")
    got = [b for _, b in parts(client.get(f"{url}/2,3"))]
    assert got == [np.packbits(bits[i], bitorder="little").tobytes() for i in (1, 2)]


@pytest.mark.parametrize(
    ("syntax", "media", "plugin"),
    [(RLELossless, "image/dicom-rle", "pylibjpeg"), (JPEGLSLossless, "image/jls", ""),
     (JPEG2000Lossless, "image/jp2", "")],
)
def test_compressed_frames_as_stored(
    client: TestClient, store: Store, syntax: str, media: str, plugin: str
) -> None:
    ds, pixels = multiframe(n=3, rows=32)
    ds.compress(syntax, encoding_plugin=plugin)
    expected = list(generate_frames(ds.PixelData, number_of_frames=3))
    url = store(ds, syntax)
    for accept in (None, OHIF, "*/*", f'multipart/related; type="{media}"',
                   f"multipart/related; type={media}; transfer-syntax={syntax}"):
        r = client.get(f"{url}/3,1", headers={"Accept": accept} if accept else {})
        assert r.status_code == 200, (accept, r.text)
        assert r.headers["content-type"].startswith(f'multipart/related; type="{media}"')
        assert parts(r) == [(f"{media}; transfer-syntax={syntax}", expected[i]) for i in (2, 0)]
    decoded, _ = get_decoder(syntax).as_buffer(
        encapsulate([parts(r)[0][1]]), rows=32, columns=32, samples_per_pixel=1, bits_allocated=16, bits_stored=16,
        pixel_representation=0, photometric_interpretation="MONOCHROME2", number_of_frames=1,
    )
    assert bytes(decoded) == pixels[2].tobytes()


@pytest.mark.parametrize(
    "accept",
    ['multipart/related; type="application/octet-stream"',
     "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
     'multipart/related; type="image/jp2"; q=0.5, multipart/related; type="application/octet-stream"'],
)
def test_compressed_frames_decoded_for_octet_stream(client: TestClient, store: Store, accept: str) -> None:
    ds, pixels = multiframe(n=2, rows=8)
    ds.compress(JPEGLSLossless)
    r = client.get(f"{store(ds, JPEGLSLossless)}/2", headers={"Accept": accept})
    assert r.status_code == 200, r.text
    assert parts(r) == [("application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1", pixels[1].tobytes())]


def test_q_values_choose_the_stored_form(client: TestClient, store: Store) -> None:
    ds, _ = multiframe(n=2, rows=8)
    ds.compress(JPEGLSLossless)
    accept = 'multipart/related; type="application/octet-stream"; q=0.2, multipart/related; type="image/jls"'
    assert parts(client.get(f"{store(ds, JPEGLSLossless)}/1", headers={"Accept": accept}))[0][0].startswith("image/jls")


@pytest.mark.parametrize(
    "accept",
    ['multipart/related; type="image/jpx"',  # no codec makes JPEG 2000 Part 2 here
     "multipart/related; type=image/jls; transfer-syntax=1.2.840.10008.1.2.4.90",  # not a valid pair
     'multipart/related; type="application/dicom"', "application/json",
     'multipart/related; type="image/jls"; q=0'],
)
def test_unacceptable_is_406(client: TestClient, store: Store, accept: str) -> None:
    ds, _ = multiframe(n=2, rows=8)
    ds.compress(JPEGLSLossless)
    r = client.get(f"{store(ds, JPEGLSLossless)}/1", headers={"Accept": accept})
    assert r.status_code == 406 and r.json()["error"]


def test_native_instance_is_not_sent_as_an_image_type_no_codec_makes(client: TestClient, store: Store) -> None:
    r = client.get(f"{store(build_dataset(), '1.2.840.10008.1.2.1')}/1",
                   headers={"Accept": 'multipart/related; type="image/jxl"'})
    assert r.status_code == 406 and "application/octet-stream" in r.json()["error"]


@pytest.mark.parametrize(("frame_list", "named"), [("0", "'0'"), ("6", "frame 6"), ("a", "'a'"),
                                                    ("1,,2", "''"), ("1,7", "frame 7")])
def test_bad_frame_numbers_are_400(client: TestClient, store: Store, frame_list: str, named: str) -> None:
    ds, _ = multiframe()
    r = client.get(f"{store(ds, '1.2.840.10008.1.2.1')}/{frame_list}")
    assert r.status_code == 400 and named in r.json()["error"]


def test_unknown_instance_is_404(client: TestClient, store: Store) -> None:
    url = store(build_dataset(), "1.2.840.10008.1.2.1")
    assert client.get(url.rsplit("/instances/", 1)[0] + "/instances/1.2.3/frames/1").status_code == 404


def test_instance_without_pixel_data_is_404(client: TestClient, store: Store) -> None:
    ds = build_dataset()
    del ds.PixelData
    r = client.get(f"{store(ds, '1.2.840.10008.1.2.1')}/1")
    assert r.status_code == 404 and "Pixel Data" in r.json()["error"]


@pytest.mark.parametrize("layout", ["bot", "eot", "markers"])
def test_fragmented_frames_are_reassembled(client: TestClient, store: Store, layout: str) -> None:
    ds, _ = multiframe(n=3, rows=32)
    ds.compress(JPEGLSLossless)
    whole = list(generate_frames(ds.PixelData, number_of_frames=3))
    if layout == "eot":
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(whole)
    else:  # two fragments a frame, with or without a Basic Offset Table
        ds.PixelData = encapsulate(whole, fragments_per_frame=2, has_bot=layout == "bot")
    got = parts(client.get(f"{store(ds, JPEGLSLossless)}/3,2,1"))
    assert [body for _, body in got] == whole[::-1]


def test_layouts_are_cached_by_version(
    client: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another frame of the same object reuses its parsed layout; a replaced object (new ETag) is
    parsed again, never read with the old layout."""
    parsed: list[str] = []
    real = frame_service_module.read_layout

    def counting(fp):  # type: ignore[no-untyped-def]
        layout = real(fp)
        parsed.append(layout.transfer_syntax_uid)
        return layout

    monkeypatch.setattr(frame_service_module, "read_layout", counting)
    ds, pixels = multiframe(n=3, rows=4)
    url = store(ds, "1.2.840.10008.1.2.1")
    assert [b for _, b in parts(client.get(f"{url}/1"))] == [pixels[0].tobytes()]
    assert [b for _, b in parts(client.get(f"{url}/3,2"))] == [pixels[2].tobytes(), pixels[1].tobytes()]
    assert len(parsed) == 1

    # the same SOP Instance UID stored again: more frames, bigger, compressed, so other offsets
    sop = url.split("/instances/")[1].split("/")[0]
    ds2, pixels2 = multiframe(n=4, rows=32)
    ds2.compress(JPEGLSLossless)
    replaced = store(ds2, JPEGLSLossless, sop=sop)
    assert replaced == url
    expected = list(generate_frames(ds2.PixelData, number_of_frames=4))
    got = parts(client.get(f"{url}/4,1"))
    assert got == [(f"image/jls; transfer-syntax={JPEGLSLossless}", expected[i]) for i in (3, 0)]
    got = parts(client.get(f"{url}/2", headers={"Accept": 'multipart/related; type="application/octet-stream"'}))
    assert got == [("application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1", pixels2[1].tobytes())]
    assert parsed == ["1.2.840.10008.1.2.1", JPEGLSLossless]


def test_object_not_the_catalogued_size_is_parsed_afresh(embedded: Backend, store: Store) -> None:
    """A stored object replaced behind the catalog's back (another size) is not read with, nor
    cached as, the layout of the catalogued version."""
    ds, pixels = multiframe(n=2, rows=4)
    url = store(ds, "1.2.840.10008.1.2.1")
    sop = url.split("/instances/")[1].split("/")[0]
    service = FrameService(RetrieveService(embedded.store, embedded.catalog, embedded.settings.partition))
    assert list(service.frames(STUDY, SERIES, sop, [2]).frames) == [pixels[1].tobytes()]
    assert len(service.layouts) == 1
    (row,) = service.retrieve.instances(STUDY, SERIES, sop)
    ds2, pixels2 = multiframe(n=2, rows=8)
    ds2.SOPInstanceUID = sop
    embedded.store.put(row.key, to_part10(ds2, ImplicitVRLittleEndian))  # the catalog still says the old one
    service.layouts = LayoutCache()
    got = service.frames(STUDY, SERIES, sop, [2])
    assert list(got.frames) == [pixels2[1].tobytes()] and got.transfer_syntax == ImplicitVRLittleEndian
    assert len(service.layouts) == 0


def test_layout_cache_is_a_bounded_lru() -> None:
    cache = LayoutCache(maxsize=2)
    a, b, c = (("k" + x, "etag", 1, None) for x in "abc")
    layouts = [object(), object(), object()]
    cache.put(a, layouts[0])  # type: ignore[arg-type]
    cache.put(b, layouts[1])  # type: ignore[arg-type]
    assert cache.get(a) is layouts[0]  # a is now the most recent
    cache.put(c, layouts[2])  # type: ignore[arg-type]
    assert cache.get(b) is None and cache.get(a) is layouts[0] and cache.get(c) is layouts[2]
    assert len(cache) == 2


def test_native_ybr_full_422_frames_are_subsampled(client: TestClient, store: Store) -> None:
    """Native YBR_FULL_422 stores two samples a pixel (Y Y Cb Cr for each pair), not three: pydicom's
    SC_ybr_full_422_uncompressed.dcm (100×100, 20000 bytes) is served whole, not refused as short."""
    ds = dcmread(get_testdata_file("SC_ybr_full_422_uncompressed.dcm"))
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel, len(ds.PixelData)) == (100, 100, 3, 20000)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    url = store(ds, ExplicitVRLittleEndian)
    r = client.get(f"{url}/1", headers={"Accept": OHIF})
    assert r.status_code == 200, r.text
    assert parts(r) == [("application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1", ds.PixelData)]
