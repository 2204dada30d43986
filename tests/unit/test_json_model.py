"""DICOM JSON Model (PS3.18 Annex F): compared with pydicom's own encoder, every VR, bulk data, round trip."""

from __future__ import annotations

import base64
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import orjson
import pydicom
import pytest
from pacs.dicom.json_model import BINARY_VRS, DicomJson, dumps, from_dicom_json, to_dicom_json
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.hooks import hooks, raw_element_value
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

# Some test files hold invalid values, which pydicom warns about when converting them.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")

DATA = Path(pydicom.__file__).parent / "data"

# Files of pydicom's test data shipped with the wheel (SC_rgb.dcm and emri_small.dcm are download-only:
# they run when already cached, and local equivalents stand in for them).
FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "JPEG2000.dcm",
    "SC_rgb_small_odd.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "test-SR.dcm",  # deeply nested sequences
    "reportsi.dcm",
    "priv_SQ.dcm",  # private sequence, implicit VR
    "nested_priv_SQ.dcm",
    "J2K_pixelrep_mismatch.dcm",  # private UN elements
    "UN_sequence.dcm",
    "waveform_ecg.dcm",
    "examples_overlay.dcm",  # icon image sequence, LUT descriptors
    "examples_palette.dcm",
    "rtdose_rle.dcm",  # explicit UN with known VRs
    "empty_charset_LEI.dcm",
    "dicomdirtests/DICOMDIR",  # items with their own Specific Character Set
    "dicomdirtests/DICOMDIR-implicit",
    "dicomdirtests/DICOMDIR-bigEnd",
]
CHARSET_FILES = sorted(p.name for p in (DATA / "charset_files").glob("*.dcm"))


def _path(name: str) -> Path:
    if name.startswith("chr"):
        return DATA / "charset_files" / name
    local = DATA / "test_files" / name
    if local.exists():
        return local
    found = get_testdata_file(name, download=False)
    if found is None:
        pytest.fail(f"{name} is not among pydicom's bundled test files")
    return Path(str(found))


