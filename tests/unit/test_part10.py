import pytest
from pacs.dicom.part10 import parse_part10
from pacs.errors import InvalidDataset, InvalidUID
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from tests.unit.conftest import MakePart10, build_dataset, to_part10


def test_parses_header_and_uids(make_part10: MakePart10) -> None:
    h = parse_part10(make_part10())
    assert h.sop_instance_uid == "1.2.826.0.1.3680043.8.498.1.1.1"
    assert h.study_uid == "1.2.826.0.1.3680043.8.498.1"
    assert h.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert h.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"


def test_implicit_and_compressed_syntaxes() -> None:
    assert parse_part10(to_part10(build_dataset(), ImplicitVRLittleEndian)).transfer_syntax_uid == (
        ImplicitVRLittleEndian
    )
    ds = build_dataset()
    to_part10(ds)  # gives it a file meta, so compress() knows the current syntax
    ds.compress(RLELossless, encoding_plugin="pylibjpeg")
    assert parse_part10(to_part10(ds, RLELossless)).transfer_syntax_uid == RLELossless


def test_sequences_are_walked(make_part10: MakePart10) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.CodeValue = "T-D3000"
    item.CodingSchemeDesignator = "SRT"
    data = to_part10(build_dataset(AnatomicRegionSequence=Sequence([item, item])), ImplicitVRLittleEndian)
    parse_part10(data)


@pytest.mark.parametrize("cut", [1, 7, 64, 100, 131])
def test_truncated_is_refused(make_part10: MakePart10, cut: int) -> None:
    data = make_part10()
    with pytest.raises(InvalidDataset):
        parse_part10(data[:-cut])


@pytest.mark.parametrize("payload", [b"", b"hello world", b"\0" * 128 + b"DICM", b"\0" * 132 + b"x" * 50])
def test_non_dicom_is_refused(payload: bytes) -> None:
    with pytest.raises(InvalidDataset):
        parse_part10(payload)


