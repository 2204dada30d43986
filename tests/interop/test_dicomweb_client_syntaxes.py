"""dcmtk → `pacs up` → dicomweb-client in any transfer syntax a codec here can produce.

One `pacs up` for the module: the generated set (Explicit and Implicit VR, JPEG-LS and RLE) is sent with
storescu, then every series is retrieved by dicomweb-client in each syntax the registry encodes
(the pixels compared with what was sent; lossless: exact), frames in each media type, a plain
retrieve in Explicit VR Little Endian (PS3.18 8.7.3.4), and the derived copies are on disk after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pacs.codecs import SYNTAXES, encodable, frames_media_type
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless

from .conftest import Launcher
from .dicomgen import DataSet
from .support import PacsProcess, Qido, run_tool, wait_indexed

pytestmark = pytest.mark.interop

DICOM = "application/dicom"
#: Known gaps of pacs.codecs.transcode today: JPEG 2000 (.91) has no lossless default; Big Endian.
GAPS = {"1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.2"}
#: Lossless ones only: the generated set has 16-bit images, which JPEG baseline (8-bit) cannot carry
#: (the unit tests cover the lossy syntaxes on 8-bit images).
SYNTAXES_HERE = [s for s in encodable() if s not in GAPS and SYNTAXES[s].lossless]


@dataclass
class Loaded:
    pacs: PacsProcess
    dataset: DataSet

    def client(self) -> DICOMwebClient:
        return DICOMwebClient(url=self.pacs.dicomweb_url)


@pytest.fixture(scope="module")
def loaded(launch_module: Launcher, dataset: DataSet, dcmtk: Callable[[str], str]) -> Iterator[Loaded]:
    pacs = launch_module(workers=1)
    storescu, port = dcmtk("storescu"), str(pacs.dimse_port)
    run = run_tool([storescu, "-aec", "PACS", "+sd", "+r", "127.0.0.1", port, str(dataset.native_dir)])
    assert run.returncode == 0, run.stderr
    for ts, flag in ((JPEGLSLossless, "-xt"), (RLELossless, "-xr")):
        run = run_tool([storescu, "-aec", "PACS", flag, "127.0.0.1", port,
                        *[str(i.path) for i in dataset.by_syntax(ts)]])
        assert run.returncode == 0, run.stderr
    qido = Qido(pacs)
    wait_indexed(qido, dataset.studies)
    qido.close()
    yield Loaded(pacs, dataset)


def _series(loaded: Loaded, study: str, series: str, syntax: str | None) -> list[pydicom.Dataset]:
    client = loaded.client()
    if syntax is None:
        return client.retrieve_series(study, series)
    try:
        return client.retrieve_series(study, series, media_types=((DICOM, syntax),))
    except ValueError:  # the client does not know this syntax for application/dicom (e.g. HTJ2K)
        url = f"{loaded.pacs.dicomweb_url}/studies/{study}/series/{series}"
        r = client._http_get(url, headers={"Accept": f'multipart/related; type="{DICOM}"; transfer-syntax={syntax}'})
        return [pydicom.dcmread(pydicom.filebase.DicomBytesIO(p))
                for p in client._decode_multipart_message(r, stream=False)]


@pytest.mark.parametrize("syntax", SYNTAXES_HERE)
def test_every_series_in_each_syntax(loaded: Loaded, syntax: str) -> None:
    for series in loaded.dataset.series:
        first = series.instances[0]
        got = {ds.SOPInstanceUID: ds for ds in _series(loaded, first.study_uid, series.uid, syntax)}
        assert set(got) == {i.sop_uid for i in series.instances}
        for inst in series.instances:
            ds = got[inst.sop_uid]
            assert ds.file_meta.TransferSyntaxUID == syntax, inst.path
            if "PixelData" in ds and SYNTAXES[syntax].lossless:
                np.testing.assert_array_equal(ds.pixel_array, pydicom.dcmread(inst.path).pixel_array)
    derived = loaded.pacs.objects_dir / "default" / "derived"
    if syntax not in {i.transfer_syntax for i in loaded.dataset.instances}:
        assert list(derived.rglob(f"ts/{syntax}.dcm")), "no derived copy was kept"


def test_a_plain_series_retrieve_is_explicit_vr_little_endian(loaded: Loaded) -> None:
    for ts in (JPEGLSLossless, RLELossless):
        inst = loaded.dataset.by_syntax(ts)[0]
        got = {ds.SOPInstanceUID: ds for ds in _series(loaded, inst.study_uid, inst.series_uid, None)}
        assert got[inst.sop_uid].file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        np.testing.assert_array_equal(got[inst.sop_uid].pixel_array, pydicom.dcmread(inst.path).pixel_array)


@pytest.mark.parametrize("syntax", [s for s in SYNTAXES_HERE if SYNTAXES[s].encapsulated])
def test_frames_in_each_media_type(loaded: Loaded, syntax: str) -> None:
    media = frames_media_type(syntax)
    inst = loaded.dataset.by_syntax(ExplicitVRLittleEndian)[0]
    sent = pydicom.dcmread(inst.path)
    client = loaded.client()
    url = (f"{loaded.pacs.dicomweb_url}/studies/{inst.study_uid}/series/{inst.series_uid}"
           f"/instances/{inst.sop_uid}/frames/1")
    r = client._http_get(url, headers={"Accept": f'multipart/related; type="{media}"; transfer-syntax={syntax}'})
    assert r.headers["content-type"].startswith(f'multipart/related; type="{media}"')
    (frame,) = list(client._decode_multipart_message(r, stream=False))
    arr, _ = get_decoder(syntax).as_array(
        encapsulate([frame]), index=0, rows=sent.Rows, columns=sent.Columns,
        samples_per_pixel=sent.SamplesPerPixel, bits_allocated=sent.BitsAllocated, bits_stored=sent.BitsStored,
        pixel_representation=sent.PixelRepresentation,
        photometric_interpretation=sent.PhotometricInterpretation, number_of_frames=1, pixel_keyword="PixelData",
        planar_configuration=sent.get("PlanarConfiguration", 0))
    expected = sent.pixel_array if int(sent.get("NumberOfFrames", 1) or 1) == 1 else sent.pixel_array[0]
    np.testing.assert_array_equal(arr, expected)