def _read(name: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(_path(name), force=True)


def _pydicom_json(ds: Dataset, **kwargs: Any) -> DicomJson:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.to_json_dict(**kwargs)


def normalise(obj: DicomJson) -> DicomJson:
    """pydicom's JSON with its known, legitimate differences from ours undone.

    * group length (gggg,0000) and file meta (0002) elements: pydicom writes them, we never do;
    * SQ without items: pydicom writes "Value": [], we write no "Value" (PS3.18 F.2.5);
    * PN: pydicom always writes "Alphabetic", even "", and may write empty "Ideographic"/"Phonetic";
      we write only non-empty groups, and null for a name without any;
    * empty components of a multi-valued string: pydicom writes "", we write null (F.2.5);
    * a single empty value gives no "Value" in both.
    """
    out: DicomJson = {}
    for key, attr in obj.items():
        tag = int(key, 16)
        if not tag & 0xFFFF or tag >> 16 == 2:
            continue
        attr = dict(attr)
        values = attr.get("Value")
        if values is not None:
            if attr["vr"] == "SQ":
                values = [normalise(item) for item in values]
            elif attr["vr"] == "PN":
                values = [({g: s for g, s in name.items() if s} or None) if name else None for name in values]
            else:
                values = [None if v == "" else v for v in values]
            if not values or values == [None]:
                del attr["Value"]
            else:
                attr["Value"] = values
        out[key] = attr
    return out


def _convert_all(ds: Dataset) -> Dataset:
    """Convert every raw element of `ds` (recursively) to a pydicom DataElement."""
    for _ in ds.iterall():
        pass
    return ds


def _raw_count(ds: Dataset) -> int:
    return sum(type(e) is RawDataElement for e in ds._dict.values())


def _assert_same(ours: DicomJson, theirs: DicomJson, path: str = "") -> None:
    """Equality with a readable failure: the first differing attribute path."""
    assert set(ours) == set(theirs), (path, set(ours) ^ set(theirs))
    for key in ours:
        a, b = ours[key], theirs[key]
        if a.get("vr") == "SQ" and b.get("vr") == "SQ" and "Value" in a and "Value" in b:
            assert len(a["Value"]) == len(b["Value"]), path + key
            for index, (x, y) in enumerate(zip(a["Value"], b["Value"], strict=True)):
                _assert_same(x, y, f"{path}{key}/{index}/")
        else:
            assert a == b, path + key


# --- pydicom test files ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES + CHARSET_FILES)
def test_matches_pydicom_on_test_files(name: str) -> None:
    ours = to_dicom_json(_read(name), bulk_data_threshold=None)
    theirs = normalise(_pydicom_json(_read(name), bulk_data_threshold=10**12))
    _assert_same(ours, theirs)


@pytest.mark.parametrize("name", FILES + CHARSET_FILES)
def test_raw_and_converted_datasets_encode_alike(name: str) -> None:
    raw = _read(name)
    converted = _convert_all(_read(name))
    assert _raw_count(converted) == 0
    _assert_same(
        to_dicom_json(raw, bulk_data_threshold=None), to_dicom_json(converted, bulk_data_threshold=None)
    )


def test_raw_elements_stay_raw() -> None:
    ds = _read("rtplan.dcm")
    before = _raw_count(ds)
    to_dicom_json(ds)
    assert _raw_count(ds) == before  # sequences included: decoded from their bytes, not converted


def test_deferred_values_are_read() -> None:
    path = _path("CT_small.dcm")
    deferred = dcmread(path, defer_size=64)
    assert any(e.value is None and e.length for e in deferred._dict.values() if type(e) is RawDataElement)
    assert to_dicom_json(deferred, bulk_data_threshold=None) == to_dicom_json(
        dcmread(path), bulk_data_threshold=None
    )


def test_custom_pydicom_hooks_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a custom raw element hook, raw values are left to pydicom (which calls the hook)."""
    calls: list[int] = []

    def hook(raw: RawDataElement, data: dict[str, Any], **kwargs: Any) -> None:
        calls.append(raw.tag)
        raw_element_value(raw, data, **kwargs)

    expected = to_dicom_json(_read("MR_small.dcm"))
    monkeypatch.setattr(hooks, "raw_element_value", hook)
    assert to_dicom_json(_read("MR_small.dcm")) == expected
    assert 0x00100010 in calls


def test_bulk_data_matches_pydicom() -> None:
    """pydicom compares the length with 3/4 of its threshold (the base64 size): 1024 there is 768 here."""
    ours = to_dicom_json(
        _read("CT_small.dcm"), bulk_data_threshold=768, bulk_data_uri=lambda path: f"bulk/{path}"
    )
    theirs = normalise(
        _pydicom_json(
            _read("CT_small.dcm"),
            bulk_data_threshold=1024,
            bulk_data_element_handler=lambda elem: f"bulk/{elem.tag:08X}",
        )
    )
    assert ours["7FE00010"] == {"vr": "OW", "BulkDataURI": "bulk/7FE00010"}
    _assert_same(ours, theirs)


def test_pn_in_several_groups_from_charset_files() -> None:
    names = to_dicom_json(_read("chrH31.dcm"))["00100010"]["Value"]
    assert names == [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}]
    names = to_dicom_json(_read("chrX1.dcm"))["00100010"]["Value"]
    assert names == [{"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}]


def test_private_tags_are_included() -> None:
    ours = to_dicom_json(_read("priv_SQ.dcm"))
    assert ours["3F030010"] == {"vr": "LO", "Value": ["aaabbbccc MEDICAL SYSTEMS"]}
    assert ours["3F031001"]["vr"] == "UN" and "InlineBinary" in ours["3F031001"]  # unknown private: UN
    nested = to_dicom_json(_read("nested_priv_SQ.dcm"))
    assert nested["00010001"]["Value"][0]["00010002"] == {"vr": "UN", "InlineBinary": "TmVzdGVkIFNR"}


# --- every VR, hand-built ----------------------------------------------------------------------------


def _every_vr() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.1.1"
    ds.add_new(0x00080054, "AE", ["STORE_SCP", "ARCHIVE"])
    ds.add_new(0x00101010, "AS", "045Y")
    ds.add_new(0x00720026, "AT", [0x00100010, 0x7FE00010])
    ds.add_new(0x00080008, "CS", ["ORIGINAL", "", "AXIAL"])
    ds.add_new(0x00080020, "DA", "20240131")
    ds.add_new(0x0008002A, "DT", "20240131120000.123456")
    ds.add_new(0x00082130, "DS", ["1.5", "-2", "3e-05"])
    ds.add_new(0x00182043, "FL", [0.5, -1.25])
    ds.add_new(0x00081163, "FD", [0.1, 1e300])
    ds.add_new(0x00081160, "IS", ["1", "-20", "300"])
    ds.add_new(0x00100020, "LO", "ID 1")
    ds.add_new(0x00080108, "LT", "first line\r\nsecond \\ line")
    ds.add_new(0x0008041B, "OB", b"\x00\x01\x02\x03")
    ds.add_new(0x00660022, "OD", b"\x00" * 16)
    ds.add_new(0x00181638, "OF", b"\x01" * 8)
    ds.add_new(0x00660040, "OL", b"\x02" * 8)
    ds.add_new(0x00720081, "OV", b"\x03" * 8)
    ds.add_new(0x00281201, "OW", b"\x04\x05" * 4)
    ds.add_new(0x00100010, "PN", "Yamada^Tarou=山田^太郎=やまだ^たろう")
    ds.add_new(0x0008009C, "PN", ["Doe^John", "=Ideo^Only", "Smith^Jane"])
    ds.add_new(0x00080094, "SH", ["555-1234", "555-9876"])
    ds.add_new(0x0040A162, "SL", [-(2**31), 2**31 - 1])
    ds.add_new(0x00189442, "SS", [-32768, 32767, 0])
    ds.add_new(0x00080081, "ST", "Street 1\\Town")
    ds.add_new(0x00720082, "SV", [-(2**63), 2**63 - 1])
    ds.add_new(0x00080030, "TM", "120000.5")
    ds.add_new(0x00160008, "UC", ["Column A", "Column B"])
    ds.add_new(0x0008001A, "UI", ["1.2.3", "1.2.3.4"])
    ds.add_new(0x00080309, "UL", [0, 2**32 - 1])
    ds.add_new(0x0072006D, "UN", b"\x10\x20\x30\x40")
    ds.add_new(0x0008010E, "UR", "https://example.org/a?b=1")
    ds.add_new(0x00080304, "US", [0, 65535])
    ds.add_new(0x00100218, "UT", "free text \\ with backslash")
    ds.add_new(0x00720083, "UV", [0, 2**64 - 1])
    ds.add_new(0x00100030, "DA", "")  # empty
    ds.add_new(0x00101020, "DS", None)
    ds.add_new(0x00200013, "IS", "")
    ds.add_new(0x00080090, "PN", "")
    ds.add_new(0x00280010, "US", None)
    ds.add_new(0x0020000D, "UI", "1.2.3.4.5")
    ds.add_new(0x00091010, "LO", "private value")  # private creator (0009,0010) is not needed to encode
    ds.add_new(0x00090010, "LO", "ACME 1.0")
    ds.add_new(0x00091011, "US", 7)
    ds.add_new(0x00081140, "SQ", Sequence())  # empty sequence
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    referenced.ReferencedSOPInstanceUID = "1.2.3.4.5.6"
    referenced.add_new(0x00081160, "IS", [1, 2])
    ds.add_new(0x00081115, "SQ", Sequence([Dataset(), referenced]))  # empty item, then an item
    inner = Dataset()
    inner.CodeValue = "T-A0100"
    inner.CodingSchemeDesignator = "SRT"
    inner.CodeMeaning = "Brain"
    outer = Dataset()
    outer.add_new(0x00082218, "SQ", Sequence([inner]))  # AnatomicRegionSequence, nested
    outer.add_new(0x00400009, "SH", "SPS1")
    icon = Dataset()
    icon.Rows = 2
    icon.Columns = 2
    icon.add_new(0x7FE00010, "OB", b"\x00\x01\x02\x03")
    undefined = DataElement(0x00400275, "SQ", Sequence([outer, outer]))  # RequestAttributesSequence
    undefined.is_undefined_length = True
    outer.is_undefined_length_sequence_item = True
    ds.add(undefined)
    ds.add_new(0x00880200, "SQ", Sequence([icon]))
    return ds


EXPECTED_EVERY_VR: DicomJson = {
    "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
    "00080008": {"vr": "CS", "Value": ["ORIGINAL", None, "AXIAL"]},
    "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
    "00080018": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.2.1125.1.1"]},
    "0008001A": {"vr": "UI", "Value": ["1.2.3", "1.2.3.4"]},
    "00080020": {"vr": "DA", "Value": ["20240131"]},
    "0008002A": {"vr": "DT", "Value": ["20240131120000.123456"]},
    "00080030": {"vr": "TM", "Value": ["120000.5"]},
    "00080054": {"vr": "AE", "Value": ["STORE_SCP", "ARCHIVE"]},
    "00080081": {"vr": "ST", "Value": ["Street 1\\Town"]},
    "00080090": {"vr": "PN"},
    "00080094": {"vr": "SH", "Value": ["555-1234", "555-9876"]},
    "0008009C": {
        "vr": "PN",
        "Value": [{"Alphabetic": "Doe^John"}, {"Ideographic": "Ideo^Only"}, {"Alphabetic": "Smith^Jane"}],
    },
    "00080108": {"vr": "LT", "Value": ["first line\r\nsecond \\ line"]},
    "0008010E": {"vr": "UR", "Value": ["https://example.org/a?b=1"]},
    "00080304": {"vr": "US", "Value": [0, 65535]},
    "00080309": {"vr": "UL", "Value": [0, 4294967295]},
    "0008041B": {"vr": "OB", "InlineBinary": "AAECAw=="},
    "00081115": {
        "vr": "SQ",
        "Value": [
            {},
            {
                "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                "00081155": {"vr": "UI", "Value": ["1.2.3.4.5.6"]},
                "00081160": {"vr": "IS", "Value": [1, 2]},
            },
        ],
    },
    "00081140": {"vr": "SQ"},
    "00081160": {"vr": "IS", "Value": [1, -20, 300]},
    "00081163": {"vr": "FD", "Value": [0.1, 1e300]},
    "00082130": {"vr": "DS", "Value": [1.5, -2.0, 3e-05]},
    "00090010": {"vr": "LO", "Value": ["ACME 1.0"]},
    "00091010": {"vr": "LO", "Value": ["private value"]},
    "00091011": {"vr": "US", "Value": [7]},
    "00100010": {
        "vr": "PN",
        "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}],
    },
    "00100020": {"vr": "LO", "Value": ["ID 1"]},
    "00100030": {"vr": "DA"},
    "00100218": {"vr": "UT", "Value": ["free text \\ with backslash"]},
    "00101010": {"vr": "AS", "Value": ["045Y"]},
    "00101020": {"vr": "DS"},
    "00160008": {"vr": "UC", "Value": ["Column A", "Column B"]},
    "00181638": {"vr": "OF", "InlineBinary": base64.b64encode(b"\x01" * 8).decode()},
    "00182043": {"vr": "FL", "Value": [0.5, -1.25]},
    "00189442": {"vr": "SS", "Value": [-32768, 32767, 0]},
    "0020000D": {"vr": "UI", "Value": ["1.2.3.4.5"]},
    "00200013": {"vr": "IS"},
    "00280010": {"vr": "US"},
    "00281201": {"vr": "OW", "InlineBinary": base64.b64encode(b"\x04\x05" * 4).decode()},
    "00400275": {
        "vr": "SQ",
        "Value": [
            {
                "00082218": {
                    "vr": "SQ",
                    "Value": [
                        {
                            "00080100": {"vr": "SH", "Value": ["T-A0100"]},
                            "00080102": {"vr": "SH", "Value": ["SRT"]},
                            "00080104": {"vr": "LO", "Value": ["Brain"]},
                        }
                    ],
                },
                "00400009": {"vr": "SH", "Value": ["SPS1"]},
            }
        ]
        * 2,
    },
    "0040A162": {"vr": "SL", "Value": [-2147483648, 2147483647]},
    "00660022": {"vr": "OD", "InlineBinary": base64.b64encode(b"\x00" * 16).decode()},
    "00660040": {"vr": "OL", "InlineBinary": base64.b64encode(b"\x02" * 8).decode()},
    "00720026": {"vr": "AT", "Value": ["00100010", "7FE00010"]},
    "0072006D": {"vr": "UN", "InlineBinary": base64.b64encode(b"\x10\x20\x30\x40").decode()},
    "00720081": {"vr": "OV", "InlineBinary": base64.b64encode(b"\x03" * 8).decode()},
    "00720082": {"vr": "SV", "Value": [-(2**63), 2**63 - 1]},
    "00720083": {"vr": "UV", "Value": [0, 2**64 - 1]},
    "00880200": {
        "vr": "SQ",
        "Value": [
            {
                "00280010": {"vr": "US", "Value": [2]},
                "00280011": {"vr": "US", "Value": [2]},
                "7FE00010": {"vr": "OB", "InlineBinary": "AAECAw=="},
            }
        ],
    },
}


def _reencode(ds: Dataset, transfer_syntax: str) -> Dataset:
    """`ds` written in `transfer_syntax` and read back: its elements are raw again."""
    ds = Dataset(ds)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3")
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return dcmread(io.BytesIO(buffer.getvalue()))


TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]


def test_every_vr_from_converted_elements() -> None:
    assert to_dicom_json(_every_vr()) == EXPECTED_EVERY_VR


@pytest.mark.parametrize("transfer_syntax", TRANSFER_SYNTAXES)
def test_every_vr_from_raw_elements(transfer_syntax: str) -> None:
    ds = _reencode(_every_vr(), transfer_syntax)
    assert _raw_count(ds) > 40
    expected = dict(EXPECTED_EVERY_VR)
    if transfer_syntax == ImplicitVRLittleEndian:
        # Without explicit VRs, the private elements lack a dictionary entry: UN, as in pydicom.
        expected["00091010"] = {"vr": "UN", "InlineBinary": base64.b64encode(b"private value ").decode()}
        expected["00091011"] = {"vr": "UN", "InlineBinary": base64.b64encode(b"\x07\x00").decode()}
        # Pixel Data is "OB or OW" in the dictionary; pydicom resolves it to OW without Bits Allocated.
        icon = expected["00880200"]["Value"][0]
        expected["00880200"] = {"vr": "SQ", "Value": [{**icon, "7FE00010": {**icon["7FE00010"], "vr": "OW"}}]}
    _assert_same(to_dicom_json(ds), expected)


@pytest.mark.parametrize("transfer_syntax", TRANSFER_SYNTAXES)
def test_every_vr_matches_pydicom(transfer_syntax: str) -> None:
    ds = _every_vr()
    del ds[0x00080008]  # empty components: pydicom writes "" (normalised), but let both paths agree
    ours = to_dicom_json(_reencode(ds, transfer_syntax))
    theirs = normalise(_pydicom_json(_reencode(ds, transfer_syntax)))
    _assert_same(ours, theirs)


def test_tag_keys_are_upper_case_hex() -> None:
    ds = Dataset()
    ds.add_new(0x0020000E, "UI", "1.2.3")
    ds.add_new(0x00DDFF10, "LO", "private")
    keys = list(to_dicom_json(ds))
    assert keys == ["0020000E", "00DDFF10"]


def test_empty_components_are_null() -> None:
    ds = Dataset()
    ds.add_new(0x00280030, "DS", "1.5\\\\2")
    ds.add_new(0x00081160, "IS", "1\\\\3")
    ds.add_new(0x0008009C, "PN", "Doe^J\\\\=X")
    ds.add_new(0x00080094, "SH", "\\")
    ds.add_new(0x00720026, "AT", [0x00100010, None])
    expected = {
        "00081160": {"vr": "IS", "Value": [1, None, 3]},
        "00080094": {"vr": "SH", "Value": [None, None]},
        "0008009C": {"vr": "PN", "Value": [{"Alphabetic": "Doe^J"}, None, {"Ideographic": "X"}]},
        "00280030": {"vr": "DS", "Value": [1.5, None, 2.0]},
        "00720026": {"vr": "AT", "Value": ["00100010", None]},
    }
    assert to_dicom_json(ds) == expected
    del ds[0x00720026]  # pydicom cannot write a None tag
    del expected["00720026"]
    for transfer_syntax in TRANSFER_SYNTAXES:
        assert to_dicom_json(_reencode(ds, transfer_syntax)) == expected


def test_number_types() -> None:
    ds = Dataset()
    ds.add_new(0x00280030, "DS", ["1", "2.5"])
    ds.add_new(0x00200013, "IS", "7")
    ds.add_new(0x00180050, "DS", "2")
    out = to_dicom_json(ds)
    assert [type(v) for v in out["00280030"]["Value"]] == [float, float]  # DS: float, as pydicom
    assert type(out["00200013"]["Value"][0]) is int
    assert dumps(out) == (
        b'{"00180050":{"vr":"DS","Value":[2.0]},"00200013":{"vr":"IS","Value":[7]},'
        b'"00280030":{"vr":"DS","Value":[1.0,2.5]}}'
    )


def test_pn_groups() -> None:
    ds = Dataset()
    ds.add_new(0x00100010, "PN", "Doe^John=")
    ds.add_new(0x00080090, "PN", "==Phon^Etic")
    ds.add_new(0x00081048, "PN", "==")
    out = to_dicom_json(ds)
    assert out["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]}
    assert out["00080090"] == {"vr": "PN", "Value": [{"Phonetic": "Phon^Etic"}]}
    assert out["00081048"] == {"vr": "PN"}


def test_file_meta_and_group_length_are_never_written() -> None:
    ds = _read("CT_small.dcm")
    ds.add_new(0x00080000, "UL", 100)
    ds.add_new(0x00020010, "UI", "1.2.840.10008.1.2.1")
    out = to_dicom_json(ds)
    assert not [key for key in out if key.endswith("0000") or key.startswith("0002")]
    assert to_dicom_json(_read("no_meta_group_length.dcm")).keys().isdisjoint({"00080000", "00100000"})


def test_include_filters_top_level_only() -> None:
    ds = _every_vr()
    out = to_dicom_json(ds, include=lambda tag: tag in (0x00100010, 0x00400275))
    assert list(out) == ["00100010", "00400275"]
    assert "00400009" in out["00400275"]["Value"][0]


def test_invalid_values_are_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    ds = _read("badVR.dcm")
    with caplog.at_level(logging.WARNING, logger="pacs.dicom.json_model"):
        out = to_dicom_json(ds)
    assert out["00280008"] == {"vr": "IS"}
    assert "00280008" in caplog.text


# --- bulk data ---------------------------------------------------------------------------------------


class _Uris:
    """A BulkDataUri recording the paths it was asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, path: str) -> str:
        self.paths.append(path)
        return f"https://pacs/bulk/{path}"


