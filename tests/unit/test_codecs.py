"""pacs.codecs: the plugins it registers, what each encoding writes (stream headers, Photometric
Interpretation, Planar Configuration, lossy attributes, offset tables, UIDs), and pydicom's own test files."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pydicom
import pytest
from pacs.codecs import (
    EncodeOptions,
    TranscodeError,
    can_decode,
    can_encode,
    describe,
    negotiate,
    samples,
    transcode,
)
from pacs.codecs.proof import part10, pixels, psnr
from pacs.codecs.streams import is_lossy_stream, j2k_header, jpeg_header
from pydicom import dcmread
from pydicom import uid as u
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames, parse_basic_offsets
from pydicom.pixels import get_decoder, get_encoder

EXPLICIT = u.ExplicitVRLittleEndian


def _testfile(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.fail(f"pydicom test file {name} is not installed (it ships with pydicom)")
    return dcmread(str(path))


def _frames(ds: Dataset) -> list[bytes]:
    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1)))


def _encoded(kind: str, syntax: str, options: EncodeOptions | None = None, **kwargs: object) -> Dataset:
    return part10(transcode(samples.dataset(kind), syntax, options, **kwargs))  # type: ignore[arg-type]


# -- the registry and its plugins ----------------------------------------------------------------------------


def test_pydicom_is_the_version_whose_private_encoder_table_is_used() -> None:
    # plugins.register() adds Encoder objects to pydicom.pixels.encoders.base._PIXEL_DATA_ENCODERS
    assert pydicom.__version__ == "3.0.2"
    for syntax in (u.JPEGBaseline8Bit, u.JPEGExtended12Bit, u.JPEGLossless, u.JPEGLosslessSV1, u.HTJ2KLossless,
                   u.HTJ2KLosslessRPCL, u.HTJ2K):
        assert "imagecodecs" in get_encoder(syntax).available_plugins
    for syntax in (u.JPEGLossless, u.JPEGLosslessSV1, u.JPEGExtended12Bit, u.HTJ2KLossless):
        assert "imagecodecs" in get_decoder(syntax).available_plugins


def test_describe_names_the_fastest_plugins() -> None:
    rows = {c.uid: c for c in describe()}
    assert rows[u.RLELossless].encoder == "imagecodecs"  # PackBits in C: 10x pylibjpeg-rle, 100x pydicom
    # CharLS through imagecodecs releases the GIL; pyjpegls (the fallback) holds it
    assert rows[u.JPEGLSLossless].decoder == rows[u.JPEGLSLossless].encoder == "imagecodecs"
    assert "pyjpegls" in get_encoder(u.JPEGLSLossless).available_plugins
    assert rows[u.HTJ2KLossless].decoder == rows[u.HTJ2KLossless].encoder == "imagecodecs"
    assert rows[u.JPEGLosslessSV1].decoder == "imagecodecs"
    assert rows[u.ExplicitVRLittleEndian].decoder == "native"
    assert all(c.decoder and c.encoder for c in rows.values())
    assert rows[u.JPEGBaseline8Bit].lossy and not rows[u.JPEGBaseline8Bit].lossless


NO_IMAGECODECS = """
import sys
sys.modules["imagecodecs"] = None  # as in a function packaged without it
import numpy as np
from pydicom import uid as u
from pacs.codecs import can_decode, can_encode, describe, samples, transcode
from pacs.codecs.proof import part10, pixels
assert not can_decode(u.JPEGLosslessSV1) and not can_encode(u.HTJ2KLossless) and not can_encode(u.JPEGBaseline8Bit)
assert can_decode(u.HTJ2KLossless) and can_decode(u.JPEGBaseline8Bit)  # pylibjpeg-openjpeg, pillow
rows = {c.uid: c for c in describe()}
assert rows[u.JPEGBaseline8Bit].decoder == "pillow" and rows[u.JPEGLosslessSV1].decoder is None
for ts in (u.RLELossless, u.JPEG2000Lossless, u.JPEGLSLossless):
    ds = samples.dataset("rgb8")
    reference = pixels(ds, raw=True)
    back = part10(transcode(part10(transcode(ds, ts)), u.ExplicitVRLittleEndian))
    assert np.array_equal(pixels(back, raw=True), reference), ts
