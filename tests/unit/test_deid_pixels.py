"""Clean Pixel Data (pacs.deid.pixels): rules, hold-back, and regions blanked in every frame of every
stored transfer syntax, the rest of the image untouched."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pacs.codecs import samples, transcode
from pacs.deid.options import HeldBack
from pacs.deid.pixels import (
    DEFAULT_BURN_IN,
    PixelRule,
    PixelRules,
    load_pixel_rules,
    must_hold_back,
)
from pydicom import uid as u
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder

REGION = (5, 7, 23, 19)  # x0, y0, x1, y1
LOSSLESS = [u.ExplicitVRLittleEndian, u.ExplicitVRBigEndian, u.ImplicitVRLittleEndian,
            u.DeflatedExplicitVRLittleEndian, u.RLELossless, u.JPEGLSLossless, u.JPEG2000Lossless,
            u.JPEGLosslessSV1, u.JPEGLossless, u.HTJ2KLossless]
KINDS = ["mono8", "mono12s", "mono16", "rgb8", "rgb8planar", "ybr8", "palette8"]
#: The black each kind is blanked with (samples' values as stored, YBR not converted).
BLACK: dict[str, Any] = {"mono8": 0, "mono12s": -2048, "mono16": 65535, "rgb8": [0, 0, 0],
                         "rgb8planar": [0, 0, 0], "ybr8": [0, 128, 128], "palette8": 0}


def _reread(ds: Dataset) -> Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def _array(ds: Dataset) -> np.ndarray:
    """Every frame (frames, rows, columns[, samples]), samples as stored (no YBR → RGB)."""
    opts: dict[str, Any] = {"as_rgb": False}
    arr, _ = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, **opts)
    return arr if int(ds.get("NumberOfFrames") or 1) > 1 else arr[np.newaxis]


def _mask(arr: np.ndarray, region: tuple[int, int, int, int] = REGION) -> np.ndarray:
    x0, y0, x1, y1 = region
    mask = np.zeros(arr.shape[:3], bool)
    mask[:, y0:y1, x0:x1] = True
    return mask


def _stored(kind: str, syntax: str, frames: int = 3) -> Dataset:
    ds = samples.dataset(kind, frames=frames)
    transcode(ds, syntax, new_uid=False)
    return _reread(ds)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("syntax", LOSSLESS, ids=lambda s: u.UID(s).keyword)
def test_regions_blanked_in_every_frame_rest_bit_for_bit(syntax: str, kind: str) -> None:
    ds = _stored(kind, syntax)
    before = _array(ds)
    sop = ds.SOPInstanceUID
    rules = PixelRules((PixelRule(regions=(REGION,)),))
    assert rules.clean(ds) is True
    out = _reread(ds)
    assert out.file_meta.TransferSyntaxUID == syntax
    assert out.BurnedInAnnotation == "NO"
    assert out.SOPInstanceUID == sop
    assert "LossyImageCompression" not in out
    after = _array(out)
    assert after.shape == before.shape and after.dtype == before.dtype
    mask = _mask(after)
    assert np.array_equal(after[~mask], before[~mask])  # the rest untouched, bit for bit
    inside = after[mask]
    assert (inside == np.asarray(BLACK[kind], dtype=inside.dtype)).all()
    assert (before[mask] != inside).any()  # there was something to blank
    for frame in range(after.shape[0]):
        assert (after[frame][mask[frame]] == np.asarray(BLACK[kind], dtype=inside.dtype)).all()


def test_regions_clipped_to_the_image_and_fill_value() -> None:
    ds = _stored("mono8", u.RLELossless, frames=2)
    before = _array(ds)
    PixelRules((PixelRule(regions=((60, 60, 500, 500),), fill=200),)).clean(ds)
    after = _array(_reread(ds))
    mask = _mask(after, (60, 60, 64, 64))
    assert (after[mask] == 200).all()
    assert np.array_equal(after[~mask], before[~mask])


def test_jpeg_baseline_reencoded_lossy_and_recorded() -> None:
    ds = samples.dataset("rgb8", frames=2)
    arr = np.frombuffer(ds.PixelData, np.uint8).reshape(2, 64, 64, 3).copy()
    arr[:, 8:16, 8:40] = 255  # white "text" in both frames
    ds.PixelData = arr.tobytes()
    transcode(ds, u.JPEGBaseline8Bit, new_uid=False)
    ds = _reread(ds)
    before = ds.pixel_array.astype(int)
    methods = ds["LossyImageCompressionMethod"].VM
    PixelRules((PixelRule(regions=((8, 8, 40, 16),)),)).clean(ds)
    out = _reread(ds)
    assert out.file_meta.TransferSyntaxUID == u.JPEGBaseline8Bit
    assert out.LossyImageCompression == "01"
    assert out["LossyImageCompressionMethod"].VM == methods + 1 == out["LossyImageCompressionRatio"].VM
    after = out.pixel_array.astype(int)
    mask = _mask(after, (8, 8, 40, 16))
    assert after[mask].max() < 64 < before[mask].min()  # the white text is gone in every frame
    assert np.abs(after[~mask] - before[~mask]).mean() < 4  # the rest: only the new lossy step's error


def test_real_us_multiframe_jpeg_baseline() -> None:
    ds = pydicom.dcmread(get_testdata_file("examples_ybr_color.dcm"))
    region = (0, 0, 320, 30)
    PixelRules((PixelRule(regions=(region,), modality="us", manufacturer="sonosite*"),)).clean(ds)
    out = _reread(ds)
    assert int(out.NumberOfFrames) == 30 and out.file_meta.TransferSyntaxUID == u.JPEGBaseline8Bit
    rgb = out.pixel_array
    assert rgb[:, 0:30].max() < 48  # black, give or take the JPEG error next to the edge


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                  "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm",
                                  "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle_2frame.dcm",
                                  "SC_ybr_full_422_uncompressed.dcm"])
def test_pydicom_files(name: str) -> None:
    ds = pydicom.dcmread(get_testdata_file(name))
    syntax = ds.file_meta.TransferSyntaxUID
    before = _array(ds)
    PixelRules((PixelRule(regions=(REGION,)),)).clean(ds)
    out = _reread(ds)
    assert out.file_meta.TransferSyntaxUID == syntax
    after = _array(out)
    mask = _mask(after)
    assert np.array_equal(after[~mask], before[~mask])
    assert len(np.unique(after[mask].reshape(int(mask.sum()), -1), axis=0)) == 1


def test_native_32_bit_multiframe() -> None:
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_rle_32bit_2frame.dcm"))
    transcode(ds, u.ExplicitVRLittleEndian, new_uid=False)
    ds = _reread(ds)
    before = _array(ds)
    PixelRules((PixelRule(regions=(REGION,)),)).clean(ds)
    after = _array(_reread(ds))
    mask = _mask(after)
    assert after.dtype == np.uint32 and after.shape[0] == 2
    assert np.array_equal(after[~mask], before[~mask]) and (after[mask] == 0).all()


def test_cannot_blank_is_held_back() -> None:
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_rle_32bit_2frame.dcm"))
    stored = ds.PixelData
    with pytest.raises(HeldBack, match="RLE Lossless with Bits Allocated 32"):
        PixelRules((PixelRule(regions=(REGION,)),)).clean(ds)
    assert ds.PixelData == stored and ds.file_meta.TransferSyntaxUID == u.RLELossless
    one_bit = _stored("mono8", u.ExplicitVRLittleEndian, frames=1)
    one_bit.BitsAllocated = one_bit.BitsStored = 1
    with pytest.raises(HeldBack, match="Bits Allocated 1"):
        PixelRules((PixelRule(regions=(REGION,)),)).clean(one_bit)
    signed = _stored("mono12s", u.RLELossless, frames=1)
    stored = signed.PixelData
    with pytest.raises(HeldBack, match=r"fill 4096 is outside -2048\.\.2047"):
        PixelRules((PixelRule(regions=(REGION,), fill=4096),)).clean(signed)
    assert signed.PixelData == stored and signed.file_meta.TransferSyntaxUID == u.RLELossless


def _engine_copy(ds: Dataset) -> Dataset:
    """What the de-identifier makes: a data set without file meta whose kept elements are the very
    element objects of the original."""
    out = Dataset()
    for elem in ds:
        if elem.keyword not in ("Manufacturer", "ManufacturerModelName"):
            out.add(elem)
    return out


@pytest.mark.parametrize("syntax", [u.ExplicitVRLittleEndian, u.ExplicitVRBigEndian, u.RLELossless,
                                    u.JPEGLSLossless, u.JPEG2000Lossless], ids=lambda s: u.UID(s).keyword)
def test_a_copy_sharing_elements_without_file_meta(syntax: str) -> None:
    original = _stored("mono12s", syntax, frames=2)
    original.Manufacturer = "Acme"
    before = _array(original)
    stored, photometric = bytes(original.PixelData), original.PhotometricInterpretation
    out = _engine_copy(original)
    assert out["PixelData"] is original["PixelData"]
    rules = PixelRules((PixelRule(regions=(REGION,), manufacturer="acme"),))
    assert rules.clean(out, match=original) is True
    assert getattr(out, "file_meta", None) is None  # the de-identifier makes its own
    assert bytes(original.PixelData) == stored and original.PhotometricInterpretation == photometric
    assert "BurnedInAnnotation" not in original and out.BurnedInAnnotation == "NO"
    out.file_meta = original.file_meta
    out.set_original_encoding(*original.original_encoding[:2], None)
    after = _array(_reread(out))
    mask = _mask(after)
    assert np.array_equal(after[~mask], before[~mask]) and (after[mask] == -2048).all()


def test_encapsulated_copy_of_unknown_syntax_is_held_back() -> None:
    out = _engine_copy(_stored("mono8", u.RLELossless, frames=1))
    with pytest.raises(HeldBack, match="unknown transfer syntax"):
        PixelRules((PixelRule(regions=(REGION,)),)).clean(out)


# --- hold-back -------------------------------------------------------------------------------------

def _image(**attrs: Any) -> Dataset:
    ds = samples.dataset("mono8", frames=1)
    ds.SOPClassUID = u.CTImageStorage
    ds.Modality = "CT"
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


@pytest.mark.parametrize("attrs", [
    {"Modality": "US"}, {"Modality": "sc"}, {"Modality": "XA"}, {"Modality": "OT"},
    {"BurnedInAnnotation": "YES"}, {"Modality": "MR", "BurnedInAnnotation": "YES"},
    {"SOPClassUID": u.SecondaryCaptureImageStorage},  # a capture, whatever its Modality
    {"SOPClassUID": u.UltrasoundMultiFrameImageStorage},
    {"SOPClassUID": u.MultiFrameTrueColorSecondaryCaptureImageStorage},
    {"Modality": "US", "BurnedInAnnotation": "NO"},  # not trusted by default
], ids=str)
@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
def test_uncovered_burn_in_images_are_held_back(attrs: dict[str, str]) -> None:
    ds = _image(**attrs)
    reason = must_hold_back(ds, PixelRules())
    assert reason and "no pixel rule covers it" in reason
    before = bytes(ds.PixelData)
    with pytest.raises(HeldBack) as caught:
        PixelRules().clean(ds)
    assert str(caught.value) == reason
    assert bytes(ds.PixelData) == before  # nothing changed
    assert ds.get("BurnedInAnnotation") == attrs.get("BurnedInAnnotation")


def test_pydicom_us_and_sc_files_held_back() -> None:
    for name in ("examples_ybr_color.dcm", "SC_rgb_rle.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        with pytest.raises(HeldBack, match="burned-in annotation"):
            PixelRules().clean(ds)


def test_not_held_back() -> None:
    ct = _image()
    assert must_hold_back(ct, PixelRules()) is None
    before = bytes(ct.PixelData)
    assert PixelRules().clean(ct) is False
    assert ct.BurnedInAnnotation == "NO" and bytes(ct.PixelData) == before  # E.3.1: added as NO
    no_pixels = _image(Modality="US")
    del no_pixels.PixelData
    assert must_hold_back(no_pixels, PixelRules()) is None
    assert PixelRules().clean(no_pixels) is False and "BurnedInAnnotation" not in no_pixels
    trusted = PixelRules(trust_burned_in_no=True)
    assert must_hold_back(_image(Modality="US", BurnedInAnnotation="NO"), trusted) is None
    assert must_hold_back(_image(Modality="US"), PixelRules(hold_back_modalities=frozenset({"XA"}))) is None
    assert {"US", "SC", "XA", "RF", "ES", "OT"} <= DEFAULT_BURN_IN
    for sop_class in (u.VLWholeSlideMicroscopyImageStorage, u.CTImageStorage, u.EnhancedCTImageStorage):
        assert must_hold_back(_image(SOPClassUID=sop_class, Modality="SM"), PixelRules()) is None


def test_a_rule_without_regions_declares_images_clean() -> None:
    ds = _image(Modality="US", Manufacturer="Acme", BurnedInAnnotation="YES")
    before = bytes(ds.PixelData)
    rules = PixelRules((PixelRule(regions=(), modality="US", manufacturer="acme"),))
    assert must_hold_back(ds, rules) is None
    assert rules.clean(ds) is False
    assert bytes(ds.PixelData) == before and ds.BurnedInAnnotation == "NO"


# --- matching ----------------------------------------------------------------------------------------

def test_rule_matching() -> None:
    ds = _image(Modality="US", Manufacturer="GE Healthcare", ManufacturerModelName="LOGIQ E9 XDclear")
    ds.Rows, ds.Columns = 600, 800
    assert PixelRule(regions=(), modality="us").matches(ds)
    assert PixelRule(regions=(), manufacturer="ge*").matches(ds)
    assert PixelRule(regions=(), model="logiq e9*").matches(ds)
    assert PixelRule(regions=(), model="LOGIQ E[0-9]*", rows=600, columns=800).matches(ds)
    assert PixelRule(regions=()).matches(ds)  # empty criteria: anything
    assert not PixelRule(regions=(), modality="US", rows=480).matches(ds)
    assert not PixelRule(regions=(), modality="US", columns=640).matches(ds)
    assert not PixelRule(regions=(), manufacturer="Philips*").matches(ds)
    assert not PixelRule(regions=(), model="LOGIQ P*").matches(ds)
    assert not PixelRule(regions=(), modality="CT").matches(ds)
    first = PixelRule(regions=((0, 0, 1, 1),), model="LOGIQ*")
    rules = PixelRules((PixelRule(regions=((0, 0, 2, 2),), modality="CT"), first,
                        PixelRule(regions=((0, 0, 3, 3),), modality="US")))
    assert rules.match(ds) is first


def test_clean_matches_on_the_original() -> None:
    original = _image(Modality="US", Manufacturer="Acme", ManufacturerModelName="Scope 1")
    copy = _image(Modality="US")  # what the engine left: no device identity
    copy.PixelData = bytes(original.PixelData)
    rules = PixelRules((PixelRule(regions=((0, 0, 10, 10),), manufacturer="ACME", model="scope*"),))
    with pytest.raises(HeldBack):
        rules.clean(copy)
    assert rules.clean(copy, match=original) is True
    arr = np.frombuffer(copy.PixelData, np.uint8).reshape(64, 64)
    assert (arr[:10, :10] == 0).all()


# --- loading -----------------------------------------------------------------------------------------

TOML = """
hold_back_modalities = ["us", "XA"]
trust_burned_in_no = true