def _bulk_dataset() -> Dataset:
    ds = Dataset()
    ds.Rows = 1
    ds.add_new(0x00281201, "OW", b"\x00\x01" * 600)  # 1200 bytes
    ds.add_new(0x0008041B, "OB", b"\x00\x01" * 8)  # 16 bytes
    ds.add_new(0x00082130, "DS", [1.5] * 400)  # 1199 characters
    ds.add_new(0x00100020, "LO", "short")
    ds.add_new(0x7FE00010, "OB", b"\x00\x01")  # pixel data, tiny
    icon = Dataset()
    icon.add_new(0x7FE00010, "OW", b"\x00\x01" * 4)
    big = Dataset()
    big.add_new(0x00660022, "OD", b"\x00" * 2048)
    ds.add_new(0x00880200, "SQ", Sequence([icon]))
    ds.add_new(0x00400275, "SQ", Sequence([Dataset(), big]))
    return ds


def _bulk_case(transfer_syntax: str | None) -> Dataset:
    """The bulk data set, as built (converted elements) or re-read in `transfer_syntax` (raw)."""
    return _bulk_dataset() if transfer_syntax is None else _reencode(_bulk_dataset(), transfer_syntax)


@pytest.mark.parametrize("transfer_syntax", [None, *TRANSFER_SYNTAXES])
def test_bulk_data_uris_with_paths(transfer_syntax: str | None) -> None:
    uris = _Uris()
    out = to_dicom_json(_bulk_case(transfer_syntax), bulk_data_threshold=1024, bulk_data_uri=uris)
    assert sorted(uris.paths) == [
        "00082130",
        "00281201",
        "00400275/1/00660022",
        "00880200/0/7FE00010",
        "7FE00010",
    ]
    assert out["00281201"] == {"vr": "OW", "BulkDataURI": "https://pacs/bulk/00281201"}
    assert out["00082130"] == {"vr": "DS", "BulkDataURI": "https://pacs/bulk/00082130"}  # large, not binary
    assert out["7FE00010"]["BulkDataURI"] == "https://pacs/bulk/7FE00010"  # pixel data: always
    assert out["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"] == "https://pacs/bulk/00880200/0/7FE00010"
    assert out["00400275"]["Value"][1]["00660022"]["BulkDataURI"] == "https://pacs/bulk/00400275/1/00660022"
    assert out["00400275"]["Value"][0] == {}
    assert out["0008041B"] == {"vr": "OB", "InlineBinary": base64.b64encode(b"\x00\x01" * 8).decode()}
    assert out["00100020"] == {"vr": "LO", "Value": ["short"]}