@pytest.mark.parametrize("attr", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
@pytest.mark.parametrize("bad", ["1.2.3.../../x", "1.2\x003", "1.2.3/x", "1." + "2" * 70])
def test_bad_uid_is_refused(attr: str, bad: str) -> None:
    ds = build_dataset()
    setattr(ds, attr, bad)
    with pytest.raises(InvalidUID) as err:
        parse_part10(to_part10(ds))
    assert attr in err.value.reason


@pytest.mark.parametrize("attr", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_key_safe_non_uids_are_parsed(attr: str) -> None:
    """A GUID or hash that is not a UID but is safe as a key: parsed (ingest's UID policy decides)."""
    ds = build_dataset()
    setattr(ds, attr, "6f1c2a9e-3b4d-4c5e-8f70-1a2b3c4d5e6f")
    header = parse_part10(to_part10(ds))
    assert "6f1c2a9e-3b4d-4c5e-8f70-1a2b3c4d5e6f" in (header.study_uid, header.series_uid,
                                                     header.sop_instance_uid)


def test_missing_required_uid() -> None:
    ds = build_dataset()
    del ds.SeriesInstanceUID
    with pytest.raises(InvalidDataset, match="SeriesInstanceUID"):
        parse_part10(to_part10(ds))


def test_meta_must_agree_with_data_set(make_part10: MakePart10) -> None:
    ds = build_dataset()
    data = to_part10(ds)
    bad = data.replace(b"1.2.826.0.1.3680043.8.498.1.1.1", b"1.2.826.0.1.3680043.8.498.1.1.2", 1)
    with pytest.raises(InvalidDataset, match="differs"):
        parse_part10(bad)


# --- read_header: pydicom's dcmread(stop_before_pixels=True), read faster -----------------------------

def _corpus() -> list[tuple[str, bytes]]:
    """pydicom's test files, and the shapes the fast reader takes itself (undefined-length sequences,
    implicit VR, no pixel data, a header longer than the first read)."""
    import glob
    import os

    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    files = sorted(glob.glob(os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "**",
                                          "*.dcm"), recursive=True))
    out = [(os.path.basename(f), open(f, "rb").read()) for f in files]  # noqa: SIM115
    item = Dataset()
    item.CodeValue = "T-D3000"
    item.CodingSchemeDesignator = "SRT"
    nested = Dataset()
    nested.ConceptCodeSequence = Sequence([item])
    seq = Sequence([item, nested])
    seq.is_undefined_length = True
    for ts in (ImplicitVRLittleEndian, "1.2.840.10008.1.2.1"):
        ds = build_dataset(AnatomicRegionSequence=seq, ImageComments="x" * 40000)
        out.append((f"undefined-sq-{ts}", to_part10(ds, ts)))
        ds = build_dataset(AnatomicRegionSequence=Sequence([item]))
        del ds.PixelData
        out.append((f"no-pixels-{ts}", to_part10(ds, ts)))
    return out


@pytest.mark.parametrize(("name", "data"), _corpus(), ids=lambda v: v if isinstance(v, str) else "")
def test_read_header_is_pydicoms(name: str, data: bytes) -> None:
    import io
    import warnings

    import pydicom
    from pacs.dicom.json_model import to_dicom_json
    from pacs.dicom.part10 import read_header

    warnings.simplefilter("ignore")
    for lead in (b"", b"lead"):  # the object need not start at the file's first byte
        theirs, ours = io.BytesIO(lead + data), io.BytesIO(lead + data)
        theirs.seek(len(lead))
        ours.seek(len(lead))
        try:
            expected = pydicom.dcmread(theirs, stop_before_pixels=True)
        except Exception as exc:
            with pytest.raises(type(exc)):
                read_header(ours)
            continue
        got = read_header(ours)
        assert ours.tell() == theirs.tell()  # at the pixel data element (or the end)
        assert got.file_meta == expected.file_meta
        assert (got.preamble, got.is_implicit_VR, got.is_little_endian, got.original_character_set) == (
            expected.preamble, expected.is_implicit_VR, expected.is_little_endian,
            expected.original_character_set)
        for kw in ({"bulk_data_uri": lambda p: "b/" + p}, {"bulk_data_threshold": None}):
            assert to_dicom_json(got, **kw) == to_dicom_json(expected, **kw)  # type: ignore[arg-type]
        assert got == expected


def test_read_header_takes_the_usual_shapes_itself() -> None:
    """The fast path is what reads ordinary objects (pydicom only for the unusual ones)."""
    import io
    from unittest import mock

    from pacs.dicom import part10

    with mock.patch.object(part10.pydicom, "dcmread", side_effect=AssertionError("pydicom used")):
        for name, data in _corpus():
            if name.startswith(("undefined-sq", "no-pixels")) or name == "CT_small.dcm":
                part10.read_header(io.BytesIO(data))


@pytest.mark.parametrize(("name", "data"), _corpus(), ids=lambda v: v if isinstance(v, str) else "")
def test_catalog_levels_from_the_metadata_document_are_split_levels(name: str, data: bytes) -> None:
    """The indexer converts a header once: the catalog's levels read from the metadata document are
    exactly what a conversion of their own gives (or it says it cannot, and split_levels is used)."""
    import io
    import warnings

    from pacs.dicom.levels import split_document, split_levels
    from pacs.dicom.part10 import read_header
    from pacs.services.metadata import instance_document, pixel_element_at
    from pacs.storage.keys import InstanceKey

    warnings.simplefilter("ignore")
    fp = io.BytesIO(data)
    try:
        ds = read_header(fp)
        pixel = pixel_element_at(fp, ds) if "TransferSyntaxUID" in ds.file_meta else None
    except Exception:
        pytest.skip("not readable")
    doc = instance_document(InstanceKey("default", "1.2", "1.2.3", "1.2.3.4"), ds, pixel)
    split = split_document(doc)
    if split is not None:
        study, series, instance = split_levels(ds)
        if "TransferSyntaxUID" in ds.file_meta:
            instance["00083002"] = doc["00083002"]  # as the indexer sets it on both paths
        assert split == (study, series, instance)
        assert [list(d) for d in split] == [list(study), list(series), list(instance)]  # key order too


def test_a_long_value_the_catalog_keeps_is_split_by_its_own_conversion() -> None:
    from pacs.dicom.levels import split_document

    long = {"vr": "LO", "BulkDataURI": "studies/1/series/2/instances/3/bulkdata/00081030"}
    assert split_document({"00081030": long}) is None  # StudyDescription over 1024 bytes
    assert split_document({"00091030": long}) is not None  # private: never in the catalog
    assert split_document({"00189999": {"vr": "UT", "BulkDataURI": "x"}}) is None
    assert split_document({"00189999": {"vr": "OB", "BulkDataURI": "x"}}) == ({}, {}, {})
