"""STOW-RS in any transfer syntax, through dicomweb-client against a live server: what the registry
decodes is stored and served in any syntax; what nothing here decodes is still stored (its bytes) and
served as stored; one bad part fails that part only."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pacs.backends import Backend
from pacs.codecs import SYNTAXES, encodable, transcode
from pacs.services import index_worker
from pacs.services.indexer import IndexerService
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian

from functions.dicomweb.app import create_app
from tests.unit.conftest import build_dataset, to_part10
from tests.unit.live_server import serve

STUDY = "1.2.826.0.1.3680043.8.498.99"
SERIES = f"{STUDY}.1"
#: Pydicom knows it, nothing here decodes it (MPEG-2 video).
UNDECODABLE = "1.2.840.10008.1.2.4.100"
#: Syntaxes an instance can be made in here today (HTJ2K and the others join once their encoders do).
#: Lossless ones (the images are 12-bit, which JPEG baseline cannot carry); not .91, which
#: pacs.codecs.transcode cannot make without lossy options today.
MADE = [s for s in encodable()
        if SYNTAXES[s].encapsulated and SYNTAXES[s].lossless and s != "1.2.840.10008.1.2.4.91"]


def instance(n: int, syntax: str) -> Dataset:
    pixels = np.random.default_rng(n).integers(0, 4096, (32, 32), dtype=np.uint16)
    ds = build_dataset(StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, SOPInstanceUID=f"{SERIES}.{n}",
                       InstanceNumber=n, Rows=32, Columns=32, BitsStored=12, HighBit=11, PixelRepresentation=0,
                       PixelData=pixels.tobytes())
    ds = pydicom.dcmread(BytesIO(to_part10(ds)))
    if syntax != ExplicitVRLittleEndian:
        transcode(ds, syntax)
    return ds


@pytest.fixture
def live(embedded: Backend) -> Iterator[tuple[DICOMwebClient, Backend]]:
    with serve(create_app(embedded)) as port:
        yield DICOMwebClient(f"http://127.0.0.1:{port}/dicomweb"), embedded


def test_stow_in_every_syntax_then_retrieve_in_another(live: tuple[DICOMwebClient, Backend]) -> None:
    client, backend = live
    datasets = [instance(n, syntax) for n, syntax in enumerate(MADE, start=1)]
    odd = instance(len(MADE) + 1, ExplicitVRLittleEndian)
    odd.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(28)])
    odd["PixelData"].VR = "OB"
    odd = pydicom.dcmread(BytesIO(to_part10(odd, UNDECODABLE)))
    response = client.store_instances([*datasets, odd])
    assert "00081198" not in response, response  # no failed part
    assert len(response.ReferencedSOPSequence) == len(MADE) + 1
    assert backend.queue is not None
    while index_worker.drain_once(backend.queue, IndexerService(backend.store, backend.catalog)):
        pass
    stored = {ds.SOPInstanceUID: ds for ds in client.retrieve_series(STUDY, SERIES, media_types=(("application/dicom", "*"),))}
    for ds in datasets:
        assert stored[ds.SOPInstanceUID].file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert stored[odd.SOPInstanceUID].file_meta.TransferSyntaxUID == UNDECODABLE
    assert stored[odd.SOPInstanceUID].PixelData == odd.PixelData  # the bytes, as sent
    # a plain retrieve (PS3.18 8.7.3.4): Explicit VR LE, but a syntax that may be lossy goes as stored,
    # and so does one nothing here decodes
    plain = {ds.SOPInstanceUID: ds for ds in client.retrieve_series(STUDY, SERIES)}
    for ds in datasets:
        ts = ds.file_meta.TransferSyntaxUID
        expected = ts if SYNTAXES[ts].lossy else ExplicitVRLittleEndian
        assert plain[ds.SOPInstanceUID].file_meta.TransferSyntaxUID == expected
        np.testing.assert_array_equal(plain[ds.SOPInstanceUID].pixel_array, ds.pixel_array)
    assert plain[odd.SOPInstanceUID].file_meta.TransferSyntaxUID == UNDECODABLE