@pytest.mark.parametrize("transfer_syntax", [None, *TRANSFER_SYNTAXES])
def test_without_uris_large_binary_values_are_omitted(transfer_syntax: str | None) -> None:
    ds = _bulk_case(transfer_syntax)
    out = to_dicom_json(ds, bulk_data_threshold=1024)
    assert out["00281201"] == {"vr": "OW"}  # above the threshold: omitted
    assert out["00400275"]["Value"][1]["00660022"] == {"vr": "OD"}
    assert out["7FE00010"]["InlineBinary"] == "AAE="  # small pixel data: inline
    assert len(out["00082130"]["Value"]) == 400  # not binary: always a Value without URIs
    everything = to_dicom_json(ds, bulk_data_threshold=None)
    assert base64.b64decode(everything["00281201"]["InlineBinary"]) == b"\x00\x01" * 600


def test_threshold_none_with_uris_sends_only_pixel_data() -> None:
    uris = _Uris()
    out = to_dicom_json(_bulk_dataset(), bulk_data_threshold=None, bulk_data_uri=uris)
    assert sorted(uris.paths) == ["00880200/0/7FE00010", "7FE00010"]
    assert "InlineBinary" in out["00281201"]


def test_threshold_is_exclusive() -> None:
    ds = Dataset()
    ds.add_new(0x0008041B, "OB", b"\x00" * 16)
    assert "InlineBinary" in to_dicom_json(ds, bulk_data_threshold=16)["0008041B"]
    assert to_dicom_json(ds, bulk_data_threshold=15)["0008041B"] == {"vr": "OB"}


