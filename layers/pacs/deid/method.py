"""What the de-identified object says about its de-identification (PS3.15 E.1.1, PS3.3 C.7.1.1):
Patient Identity Removed YES, De-identification Method (text) and its Code Sequence (CID 7050:
113100 Basic Application Confidentiality Profile plus one code per option), Longitudinal Temporal
Information Modified (0028,0303)."""

from __future__ import annotations

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from pacs.deid.options import Option, Profile
from pacs.deid.walk import make

BASIC = ("113100", "Basic Application Confidentiality Profile")
#: CID 7050 De-identification Method (DCM).
CODES: dict[Option, tuple[str, str]] = {
    Option.CLEAN_PIXEL_DATA: ("113101", "Clean Pixel Data Option"),
    Option.CLEAN_GRAPHICS: ("113103", "Clean Graphics Option"),
    Option.CLEAN_STRUCTURED_CONTENT: ("113104", "Clean Structured Content Option"),
    Option.CLEAN_DESCRIPTORS: ("113105", "Clean Descriptors Option"),
    Option.RETAIN_LONGITUDINAL_FULL_DATES: (
        "113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: (
        "113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    Option.RETAIN_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    Option.RETAIN_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: ("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: ("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: ("113112", "Retain Institution Identity Option"),
}


def codes(profile: Profile) -> list[tuple[str, str]]:
    """113100 then the options' codes, in code order."""
    return [BASIC, *sorted(CODES[o] for o in profile.options if o in CODES)]


def method_text(profile: Profile) -> list[str]:
    """De-identification Method (LO, VM 1-n): the profile, then each option's name."""
    return [f"{BASIC[1]} ({profile.name})"[:64], *(meaning for _, meaning in codes(profile)[1:])]


def stamp(ds: Dataset, profile: Profile) -> None:
    """Write the de-identification attributes into `ds` (in its encoding: `walk.make`)."""
    put = ds._dict
    put[BaseTag(0x00120062)] = make(ds, 0x00120062, "CS", "YES")
    put[BaseTag(0x00120063)] = make(ds, 0x00120063, "LO", "\\".join(method_text(profile)))
    items = []
    for value, meaning in codes(profile):
        item = Dataset(parent_encoding=ds._parent_encoding)
        item.set_original_encoding(ds._read_implicit, ds._read_little, ds._read_charset)
        item._dict[BaseTag(0x00080100)] = make(ds, 0x00080100, "SH", value)
        item._dict[BaseTag(0x00080102)] = make(ds, 0x00080102, "SH", "DCM")
        item._dict[BaseTag(0x00080104)] = make(ds, 0x00080104, "LO", meaning)
        items.append(item)
    put[BaseTag(0x00120064)] = DataElement(0x00120064, "SQ", Sequence(items))
    if Option.RETAIN_LONGITUDINAL_FULL_DATES in profile:
        temporal = "UNMODIFIED"
    elif Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in profile:
        temporal = "MODIFIED"
    else:
        temporal = "REMOVED"
    put[BaseTag(0x00280303)] = make(ds, 0x00280303, "CS", temporal)