print("ok")
"""


def test_without_imagecodecs_pydicoms_own_plugins_remain() -> None:
    result = subprocess.run([sys.executable, "-c", NO_IMAGECODECS], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_every_known_syntax_is_produced_and_negotiation_prefers_lossless() -> None:
    assert can_decode(u.JPEGLosslessSV1) and can_encode(u.HTJ2KLosslessRPCL)
    assert negotiate(u.JPEGLSLossless, [u.JPEGBaseline8Bit, u.RLELossless]) == u.RLELossless
    assert negotiate(u.ExplicitVRLittleEndian, [u.JPEGBaseline8Bit]) is None
    assert negotiate(u.ExplicitVRLittleEndian, [u.JPEGBaseline8Bit], lossy=True) == u.JPEGBaseline8Bit


# -- what the encoders write ---------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", [u.JPEGLosslessSV1, u.JPEGLossless])
@pytest.mark.parametrize("kind", ["mono12", "mono16s", "rgb8"])
def test_jpeg_lossless_is_sof3_with_predictor_1(syntax: str, kind: str) -> None:
    ds = _encoded(kind, syntax)
    header = jpeg_header(_frames(ds)[0])
    assert (header.process, header.ss) == (3, 1)
    assert header.precision == samples.KINDS[kind].bits_stored
    assert ds.PhotometricInterpretation == samples.KINDS[kind].photometric


def test_htj2k_rpcl_has_rpcl_progression_and_tlm() -> None:
    header = j2k_header(_frames(_encoded("mono12", u.HTJ2KLosslessRPCL))[0])
    assert header.progression == "RPCL" and "TLM" in header.markers and header.reversible
    assert "CAP" in header.markers  # Part 15 capabilities: an HT codestream


@pytest.mark.parametrize("syntax, options, photometric, mct, reversible", [
    (u.JPEG2000Lossless, None, "YBR_RCT", True, True),
    (u.HTJ2KLossless, None, "YBR_RCT", True, True),
    (u.HTJ2KLosslessRPCL, None, "YBR_RCT", True, True),
    (u.JPEG2000, EncodeOptions(ratio=10), "YBR_ICT", True, False),
    (u.HTJ2K, EncodeOptions(ratio=10), "YBR_ICT", True, False),
    (u.JPEG2000, None, "RGB", False, True),  # .91 written reversibly when nothing lossy is asked
    (u.HTJ2K, None, "RGB", False, True),
])
def test_jpeg2000_colour_photometric_follows_the_transform(
    syntax: str, options: EncodeOptions | None, photometric: str, mct: bool, reversible: bool
) -> None:
    ds = _encoded("rgb8planar", syntax, options)
    header = j2k_header(_frames(ds)[0])
    assert (ds.PhotometricInterpretation, header.mct, header.reversible) == (photometric, mct, reversible)
    assert ds.PlanarConfiguration == 0
    assert is_lossy_stream(syntax, _frames(ds)[0]) == (not reversible)


def test_ybr_full_stays_ybr_full_without_transform_where_lossless() -> None:
    for syntax in (u.JPEG2000Lossless, u.HTJ2KLossless, u.RLELossless, u.JPEGLSLossless, u.JPEGLosslessSV1):
        ds = _encoded("ybr8", syntax)
        assert ds.PhotometricInterpretation == "YBR_FULL", syntax
        if syntax in (u.JPEG2000Lossless, u.HTJ2KLossless):
            assert not j2k_header(_frames(ds)[0]).mct


def test_jpeg_baseline_colour_is_ybr_full_422_subsampled() -> None:
    ds = _encoded("rgb8", u.JPEGBaseline8Bit)
    assert (ds.PhotometricInterpretation, ds.PlanarConfiguration) == ("YBR_FULL_422", 0)
    frame = _frames(ds)[0]
    assert jpeg_header(frame).process == 0
    sof = frame.index(b"\xff\xc0")
    assert frame[sof + 11] == 0x21  # Y sampled 2x1: chroma halved horizontally


def test_rle_colour_is_planar_and_jpeg_ls_is_not() -> None:
    assert _encoded("rgb8", u.RLELossless).PlanarConfiguration == 1
    assert _encoded("rgb8planar", u.JPEGLSLossless).PlanarConfiguration == 0


def test_offset_tables() -> None:
    ds = _encoded("mono12", u.HTJ2KLossless)
    offsets = parse_basic_offsets(ds.PixelData)
    assert len(offsets) == 2 and offsets[0] == 0 and "ExtendedOffsetTable" not in ds
    ext = _encoded("mono12", u.HTJ2KLossless, EncodeOptions(extended_offsets=True))
    assert parse_basic_offsets(ext.PixelData) == []
    lengths = np.frombuffer(ext.ExtendedOffsetTableLengths, "<u8")
    assert list(lengths) == [len(f) for f in _frames(ds)]
    np.testing.assert_array_equal(pixels(part10(transcode(ext, EXPLICIT)), raw=True),
                                  samples.pixels(samples.KINDS["mono12"]))
    back = part10(transcode(ext, EXPLICIT))
    assert "ExtendedOffsetTable" not in back and not back["PixelData"].is_undefined_length


def test_one_bit_pixels_go_native_only() -> None:
    ds = _testfile("liver_1frame.dcm")  # Bits Allocated 1
    reference = ds.pixel_array.copy()
    for target in (u.ImplicitVRLittleEndian, u.ExplicitVRBigEndian, u.DeflatedExplicitVRLittleEndian, EXPLICIT):
        ds = part10(transcode(ds, target))
        np.testing.assert_array_equal(ds.pixel_array, reference)


def test_big_endian_out_and_back() -> None:
    ds = _testfile("MR_small.dcm")
    reference = ds.pixel_array.copy()
    be = part10(transcode(ds, u.ExplicitVRBigEndian))
    np.testing.assert_array_equal(be.pixel_array, reference)
    # decoded frames written big-endian straight from a compressed source
    be16 = part10(transcode(_encoded("mono16s", u.JPEGLSLossless),
                            u.ExplicitVRBigEndian))
    np.testing.assert_array_equal(be16.pixel_array, samples.pixels(samples.KINDS["mono16s"]))
    np.testing.assert_array_equal(part10(transcode(be, u.JPEGLSLossless)).pixel_array, reference)


# -- lossy steps and UIDs ------------------------------------------------------------------------------------


def test_lossless_keeps_the_uid_and_writes_no_lossy_flag() -> None:
    ds = samples.dataset("mono16s")
    uid = ds.SOPInstanceUID
    out = part10(transcode(ds, u.HTJ2KLossless))
    assert out.SOPInstanceUID == uid == out.file_meta.MediaStorageSOPInstanceUID
    assert "LossyImageCompression" not in out and "SourceImageSequence" not in out


def test_lossy_steps_are_appended_and_make_derived_instances() -> None:
    ds = samples.dataset("mono8")
    original = ds.SOPInstanceUID
    first = part10(transcode(ds, u.JPEG2000, EncodeOptions(ratio=8)))
    assert first.LossyImageCompression == "01"
    assert first.LossyImageCompressionMethod == "ISO_15444_1"
    assert 4 < float(first.LossyImageCompressionRatio) < 16
    assert first.SOPInstanceUID != original and first.ImageType[0] == "DERIVED"
    assert first.SourceImageSequence[0].ReferencedSOPInstanceUID == original
    first_uid = first.SOPInstanceUID
    second = part10(transcode(first, u.JPEGBaseline8Bit, EncodeOptions(quality=80)))
    assert list(second.LossyImageCompressionMethod) == ["ISO_15444_1", "ISO_10918_1"]
    assert len(second.LossyImageCompressionRatio) == 2
    # a lossy stream that recorded nothing: its own step first, with its ratio, then ours
    jpeg = _testfile("JPEG-lossy.dcm")
    for keyword in ("LossyImageCompression", "LossyImageCompressionMethod", "LossyImageCompressionRatio"):
        if keyword in jpeg:
            delattr(jpeg, keyword)
    again = transcode(jpeg, u.JPEG2000, EncodeOptions(ratio=10))
    assert list(again.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_15444_1"]
    assert len(again.LossyImageCompressionRatio) == 2
    assert [i.ReferencedSOPInstanceUID for i in second.SourceImageSequence] == [original, first_uid]
    # decoding keeps everything (the same pixels)
    native = part10(transcode(second, EXPLICIT))
    assert native.SOPInstanceUID == second.SOPInstanceUID
    assert list(native.LossyImageCompressionMethod) == ["ISO_15444_1", "ISO_10918_1"]


def test_new_uid_is_the_callers_choice() -> None:
    ds = samples.dataset("mono12")
    uid = ds.SOPInstanceUID
    kept = transcode(ds, u.HTJ2K, EncodeOptions(ratio=10), new_uid=False)  # WADO-RS in a lossy syntax
    assert kept.SOPInstanceUID == uid and kept.LossyImageCompression == "01"
    forced = transcode(samples.dataset("mono12"), u.RLELossless, new_uid=True)
    assert forced.SOPInstanceUID != uid
    for target in (u.ImplicitVRLittleEndian, EXPLICIT):  # native to native, and the same syntax
        ds = samples.dataset("mono8")
        old = ds.SOPInstanceUID
        assert transcode(ds, target, new_uid=True).SOPInstanceUID != old


@pytest.mark.parametrize("syntax, options, method", [
    (u.JPEGLSNearLossless, EncodeOptions(near_lossless=2), "ISO_14495_1"),
    (u.HTJ2K, EncodeOptions(qstep=0.002), "ISO_15444_15"),
    (u.JPEGExtended12Bit, None, "ISO_10918_1"),
])
def test_each_lossy_method(syntax: str, options: EncodeOptions | None, method: str) -> None:
    ds = _encoded("mono12", syntax, options)
    assert (ds.LossyImageCompression, ds.LossyImageCompressionMethod) == ("01", method)
    assert is_lossy_stream(syntax, _frames(ds)[0])


def test_htj2k_ratio_is_reached_approximately() -> None:
    ds = samples.dataset("mono12", frames=1, rows=128, columns=128)
    raw = len(ds.PixelData)
    out = transcode(ds, u.HTJ2K, EncodeOptions(ratio=12))
    achieved = raw / sum(len(f) for f in _frames(out))
    assert 6 < achieved < 24
    assert float(out.LossyImageCompressionRatio) == pytest.approx(achieved, rel=0.05)


def test_decoding_a_lossy_stream_marks_it() -> None:
    ds = _testfile("JPEG-lossy.dcm")  # 12-bit JPEG Extended
    for keyword in ("LossyImageCompression", "LossyImageCompressionMethod", "LossyImageCompressionRatio"):
        if keyword in ds:
            delattr(ds, keyword)
    out = transcode(ds, EXPLICIT)
    assert (out.LossyImageCompression, out.LossyImageCompressionMethod) == ("01", "ISO_10918_1")
    assert float(out.LossyImageCompressionRatio) > 1  # the decoded samples over the stream's fragments
    assert out.SOPInstanceUID == _testfile("JPEG-lossy.dcm").SOPInstanceUID


# -- refusals ------------------------------------------------------------------------------------------------


def test_refusals_say_why() -> None:
    with pytest.raises(TranscodeError, match="unknown transfer syntax"):
        transcode(samples.dataset("mono8"), "1.2.3.4")
    with pytest.raises(TranscodeError, match="JPEG Baseline"):
        transcode(samples.dataset("palette8"), u.JPEGBaseline8Bit)
    with pytest.raises(TranscodeError, match="cannot encode JPEG 2000"):  # openjpeg: 6 resolutions, 32 pixels
        transcode(samples.dataset("mono8", rows=16, columns=16), u.JPEG2000, EncodeOptions(ratio=10))
    with pytest.raises(TranscodeError, match="Bits Allocated 1"):
        transcode(_testfile("liver_1frame.dcm"), u.HTJ2KLossless)
    no_pixels = samples.dataset("mono8")
    del no_pixels.PixelData
    with pytest.raises(TranscodeError, match="needs pixel data"):
        transcode(no_pixels, u.RLELossless)
    assert transcode(no_pixels, u.ImplicitVRLittleEndian).file_meta.TransferSyntaxUID == u.ImplicitVRLittleEndian
    broken = _encoded("mono8", u.JPEGLosslessSV1)
    broken.PixelData = encapsulate([b"\xff\xd8\xff\xc3 not JPEG \xff\xd9"] * 2)
    with pytest.raises(TranscodeError, match="cannot decode"):
        transcode(broken, EXPLICIT)


# -- pydicom's test files ------------------------------------------------------------------------------------

#: (file, its syntax): decoded here, then re-encoded in every lossless syntax and back, bit for bit.
FILES = [
    ("SC_rgb_jpeg_gdcm.dcm", u.JPEGLosslessSV1),
    ("JPGExtended.dcm", u.JPEGExtended12Bit),  # 12-bit: pillow cannot, libjpeg-turbo 3 can
    ("examples_ybr_color.dcm", u.JPEGBaseline8Bit),  # YBR_FULL_422, 30 frames
    ("SC_rgb_dcmtk_+eb+cy+n1.dcm", u.JPEGBaseline8Bit),
    ("MR_small_jpeg_ls_lossless.dcm", u.JPEGLSLossless),
    ("JPEGLSNearLossless_16.dcm", u.JPEGLSNearLossless),
    ("GDCMJ2K_TextGBR.dcm", u.JPEG2000Lossless),  # YBR_RCT
    ("693_J2KI.dcm", u.JPEG2000),
    ("SC_rgb_rle_16bit_2frame.dcm", u.RLELossless),
    ("MR_small_bigendian.dcm", u.ExplicitVRBigEndian),
    ("image_dfl.dcm", u.DeflatedExplicitVRLittleEndian),
    ("examples_palette.dcm", EXPLICIT),
    ("SC_rgb_small_odd.dcm", EXPLICIT),  # 3x3: too small for openjpeg's 6 resolutions and for pyjpegls
    ("SC_ybr_full_422_uncompressed.dcm", EXPLICIT),
]
LOSSLESS_TARGETS = [u.RLELossless, u.JPEGLosslessSV1, u.JPEGLSLossless, u.JPEG2000Lossless, u.HTJ2KLosslessRPCL]


@pytest.mark.parametrize("name, syntax", FILES)
def test_pydicom_files_decode_and_survive_every_lossless_syntax(name: str, syntax: str) -> None:
    ds = _testfile(name)
    assert ds.file_meta.TransferSyntaxUID == syntax
    native = part10(transcode(ds, EXPLICIT))
    assert native.SOPInstanceUID == ds.SOPInstanceUID
    reference = pixels(native, raw=True)
    if syntax not in (u.JPEGExtended12Bit,):  # pydicom alone cannot read 12-bit JPEG (pillow)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = _testfile(name).pixel_array
        if syntax == u.JPEGBaseline8Bit:  # two libjpeg-turbo builds, two YCbCr->RGB roundings
            assert psnr(expected, native.pixel_array, 8) > 40
        else:
            np.testing.assert_array_equal(native.pixel_array, expected)
    for target in LOSSLESS_TARGETS:
        if native.SamplesPerPixel == 3 and native.PhotometricInterpretation == "YBR_FULL_422":
            continue  # subsampled native YBR: decoded as YBR_FULL by every path, compared below
        out = part10(transcode(part10(native), target))
        back = part10(transcode(out, EXPLICIT))
        np.testing.assert_array_equal(pixels(back, raw=True), reference, err_msg=f"{name} via {target.name}")


def test_subsampled_native_ybr_goes_through_every_lossless_syntax() -> None:
    reference = pixels(_testfile("SC_ybr_full_422_uncompressed.dcm"), raw=False)
    for target in LOSSLESS_TARGETS:
        out = part10(transcode(_testfile("SC_ybr_full_422_uncompressed.dcm"), target))
        assert out.PhotometricInterpretation == "YBR_FULL"
        np.testing.assert_array_equal(pixels(out, raw=False), reference)