# --- decoding and round trip -------------------------------------------------------------------------


def _assert_values_equal(original: Dataset, decoded: Dataset, *, binary: bool) -> None:
    for element in original:
        tag = element.tag
        if not tag.element or tag.group == 2:
            continue
        other = decoded[tag]
        if element.VR == "SQ":
            assert len(element.value) == len(other.value), tag
            for a, b in zip(element.value, other.value, strict=True):
                _assert_values_equal(a, b, binary=binary)
        elif element.VR in BINARY_VRS or " or " in element.VR:
            if binary and element.VR != "UN":
                assert other.value == element.value, tag
        else:
            assert element.VR == other.VR, tag
            assert element.value == other.value or (element.is_empty and other.is_empty), tag


@pytest.mark.parametrize("name", [*FILES, *CHARSET_FILES])
def test_round_trip_of_test_files(name: str) -> None:
    ds = _read(name)
    decoded = from_dicom_json(orjson.loads(dumps(to_dicom_json(ds, bulk_data_threshold=None))))
    _assert_values_equal(ds, decoded, binary=True)


@pytest.mark.parametrize("transfer_syntax", [None, *TRANSFER_SYNTAXES])
def test_round_trip_every_vr(transfer_syntax: str | None) -> None:
    ds = _every_vr() if transfer_syntax is None else _reencode(_every_vr(), transfer_syntax)
    decoded = from_dicom_json(to_dicom_json(ds))
    _assert_values_equal(ds, decoded, binary=True)
    assert to_dicom_json(decoded) == to_dicom_json(ds)


