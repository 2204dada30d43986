"""The de-identifier's behaviour beyond single rows: file meta, the de-identification attributes,
dates, pseudonyms and crosswalk, sequences replaced by D, cleaning, pixels, errors."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pacs.deid import Deidentifier, DeidError, DeidSettings, HeldBack, Option, PixelRules, Profile, dates
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

KEY = b"e" * 32
CT = get_testdata_file("CT_small.dcm")


def make(*options: Option, key: bytes = KEY, **kw: object) -> Deidentifier:
    return Deidentifier(DeidSettings(Profile(frozenset(options)), key=key, **kw))  # type: ignore[arg-type]


def ct() -> Dataset:
    return pydicom.dcmread(CT)


def test_part10_file_meta_preamble_and_syntax() -> None:
    src = ct()
    src.file_meta.SourceApplicationEntityTitle = "DOE_AE"
    src.preamble = b"DOE" * 42 + b"XX"
    buf = io.BytesIO()
    src.save_as(buf)
    result = make().part10(buf.getvalue())
    assert result.data[:128] == b"\0" * 128 and result.data[128:132] == b"DICM"
    out = pydicom.dcmread(io.BytesIO(result.data))
    meta = out.file_meta
    assert meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID == result.sop_uid != src.SOPInstanceUID
    assert meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID == result.transfer_syntax_uid
    assert meta.ImplementationClassUID.startswith("2.25.") and meta.ImplementationVersionName == "PACS_DEID_1"
    assert "SourceApplicationEntityTitle" not in meta and b"DOE_AE" not in result.data


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "MR_small_bigendian.dcm", "rtplan.dcm", "MR_small_RLE.dcm"])
def test_transfer_syntax_kept_and_pixels_untouched(name: str) -> None:
    path = get_testdata_file(name)
    src = pydicom.dcmread(path)
    out = pydicom.dcmread(io.BytesIO(make().part10(Path(path).read_bytes()).data))
    assert out.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
    if "PixelData" in src:
        assert out.PixelData == src.PixelData


def test_file_meta_in_the_body_is_dropped() -> None:
    src = ct()
    src.add_new(0x00020016, "AE", "DOE_AE")
    src.add_new(0x00020003, "UI", src.SOPInstanceUID)
    out = make().dataset(src)
    assert not [e for e in out if e.tag.group == 2]
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


def test_dataset_leaves_input_untouched_and_shares_pixel_bytes() -> None:
    src = ct()
    before = io.BytesIO()
    src.save_as(before)
    raw_pixels = src._dict[0x7FE00010]
    kinds = {tag: type(elem) for tag, elem in src._dict.items()}
    out = make(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.CLEAN_DESCRIPTORS).dataset(src)
    assert kinds == {tag: type(elem) for tag, elem in src._dict.items()}  # not even decoded in place
    after = io.BytesIO()
    src.save_as(after)
    assert before.getvalue() == after.getvalue()
    assert out._dict[0x7FE00010] is raw_pixels  # the very same raw element: no copy, never decoded


def test_deidentification_attributes() -> None:
    out = make().dataset(ct())
    assert out.PatientIdentityRemoved == "YES"
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == ["113100"]
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    all_options = make(*[o for o in Option if o is not Option.RETAIN_LONGITUDINAL_FULL_DATES],
                       pixel_rules=_Rules()).dataset(ct())
    codes = [i.CodeValue for i in all_options.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113101", "113103", "113104", "113105", "113107", "113108", "113109",
                     "113110", "113111", "113112"]
    assert all_options.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "Retain Safe Private Option" in all_options.DeidentificationMethod
    full = make(Option.RETAIN_LONGITUDINAL_FULL_DATES).dataset(ct())
    assert full.LongitudinalTemporalInformationModified == "UNMODIFIED" and full.StudyDate == ct().StudyDate


def test_modified_dates_one_shift_per_patient() -> None:
    deid = make(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES)
    src = ct()
    src.AcquisitionDateTime = "20040119071000.123+0100"
    out = deid.dataset(src)
    days = deid.shift_days(str(src.PatientID))
    assert 1 <= days <= 3650
    assert out.StudyDate == dates.shift_da(src.StudyDate, days) != src.StudyDate
    assert out.ContentDate == dates.shift_da(src.ContentDate, days)
    assert out.AcquisitionDateTime.endswith("071000.123+0100")
    assert out.StudyTime == src.StudyTime  # TM kept: a whole-day shift
    assert make(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES).shift_days("SOMEONE ELSE") != days
    assert make(Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, key=b"f" * 32).shift_days(str(src.PatientID)) != days


def test_date_shift_arithmetic() -> None:
    assert dates.shift_da("20240301", 1) == "20240229"
    assert dates.shift_da("20240301\\20240302", 2) == "20240228\\20240229"
    assert dates.shift_da("2024", 400) == "2022"
    assert dates.shift_dt("20240101120000.5-0500", 1) == "20231231120000.5-0500"
    assert dates.shift_da("garbage", 3) == "19000101"


@dataclass
class _Crosswalk:
    pairs: list[tuple[str, str, str]]

    def record(self, kind: str, original: str, pseudonym: str) -> None:
        self.pairs.append((kind, original, pseudonym))


def test_pseudonyms_and_crosswalk_recorded_once() -> None:
    walk = _Crosswalk([])
    deid = Deidentifier(DeidSettings(Profile.parse("basic+retain-longitudinal-modified-dates"), key=KEY), walk)
    src = ct()
    src.AccessionNumber = "ACC-DOE-1"
    out1, out2 = deid.dataset(src), deid.dataset(src)
    assert out1.PatientID == out2.PatientID and len(out1.PatientID) == 16
    assert out1.PatientName == "ANON^" + out1.PatientID
    assert out1.AccessionNumber and out1.AccessionNumber != "ACC-DOE-1"
    kinds = sorted(k for k, _, _ in walk.pairs)
    assert kinds == ["accession_number", "date_shift_days", "patient_id", "patient_name", "study_uid"]
    assert ("study_uid", src.StudyInstanceUID, out1.StudyInstanceUID) in walk.pairs
    assert ("patient_id", src.PatientID, out1.PatientID) in walk.pairs


def _sr() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.9.77"
    ds.PatientName = "DOE^JOHN"
    ds.PatientID = "DOE123"
    ds.StudyDescription = "CT CHEST DOE 20240101"
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "121071", "DCM", "Finding"
    text.ConceptNameCodeSequence = Sequence([concept])
    text.TextValue = "Mr DOE has a nodule, call 5551234"
    ds.ContentSequence = Sequence([text])
    return ds


def test_content_sequence_d_keeps_structure_with_dummies() -> None:
    out = make().dataset(_sr())
    item = out.ContentSequence[0]
    assert item.ValueType == "TEXT" and item.RelationshipType == "CONTAINS"
    assert item.ConceptNameCodeSequence[0].CodeValue == "121071"  # concepts name things, not people
    assert item.TextValue == "ANONYMIZED"


def test_uids_in_a_d_sequence_follow_retain_uids() -> None:
    src = _sr()
    src.ContentSequence[0].ReferencedSOPClassUID = "1.2.826.0.1.3680043.9.999"  # not listed: a private class
    assert make().dataset(src).ContentSequence[0].ReferencedSOPClassUID.startswith("2.25.")
    kept = make(Option.RETAIN_UIDS).dataset(src).ContentSequence[0].ReferencedSOPClassUID
    assert kept == "1.2.826.0.1.3680043.9.999"


def test_clean_structured_content_and_descriptors() -> None:
    out = make(Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_DESCRIPTORS).dataset(_sr())
    assert out.ContentSequence[0].TextValue == "Mr * has a nodule, call *"
    assert out.StudyDescription == "CT CHEST * *"


def test_identification_code_sequence_d_replaces_codes() -> None:
    src = ct()
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "DOE-42", "L", "John Doe's badge"
    src.PersonIdentificationCodeSequence = Sequence([code])
    out = make().dataset(src)
    assert out.PersonIdentificationCodeSequence[0].CodeMeaning == "ANONYMIZED"
    assert out.PersonIdentificationCodeSequence[0].CodeValue == "ANONYMIZED"
    assert "InstitutionCodeSequence" not in make().dataset(_with_institution(src))  # X/Z/D, Type 3 in CT
    kept = make(Option.RETAIN_INSTITUTION_IDENTITY).dataset(_with_institution(src))
    assert kept.InstitutionCodeSequence[0].CodeMeaning == "Doe Hospital"


def _with_institution(src: Dataset) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "DOEHOSP", "L", "Doe Hospital"
    src.InstitutionCodeSequence = Sequence([code])
    return src


def test_references_remapped_alike_and_registered_uids_kept() -> None:
    src = ct()
    ref = Dataset()  # RT Referenced Frame of Reference > Study > Series > Contour Image: not listed, kept
    ref.ReferencedSOPClassUID = src.SOPClassUID
    ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = src.SeriesInstanceUID
    series.ContourImageSequence = Sequence([ref])
    study = Dataset()
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = src.FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([study])
    src.ReferencedFrameOfReferenceSequence = Sequence([frame])
    src.SourceImageSequence = Sequence([ref])  # X/Z/U*, Type 3 in CT: removed
    deid = make()
    out = deid.dataset(src)
    new = deid.uid(src.SOPInstanceUID)
    assert out.SOPInstanceUID == new and "SourceImageSequence" not in out
    got = out.ReferencedFrameOfReferenceSequence[0]
    assert got.FrameOfReferenceUID == out.FrameOfReferenceUID == deid.uid(src.FrameOfReferenceUID)
    got_series = got.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert got_series.SeriesInstanceUID == out.SeriesInstanceUID
    assert got_series.ContourImageSequence[0].ReferencedSOPInstanceUID == new
    assert got_series.ContourImageSequence[0].ReferencedSOPClassUID == src.SOPClassUID
    assert deid.uid("1.2.840.10008.1.2.1") == "1.2.840.10008.1.2.1"
    assert len(new) <= 64 and new != make(key=b"z" * 32).uid(src.SOPInstanceUID)
    assert make(Option.RETAIN_UIDS).dataset(src).SOPInstanceUID == src.SOPInstanceUID


class _Rules(PixelRules):
    """A pixel rule set that records what it saw and blanks nothing (the real one is another part)."""

    seen: list[str] = []

    def clean(self, ds: Dataset, *, match: Dataset | None = None) -> bool:
        src = ds if match is None else match
        _Rules.seen.append(str(src.get("Modality", "")))
        if src.get("BurnedInAnnotation") == "YES":
            raise HeldBack("burned in, no rule")
        return True


def test_clean_pixel_data_calls_the_rules() -> None:
    deid = make(Option.CLEAN_PIXEL_DATA, pixel_rules=_Rules())
    out = deid.dataset(ct())
    assert _Rules.seen[-1] == "CT" and out.BurnedInAnnotation == "NO"
    src = ct()
    src.BurnedInAnnotation = "YES"
    with pytest.raises(HeldBack):
        deid.dataset(src)


def test_errors() -> None:
    with pytest.raises(DeidError):
        Deidentifier(DeidSettings(key=b""))
    with pytest.raises(DeidError):
        make().part10(b"not dicom at all" * 10)
    with pytest.raises(DeidError):
        make().part10(b"")


def test_safe_private_sequence_in_implicit_vr_is_recursed() -> None:
    """HOLOGIC (7E01,xx10) is a safe SQ: in implicit VR it reads as raw bytes, still walked."""
    src = ct()
    block = src.private_block(0x7E01, "HOLOGIC, Inc.", create=True)
    item = Dataset()
    item.PatientName = "DOE^JOHN"
    item.add_new(0x00280010, "US", 64)
    block.add_new(0x10, "SQ", Sequence([item]))
    block.add_new(0x11, "SQ", Sequence([]))
    src.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    buf = io.BytesIO()
    src.save_as(buf, implicit_vr=True, little_endian=True)
    data = make(Option.RETAIN_SAFE_PRIVATE).part10(buf.getvalue()).data
    assert b"DOE^JOHN" not in data
    out = pydicom.dcmread(io.BytesIO(data))
    kept = out[0x7E011010]
    assert kept.VR == "SQ" and kept.value[0].Rows == 64


def test_highdicom_is_not_imported_at_run_time() -> None:
    """The IOD types come from the shipped JSON: highdicom stays out of the Lambda layer."""
    import subprocess
    import sys

    code = ("import sys; from pacs.deid import Deidentifier, DeidSettings, Option, Profile; "
            f"d = Deidentifier(DeidSettings(Profile(frozenset(Option) - {{Option.RETAIN_LONGITUDINAL_FULL_DATES, "
            f"Option.CLEAN_PIXEL_DATA}}), key=b'k' * 32)); d.part10(open({str(CT)!r}, 'rb').read()); "
            "assert 'highdicom' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