[[rule]]
modality = "US"
manufacturer = "GE*"
rows = 600
columns = 800
regions = [[0, 0, 800, 60], [0, 560, 300, 600]]

[[rule]]
modality = "XA"
regions = []
fill = 7
"""


def test_load_toml_file_json_text_and_mapping(tmp_path: Path) -> None:
    path = tmp_path / "pixels.toml"
    path.write_text(TOML)
    rules = load_pixel_rules(path)
    assert rules.hold_back_modalities == frozenset({"US", "XA"}) and rules.trust_burned_in_no
    assert rules.rules[0] == PixelRule(regions=((0, 0, 800, 60), (0, 560, 300, 600)), modality="US",
                                       manufacturer="GE*", rows=600, columns=800)
    assert rules.rules[1].fill == 7 and rules.rules[1].regions == ()
    assert load_pixel_rules(str(path)) == rules
    assert load_pixel_rules(TOML) == rules
    data = {"hold_back_modalities": ["us", "XA"], "trust_burned_in_no": True, "rules": [
        {"modality": "US", "manufacturer": "GE*", "rows": 600, "columns": 800,
         "regions": [[0, 0, 800, 60], [0, 560, 300, 600]]},
        {"modality": "XA", "regions": [], "fill": 7}]}
    assert load_pixel_rules(json.dumps(data)) == rules
    assert load_pixel_rules(data) == rules
    (tmp_path / "pixels.json").write_text(json.dumps(data))
    assert load_pixel_rules(tmp_path / "pixels.json") == rules
    assert load_pixel_rules("") == PixelRules()


@pytest.mark.parametrize(("text", "message"), [
    ('[[rule]]\nmodalty = "US"\nregions = []', "unknown key"),
    ('[[rule]]\nregions = [[0, 0, 10]]', "four integers"),
    ('[[rule]]\nregions = [[10, 0, 5, 5]]', "x1 must exceed x0"),
    ('[[rule]]\nregions = [[0, -1, 5, 5]]', "none negative"),
    ('[[rule]]\nrows = "600"\nregions = []', "rows: an integer"),
    ('[[rule]]\nmodality = 3\nregions = []', "modality: a text"),
    ('hold_back = ["US"]', "unknown key"),
    ('hold_back_modalities = "US"', "a list of modality codes"),
    ('{"rules": [', "not valid TOML or JSON"),
])
def test_load_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_pixel_rules(text)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="No such file"):
        load_pixel_rules(tmp_path / "absent.toml")