def test_round_trip_writes_a_valid_file() -> None:
    decoded = from_dicom_json(to_dicom_json(_read("CT_small.dcm"), bulk_data_threshold=None))
    decoded.file_meta = FileMetaDataset()
    decoded.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    dcmwrite(buffer, decoded, enforce_file_format=True)
    again = dcmread(io.BytesIO(buffer.getvalue()))
    assert again.PixelSpacing == _read("CT_small.dcm").PixelSpacing
    assert again.pixel_array.shape == (128, 128)


def test_from_json_values() -> None:
    obj: DicomJson = {
        "00100010": {
            "vr": "PN",
            "Value": [{"Alphabetic": "Doe^J", "Phonetic": "doe"}, None, {"Ideographic": "X"}],
        },
        "00280030": {"vr": "DS", "Value": [512, 0.5, None]},
        "00180050": {"vr": "DS", "Value": [1234567890123456.0]},
        "00200013": {"vr": "IS", "Value": [3]},
        "00080008": {"vr": "CS", "Value": ["A", None]},
        "00720026": {"vr": "AT", "Value": ["00100010"]},
        "0008041B": {"vr": "OB", "InlineBinary": ["AAE="]},  # list form of PS3.18 F.4's example
        "00281201": {"vr": "OW", "InlineBinary": "AAECAw=="},
        "7FE00010": {"vr": "OW", "BulkDataURI": "https://pacs/bulk/7FE00010"},
        "00101020": {"vr": "DS"},
        "00081115": {"vr": "SQ", "Value": [{}, {"00081150": {"vr": "UI", "Value": ["1.2.3"]}}]},
        "00081140": {"vr": "SQ"},
    }
    ds = from_dicom_json(obj)
    assert str(ds[0x00100010].value[0]) == "Doe^J==doe"
    assert ds[0x00100010].value[1] == "" and str(ds[0x00100010].value[2]) == "=X"
    assert list(ds.PixelSpacing)[:2] == [512, 0.5]
    assert [str(v) for v in ds.PixelSpacing][:2] == ["512", "0.5"]  # DS strings, not "512.0"
    assert len(str(ds.SliceThickness)) <= 16
    assert ds.InstanceNumber == 3
    assert list(ds.ImageType) == ["A", ""]
    assert ds[0x00720026].value == 0x00100010
    assert ds[0x0008041B].value == b"\x00\x01"
    assert ds[0x00281201].value == b"\x00\x01\x02\x03"
    assert ds[0x7FE00010].value is None
    assert ds[0x00101020].is_empty
    assert (
        len(ds.ReferencedSeriesSequence) == 2
        and ds.ReferencedSeriesSequence[1].ReferencedSOPClassUID == "1.2.3"
    )
    assert ds[0x00081140].value == []


def test_from_json_bulk_data_handler_and_text_input() -> None:
    calls: list[str] = []

    def fetch(uri: str) -> bytes:
        calls.append(uri)
        return b"\x01\x02"

    text = dumps({"7FE00010": {"vr": "OB", "BulkDataURI": "https://pacs/bulk/7FE00010"}})
    ds = from_dicom_json(text, bulk_data_uri_handler=fetch)
    assert calls == ["https://pacs/bulk/7FE00010"]
    assert ds.PixelData == b"\x01\x02"


def test_from_json_matches_pydicom() -> None:
    obj = to_dicom_json(_read("rtplan.dcm"))
    ours = from_dicom_json(obj)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = Dataset.from_json(obj)
    _assert_values_equal(theirs, ours, binary=True)


def test_dumps() -> None:
    one = to_dicom_json(_every_vr())
    assert orjson.loads(dumps(one)) == one
    assert orjson.loads(dumps([one, {}])) == [one, {}]
    assert isinstance(dumps(one), bytes)
