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
@pytest.mark.parametrize("bad", ["1.2.3.../../x", "1.2.abc", "1." + "2" * 70])
def test_bad_uid_is_refused(attr: str, bad: str) -> None:
    ds = build_dataset()
    setattr(ds, attr, bad)
    with pytest.raises(InvalidUID) as err:
        parse_part10(to_part10(ds))
    assert attr in err.value.reason


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
