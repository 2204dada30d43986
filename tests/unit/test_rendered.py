"""WADO-RS rendered and thumbnail: the grayscale pipeline, colour, compressed frames, viewport, media types."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pacs.backends import Backend
from pacs.dicom.render import Window, apply_window
from pacs.services import index_worker
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from functions.dicomweb import rendered
from functions.dicomweb.app import create_app
from tests.unit.conftest import build_dataset, to_part10

STUDY, SERIES = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.1.1"
BASE = f"/dicomweb/studies/{STUDY}"
PNG = {"Accept": "image/png"}
Store = Callable[..., str]


@pytest.fixture
def client(embedded: Backend) -> Iterator[TestClient]:
    app = create_app(embedded)
    app.include_router(rendered.router, prefix="/dicomweb")
    with TestClient(app) as c:
        yield c


@pytest.fixture
def store(embedded: Backend) -> Store:
    """Ingest and index a dataset under a new SOP Instance UID; return its instance URL."""
    counter = iter(range(1, 1000))

    def put(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian, series: str = SERIES) -> str:
        sop = f"{series}.{next(counter)}"
        ds.SOPInstanceUID = sop
        ds.SeriesInstanceUID = series
        IngestService(embedded.store).ingest(to_part10(ds, transfer_syntax))
        assert embedded.queue is not None
        while index_worker.drain_once(embedded.queue, IndexerService(embedded.store, embedded.catalog)):
            pass
        return f"{BASE}/series/{series}/instances/{sop}"

    return put


def image(response) -> np.ndarray:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


def gray(values: np.ndarray, **attrs: object) -> Dataset:
    rows, cols = values.shape[-2:]
    frames = {"NumberOfFrames": values.shape[0]} if values.ndim == 3 else {}
    return build_dataset(Rows=rows, Columns=cols, PixelData=values.astype(np.int16).tobytes(), **frames, **attrs)


def rgb_dataset(pixels: np.ndarray, **attrs: object) -> Dataset:
    rows, cols = pixels.shape[:2]
    return build_dataset(**{"Rows": rows, "Columns": cols, "SamplesPerPixel": 3, "PhotometricInterpretation": "RGB",
                            "PlanarConfiguration": 0, "BitsAllocated": 8, "BitsStored": 8, "HighBit": 7,
                            "PixelRepresentation": 0, "PixelData": pixels.astype(np.uint8).tobytes(), **attrs})


def without_pixels(**attrs: object) -> Dataset:
    """An instance with no Pixel Data (and, unless `keep_rows`, no image attributes: like an SR)."""
    keep_rows = attrs.pop("keep_rows", False)
    ds = build_dataset(**attrs)
    del ds.PixelData
    if not keep_rows:
        for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                        "SamplesPerPixel", "PhotometricInterpretation"):
            delattr(ds, keyword)
    return ds


def linear(x: float, c: float, w: float) -> int:
    """PS3.3 C.11.2.1.2.1, written out independently of the implementation."""
    if x <= c - 0.5 - (w - 1) / 2:
        return 0
    if x > c - 0.5 + (w - 1) / 2:
        return 255
    return round(((x - (c - 0.5)) / (w - 1) + 0.5) * 255)


CT = np.array([[0, 1000, 1064, 1100], [1200, 1500, 2000, 3000]])  # stored; HU = stored - 1024
CT_ATTRS = {"RescaleSlope": 1, "RescaleIntercept": -1024, "WindowCenter": [40, 300], "WindowWidth": [400, 1500]}


def test_ct_uses_rescale_and_its_own_first_window(client: TestClient, store: Store) -> None:
    r = client.get(f"{store(gray(CT, **CT_ATTRS))}/rendered", headers=PNG)
    assert r.headers["content-type"] == "image/png"
    assert int(r.headers["content-length"]) == len(r.content)
    assert r.headers["cache-control"] == "private, max-age=3600"
    expected = [[linear(v - 1024, 40, 400) for v in row] for row in CT]
    assert image(r).tolist() == expected
    assert expected[0][2] == 128 and expected[0][0] == 0 and expected[1][3] == 255


def test_window_parameter_overrides_the_instance_window(client: TestClient, store: Store) -> None:
    url = store(gray(CT, **CT_ATTRS))
    got = image(client.get(f"{url}/rendered?window=100,1000", headers=PNG))
    assert got.tolist() == [[linear(v - 1024, 100, 1000) for v in row] for row in CT]
    exact = image(client.get(f"{url}/rendered?window=0,200,linear-exact", headers=PNG))
    assert exact[0, 2] == round((40 / 200 + 0.5) * 255)
    sigmoid = image(client.get(f"{url}/rendered?window=40,4000,SIGMOID", headers=PNG))
    assert sigmoid[0, 2] == 128 and 0 < sigmoid[0, 0] < sigmoid[1, 3] < 255


def test_without_a_window_the_frame_min_max_is_used(client: TestClient, store: Store) -> None:
    got = image(client.get(f"{store(gray(CT))}/rendered", headers=PNG))
    assert got.tolist() == [[round(v / 3000 * 255) for v in row] for row in CT]


def test_voi_lut_sequence(client: TestClient, store: Store) -> None:
    ds = gray(np.array([[0, 1, 2, 3]]))
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 8]
    lut.LUTData = np.array([0, 10, 200, 255], np.uint16).tobytes()
    ds.VOILUTSequence = [lut]
    assert image(client.get(f"{store(ds)}/rendered", headers=PNG)).tolist() == [[0, 10, 200, 255]]


def test_monochrome1_is_inverted(client: TestClient, store: Store) -> None:
    mono2 = image(client.get(f"{store(gray(CT, **CT_ATTRS))}/rendered", headers=PNG))
    mono1 = image(client.get(f"{store(gray(CT, PhotometricInterpretation='MONOCHROME1', **CT_ATTRS))}/rendered",
                             headers=PNG))
    assert (mono1.astype(int) == 255 - mono2.astype(int)).all()


def test_window_math() -> None:
    x = np.array([-1000.0, 39.5, 40.0, 1000.0])
    assert apply_window(x, Window(40, 1)).tolist() == [0, 0, 1, 1]
    assert apply_window(x, Window(40, 400, "sigmoid"))[2] == 0.5


def test_rgb_png_equals_the_source(client: TestClient, store: Store) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (6, 10, 3))
    got = image(client.get(f"{store(rgb_dataset(pixels))}/rendered", headers=PNG))
    assert got.shape == (6, 10, 3) and (got == pixels).all()


def test_rgb_planar_configuration_1(client: TestClient, store: Store) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    ds = rgb_dataset(pixels, PlanarConfiguration=1)
    ds.PixelData = pixels.transpose(2, 0, 1).tobytes()
    assert (image(client.get(f"{store(ds)}/rendered", headers=PNG)) == pixels).all()


@pytest.mark.parametrize(("photometric", "subsampling"), [("YBR_FULL", 0), ("YBR_FULL_422", 2)])
def test_ybr_jpeg_baseline_renders_as_rgb(client: TestClient, store: Store, photometric: str, subsampling: int) -> None:
    yy, xx = np.mgrid[0:16, 0:16]
    pixels = np.stack([xx * 16, yy * 16, np.full_like(xx, 128)], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=100, subsampling=subsampling)
    ds = rgb_dataset(pixels, PhotometricInterpretation=photometric)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    got = image(client.get(f"{store(ds, JPEGBaseline8Bit)}/rendered", headers=PNG))
    reference = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert got.shape == (16, 16, 3)
    assert np.abs(got.astype(int) - reference.astype(int)).max() <= 3


def test_palette_color(client: TestClient, store: Store) -> None:
    ds = build_dataset(Rows=1, Columns=3, BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
                       PhotometricInterpretation="PALETTE COLOR", PixelData=bytes([0, 1, 2, 0]))
    for colour, data in (("Red", [65535, 0, 0]), ("Green", [0, 65535, 0]), ("Blue", [0, 0, 65535])):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [3, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", np.array(data, np.uint16).tobytes())
    got = image(client.get(f"{store(ds)}/rendered", headers=PNG))
    assert got.tolist() == [[[255, 0, 0], [0, 255, 0], [0, 0, 255]]]


def multiframe(n: int = 4, rows: int = 16) -> tuple[Dataset, np.ndarray]:
    pixels = (np.arange(n * rows * rows, dtype=np.uint16).reshape(n, rows, rows) * 3) % 4096
    pixels[:, 0, 0] = 0
    pixels[:, -1, -1] = 4095  # the same min/max in every frame
    ds = build_dataset(Rows=rows, Columns=rows, NumberOfFrames=n, PixelRepresentation=0, BitsStored=12,
                       HighBit=11, PixelData=pixels.tobytes())
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds, pixels


def test_multiframe_frame_n(client: TestClient, store: Store) -> None:
    ds, pixels = multiframe()
    url = store(ds)
    got = image(client.get(f"{url}/frames/3/rendered", headers=PNG))
    assert got.tolist() == np.rint(pixels[2] / 4095 * 255).astype(int).tolist()
    assert (image(client.get(f"{url}/rendered", headers=PNG)) == np.rint(pixels[0] / 4095 * 255)).all()


@pytest.mark.parametrize(("syntax", "plugin"), [(RLELossless, "pylibjpeg"), (JPEGLSLossless, "")])
def test_compressed_renders_like_uncompressed(client: TestClient, store: Store, syntax: str, plugin: str) -> None:
    ds, _ = multiframe()
    plain = client.get(f"{store(ds)}/frames/2/rendered", headers=PNG)
    ds.compress(syntax, encoding_plugin=plugin)
    packed = client.get(f"{store(ds, syntax)}/frames/2/rendered", headers=PNG)
    assert packed.status_code == 200 and (image(packed) == image(plain)).all()


def test_big_endian(client: TestClient, store: Store) -> None:
    ds = gray(CT, **CT_ATTRS)
    ds.PixelData = CT.astype(">i2").tobytes()
    got = image(client.get(f"{store(ds, ExplicitVRBigEndian)}/rendered", headers=PNG))
    assert got.tolist() == [[linear(v - 1024, 40, 400) for v in row] for row in CT]


def test_thumbnail_and_viewport_keep_the_aspect(client: TestClient, store: Store) -> None:
    url = store(gray(np.arange(64 * 32).reshape(32, 64)))
    assert image(client.get(f"{url}/thumbnail", headers=PNG)).shape == (64, 128)
    assert image(client.get(f"{url}/frames/1/thumbnail", headers=PNG)).shape == (64, 128)
    assert image(client.get(f"{url}/thumbnail?viewport=16,16", headers=PNG)).shape == (8, 16)
    assert image(client.get(f"{url}/rendered", headers=PNG)).shape == (32, 64)
    assert image(client.get(f"{url}/rendered?viewport=50,100", headers=PNG)).shape == (25, 50)
    assert image(client.get(f"{url}/rendered?viewport=200,40", headers=PNG)).shape == (40, 80)
    region = image(client.get(f"{url}/rendered?viewport=16,16,0,0,16,16", headers=PNG))
    assert region.shape == (16, 16)
    flipped = image(client.get(f"{url}/rendered?viewport=16,16,0,0,-16,16", headers=PNG))
    assert (flipped == region[:, ::-1]).all()


def test_jpeg_by_default_png_by_accept(client: TestClient, store: Store) -> None:
    url = store(gray(CT, **CT_ATTRS))
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "image/*"}, {"Accept": "image/jpeg"},
                    {"Accept": "image/png;q=0.5, image/jpeg"}, {"Accept": "image/gif, image/*;q=0.1"}):
        r = client.get(f"{url}/rendered", headers=headers)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", headers
        assert r.content[:2] == b"\xff\xd8"
    for headers in ({"Accept": "image/jpeg;q=0.5, image/png"}, {"Accept": "image/png"}):
        r = client.get(f"{url}/rendered", headers=headers)
        assert r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    assert client.get(f"{url}/rendered?accept=image/png").headers["content-type"] == "image/png"


def test_quality_changes_the_jpeg_size(client: TestClient, store: Store) -> None:
    pixels = np.random.default_rng(3).integers(0, 4000, (64, 64))
    url = store(gray(pixels))
    low = client.get(f"{url}/rendered?quality=5")
    high = client.get(f"{url}/rendered?quality=100")
    default = client.get(f"{url}/rendered")
    assert len(low.content) < len(default.content) < len(high.content)


def test_series_and_study_render_the_middle_instance(client: TestClient, store: Store) -> None:
    other = "1.2.826.0.1.3680043.8.498.1.2"
    store(gray(np.full((4, 4), 7), InstanceNumber=1, SeriesNumber=2), series=other)
    store(without_pixels(SeriesNumber=0), series="1.2.826.0.1.3680043.8.498.1.3")  # first, but no images
    urls = {}
    for number in (3, 1, 2):  # stored out of order
        values = np.arange(16).reshape(4, 4) * number
        values[0, 0] = 100
        urls[number] = store(gray(values, InstanceNumber=number, SeriesNumber=1))
    store(without_pixels(InstanceNumber=4, SeriesNumber=1))  # no pixel data: not a candidate
    middle = image(client.get(f"{urls[2]}/rendered", headers=PNG))
    series = image(client.get(f"{BASE}/series/{SERIES}/rendered", headers=PNG))
    study = image(client.get(f"{BASE}/rendered", headers=PNG))
    assert (series == middle).all() and (study == middle).all()
    assert not (middle == image(client.get(f"{urls[1]}/rendered", headers=PNG))).all()
    assert image(client.get(f"{BASE}/thumbnail", headers=PNG)).shape == (128, 128)
    assert image(client.get(f"{BASE}/series/{other}/thumbnail", headers=PNG)).shape == (128, 128)


def test_enhanced_functional_groups(client: TestClient, store: Store) -> None:
    ds = gray(np.array([CT, CT]))
    transform, voi = Dataset(), Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = 1, -1024
    voi.WindowCenter, voi.WindowWidth = 40, 400
    shared, frame2 = Dataset(), Dataset()
    shared.PixelValueTransformationSequence = [transform]
    frame2.FrameVOILUTSequence = [voi]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [Dataset(), frame2]
    got = image(client.get(f"{store(ds)}/frames/2/rendered", headers=PNG))
    assert got.tolist() == [[linear(v - 1024, 40, 400) for v in row] for row in CT]


@pytest.mark.parametrize(
    ("query", "named"),
    [("window=40", "window"), ("window=a,400", "window"), ("window=40,0", "window"),
     ("window=40,400,cubic", "window"), ("window=nan,400", "window"), ("viewport=0,10", "viewport"),
     ("viewport=10", "viewport"), ("viewport=10,x", "viewport"), ("viewport=10,10,100,0,,", "viewport"),
     ("viewport=99999,10", "viewport"), ("quality=0", "quality"), ("quality=101", "quality"),
     ("quality=high", "quality")],
)
def test_bad_parameters_are_400(client: TestClient, store: Store, query: str, named: str) -> None:
    r = client.get(f"{store(gray(CT))}/rendered?{query}")
    assert r.status_code == 400 and r.json()["error"].startswith(named), r.text


def test_errors(client: TestClient, store: Store) -> None:
    ds, _ = multiframe()
    url = store(ds)
    for path, status in (("frames/5/rendered", 400), ("frames/0/rendered", 400), ("frames/1,2/rendered", 400),
                         ("frames/1,2/thumbnail", 400)):
        r = client.get(f"{url}/{path}")
        assert r.status_code == status and r.json()["error"], path
    assert "one frame number" in client.get(f"{url}/frames/1,2/rendered").json()["error"]
    assert client.get(f"{url}/rendered", headers={"Accept": "image/gif"}).status_code == 406
    assert client.get(f"{url}/rendered", headers={"Accept": "application/dicom"}).status_code == 406
    assert client.get(f"{url}/rendered", headers={"Accept": "image/png;q=0"}).status_code == 406
    missing = url.rsplit("/instances/", 1)[0] + "/instances/1.2.3/rendered"
    assert client.get(missing).status_code == 404
    assert client.get(f"{BASE}/series/1.2.3/rendered").status_code == 404
    assert client.get("/dicomweb/studies/1.2.3/thumbnail").status_code == 404
    assert client.get("/dicomweb/studies/1.2_x/rendered").status_code == 400
    no_pixels = store(without_pixels(keep_rows=True))
    r = client.get(f"{no_pixels}/rendered")
    assert r.status_code == 404 and "Pixel Data" in r.json()["error"]
