"""Cross-check with two independent anonymizers from PyPI, dicognito 0.19 and pydicom/deid 0.4
(default recipe `deid.dicom`, private tags removed), on shared cases: where both follow PS3.15
Annex E for an attribute, the three agree.

Agreement asserted: no output keeps the original Patient's Name, Patient ID, Birth Date,
Accession Number, Referring Physician, Study ID, Operators' Name, Patient's Address, Other Patient
IDs; Pixel Data untouched; Manufacturer (not in Table E.1-1) kept; ours and dicognito replace the
Study/Series/SOP Instance/Frame of Reference UIDs consistently across the instances of a series
and shift every date of one patient by one offset (ours under Retain Longitudinal with Modified
Dates); ours and deid remove private attributes and set Patient Identity Removed YES.

Differences, and why (not asserted of the peers; ours is checked against the table):
- dicognito replaces names, addresses, institution and station with realistic fakes where Annex E
  says X or Z (Institution Name is X/Z/D, Type 3 in CT → X): ours removes or empties.
- dicognito shifts dates (and times) by default; the basic profile empties them (Z) or removes them
  (X); ours shifts only under Retain Longitudinal Temporal Information with Modified Dates, by whole
  days, times kept (E.3.6).
- dicognito keeps private attributes; Annex E removes them unless safe and retained (E.3.10).
- dicognito and deid keep Study Description and Device Serial Number: Annex E removes them (X)
  unless Clean Descriptors / Retain Device Identity.
- deid's default recipe keeps Institution Name and Address and Station Name (Annex E: X/Z/D, X,
  X/Z/D) and removes the instance UIDs altogether (Annex E: U, Type 1: replaced, not removed).
- dicognito does not set Patient Identity Removed (it writes De-identification Method DICOGNITO).
"""

from __future__ import annotations

import copy
import io
import warnings
from datetime import date
from pathlib import Path

import pydicom
import pytest
from pacs.deid import Deidentifier, DeidSettings, Profile
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

pytestmark = pytest.mark.interop

IDENTIFYING = {"PatientName": "DOE^JOHN", "PatientID": "DOE123", "PatientBirthDate": "19700101",
               "AccessionNumber": "ACC123", "ReferringPhysicianName": "WHO^DOCTOR", "StudyID": "ST77",
               "OperatorsName": "OPS^X", "PatientAddress": "2 Doe Road", "OtherPatientIDs": "OTHER1"}
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def _case(n: int) -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for key, value in IDENTIFYING.items():
        setattr(ds, key, value)
    ds.InstitutionName, ds.StudyDescription, ds.DeviceSerialNumber = "Doe Hospital", "HEAD DOE", "SN42"
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.9.5151.{n}"
    ds.StudyDate, ds.ContentDate = f"2020031{n}", f"2020041{n}"
    return ds


def _ours(ds: Dataset, profile: str = "basic") -> Dataset:
    return Deidentifier(DeidSettings(Profile.parse(profile), key=b"p" * 32)).dataset(ds)


def _dicognito(cases: list[Dataset]) -> list[Dataset]:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer(seed="shared-case")
    out = []
    for ds in cases:
        copy_ = copy.deepcopy(ds)
        anonymizer.anonymize(copy_)
        out.append(copy_)
    return out


def _deid(cases: list[Dataset], tmp: Path) -> list[Dataset]:
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers

    paths = []
    for n, ds in enumerate(cases):
        path = tmp / f"{n}.dcm"
        ds.save_as(path)
        paths.append(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(replace_identifiers(dicom_files=paths, deid=DeidRecipe(), save=False, remove_private=True))


def test_agreement_where_both_follow_annex_e(tmp_path: Path) -> None:
    cases = [_case(1), _case(2)]
    ours, dico, deid = [_ours(c) for c in cases], _dicognito(cases), _deid(cases, tmp_path)
    for outputs in (ours, dico, deid):
        for src, out in zip(cases, outputs, strict=True):
            for key, value in IDENTIFYING.items():
                assert value not in str(out.get(key, "")), key
            assert out.PixelData == src.PixelData
            assert out.Manufacturer == src.Manufacturer
    for outputs in (ours, dico):
        for key in UIDS:
            new = [str(o.get(key, "")) for o in outputs]
            assert all(n and n != str(c.get(key)) for n, c in zip(new, cases, strict=True)), key
            same = key != "SOPInstanceUID"
            assert (new[0] == new[1]) is same, key  # one series: shared UIDs stay shared
    for outputs in (ours, deid):
        assert all(not any(e.tag.is_private for e in o) for o in outputs)
        assert all(o.PatientIdentityRemoved == "YES" for o in outputs)
    # Ours follows the table where the peers do not (see the docstring).
    assert all("InstitutionName" not in o and "StudyDescription" not in o and "DeviceSerialNumber" not in o
               for o in ours)
    assert all(o.StudyDate == "" for o in ours)


def test_one_date_offset_per_patient_like_dicognito() -> None:
    cases = [_case(1), _case(2)]
    ours = [_ours(c, "basic+retain-longitudinal-modified-dates") for c in cases]
    for outputs in (ours, _dicognito(cases)):
        offsets = {_day(c.StudyDate) - _day(o.StudyDate) for c, o in zip(cases, outputs, strict=True)}
        offsets |= {_day(c.ContentDate) - _day(o.ContentDate) for c, o in zip(cases, outputs, strict=True)}
        assert len(offsets) == 1 and offsets.pop() != 0


def _day(text: str) -> int:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8])).toordinal()


def test_outputs_are_written_by_all(tmp_path: Path) -> None:
    """Every output of the shared case is a writable, readable Part 10 object."""
    case = _case(3)
    for out in (_ours(case), *_dicognito([case]), *_deid([case], tmp_path)):
        buf = io.BytesIO()
        out.save_as(buf)
        assert pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True).Modality == "CT"
