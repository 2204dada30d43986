"""Transcoding stored instances to native syntaxes (pacs.dicom.transcode), on pydicom's own test files."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from pacs.dicom.transcode import TranscodeError, can_decode, transcode
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGLSLossless,
)


def _testfile(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.fail(f"pydicom test file {name} is not installed (it ships with pydicom)")
    return str(path)


def _roundtrip(ds: Dataset) -> Dataset:
    """Write as the file meta says and read back: what a peer would receive."""
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return dcmread(BytesIO(buf.getvalue()))


#: (compressed file, its native twin with the same pixels, or None: the pixels pydicom decodes from it).
LOSSLESS = [
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
    ("MR_small_RLE.dcm", "MR_small.dcm"),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
    ("SC_rgb_rle.dcm", None),
    ("SC_rgb_rle_16bit_2frame.dcm", None),  # RGB, two frames
    ("SC_rgb_jls_lossy_line.dcm", None),  # JPEG-LS near-lossless, colour
]


@pytest.mark.parametrize("target", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("compressed, native", LOSSLESS)
def test_decode_gives_the_same_pixels(compressed: str, native: str | None, target: str) -> None:
    ds = dcmread(_testfile(compressed))
    uid, stored_uid = ds.SOPInstanceUID, ds.file_meta.TransferSyntaxUID
    assert stored_uid.is_compressed
    out = _roundtrip(transcode(ds, target))
    assert out.file_meta.TransferSyntaxUID == target
    assert out.SOPInstanceUID == uid  # the same instance, re-encoded
    expected = dcmread(_testfile(compressed)).get("LossyImageCompression")
    if "lossy" in compressed:  # JPEG-LS NEAR > 0 in the stream itself: recorded as lossy (PS3.3 C.7.6.1.1.5)
        expected = "01"
    assert out.get("LossyImageCompression") == expected
    reference = dcmread(_testfile(native or compressed))
    np.testing.assert_array_equal(out.pixel_array, reference.pixel_array)
    assert out.PhotometricInterpretation == reference.PhotometricInterpretation
    assert out.get("PatientName") == reference.get("PatientName")


def test_ybr_jpeg_becomes_rgb_interleaved_and_stays_marked_lossy() -> None:
    ds = dcmread(_testfile("SC_rgb_jpeg_dcmtk.dcm"))
    assert ds.PhotometricInterpretation.startswith("YBR")
    expected = ds.pixel_array  # pydicom converts YBR to RGB by default
    out = _roundtrip(transcode(ds, ExplicitVRLittleEndian))
    assert out.PhotometricInterpretation == "RGB"
    assert out.PlanarConfiguration == 0
    assert out.LossyImageCompression == "01"
    assert out.LossyImageCompressionMethod == "ISO_10918_1"
    np.testing.assert_array_equal(out.pixel_array, expected)


def test_lossy_flags_already_present_are_kept() -> None:
    ds = dcmread(_testfile("SC_rgb_jpeg_dcmtk.dcm"))
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = "10"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    out = _roundtrip(transcode(ds, ImplicitVRLittleEndian))
    assert (out.LossyImageCompression, out.LossyImageCompressionRatio) == ("01", 10)


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small.dcm"])
def test_native_objects_are_reencoded(name: str) -> None:
    ds = dcmread(_testfile(name))
    reference = ds.pixel_array.copy()
    for target in (ImplicitVRLittleEndian, ExplicitVRLittleEndian):
        out = _roundtrip(transcode(dcmread(_testfile(name)), target))
        assert out.file_meta.TransferSyntaxUID == target
        np.testing.assert_array_equal(out.pixel_array, reference)


def test_deflated_object_is_inflated() -> None:
    ds = dcmread(_testfile("image_dfl.dcm"))
    assert ds.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    reference = ds.pixel_array.copy()
    out = _roundtrip(transcode(ds, ExplicitVRLittleEndian))
    np.testing.assert_array_equal(out.pixel_array, reference)


def test_refusals_name_the_reason() -> None:
    ds = dcmread(_testfile("MR_small_jpeg_ls_lossless.dcm"))
    with pytest.raises(TranscodeError, match="only to"):
        transcode(ds, ExplicitVRBigEndian)
    ds.PixelData = b"\xff\xd8 not JPEG-LS at all \xff\xd9" * 4
    with pytest.raises(TranscodeError, match="cannot decode"):
        transcode(ds, ExplicitVRLittleEndian)
    del ds.PixelData
    with pytest.raises(TranscodeError, match="no pixel data"):
        transcode(ds, ExplicitVRLittleEndian)


def test_can_decode() -> None:
    assert can_decode(ExplicitVRLittleEndian)
    assert can_decode(JPEGLSLossless)
    assert can_decode(JPEGLosslessSV1)  # imagecodecs (BSD-3) through pacs.codecs.plugins
