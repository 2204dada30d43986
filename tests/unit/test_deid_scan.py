"""A byte scan: a unique identifying marker in every attribute the basic profile removes or
replaces (all 617 exact rows, curves, overlays), at the top level and at depth 3, in private blocks
and in the preamble; the Part 10 output of part10() holds none of them (ASCII and UID forms)."""

from __future__ import annotations

import io

import pydicom
import pytest
from pacs.deid import Deidentifier, DeidSettings, Profile, table
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

OUTER, MIDDLE, INNER = 0x00082218, 0x00082220, 0x00082228  # anatomy sequences: not listed, kept
_NUMERIC = {"US", "SS", "UL", "SL", "FL", "FD", "AT", "UV", "SV"}


def _vr(tag: int) -> str:
    vr = pydicom.datadict.dictionary_VR(tag)
    return {"US or SS": "US", "OB or OW": "OB", "US or OW": "US"}.get(vr, vr)


def _marker(vr: str, n: int) -> tuple[object, bytes | None]:
    """A value for `vr` and the bytes that betray it in the output (None: a binary number)."""
    if vr in _NUMERIC:
        return 7, None
    if vr == "UI":
        text = f"1.2.826.0.1.3680043.9.7777.{n}"
        return text, text.encode()
    if vr == "DA":
        text = f"1{n:07d}"
        return text, text.encode()
    if vr == "TM":
        text = f"23{n:04d}.{n:06d}"
        return text, text.encode()
    if vr == "DT":
        text = f"1{n:07d}235959.{n:06d}"
        return text, text.encode()
    if vr in ("DS", "IS"):
        text = f"9{n:07d}"
        return text, text.encode()
    if vr == "AS":
        return "099Y", None  # 4 characters cannot be unique; removal is checked by the row tests
    if vr == "SQ":
        item = Dataset()
        item.add_new(0x0040A160, "UT", f"SQMARK{n:05d}Q")  # Text Value: free text, not listed
        return Sequence([item]), f"SQMARK{n:05d}Q".encode()
    if vr in ("OB", "OW", "UN", "OF", "OD", "OL", "OV"):
        return f"BINMARK{n:05d}Q".encode(), f"BINMARK{n:05d}Q".encode()
    text = f"M{n:05d}Q"
    return (text if vr != "CS" else f"M{n:05d}Q"), text.encode()


def _plant(target: Dataset, offset: int, found: list[bytes]) -> None:
    n = offset
    for row in table.rows():
        if row["id"] in table.PATTERNS:
            continue
        tag = int(row["id"], 16)
        if tag in (0x00080016, 0x00080018, 0x00020003) or tag >> 16 == 0:
            continue  # SOP Instance UID (and its file meta copy) replaced, checked via `found`;
            # command elements: spliced in as raw bytes below
        n += 1
        vr = _vr(tag)
        value, betrays = _marker(vr, n)
        target.add_new(tag, vr, value)
        if betrays:
            found.append(betrays)
    for tag, vr in ((0x50000030, "OB"), (0x50020030, "OB"), (0x60003000, "OW"), (0x60004000, "LT"),
                    (0x601E4000, "LT")):
        n += 1
        value, betrays = _marker(vr, n)
        target.add_new(tag, vr, value)
        found.append(betrays)  # type: ignore[arg-type]
    for creator, group in (("GEMS_ACQU_01", 0x0019), ("PRIVMARK CREATOR Q", 0x0029)):
        block = target.private_block(group, creator, create=True)
        block.add_new(0x23, "LO", f"PRIVMARK{n:05d}Q")
        block.add_new(0x50, "OB", f"PRIVBIN{n:05d}QQ".encode())
        found += [f"PRIVMARK{n:05d}Q".encode(), f"PRIVBIN{n:05d}QQ".encode()]
        n += 1
    found.append(b"PRIVMARK CREATOR Q")


def _source() -> tuple[bytes, list[bytes]]:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    found: list[bytes] = [ds.SOPInstanceUID.encode()]
    _plant(ds, 0, found)
    deepest = Dataset()
    _plant(deepest, 5000, found)
    middle, outer = Dataset(), Dataset()
    middle.add_new(INNER, "SQ", Sequence([deepest]))
    outer.add_new(MIDDLE, "SQ", Sequence([middle]))
    ds.add_new(OUTER, "SQ", Sequence([outer]))
    ds.preamble = b"PREAMBLEMARKQ" + b"\1" * 115
    found.append(b"PREAMBLEMARKQ")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    # The two command-group rows, (0000,1000) and (0000,1001): pydicom refuses to write command
    # elements into a Part 10 data set, so they are spliced in as raw bytes where group 0000 goes.
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
    command = b""
    for element, value in ((0x1000, b"1.2.826.0.1.3680043.9.7777.90001\0"),
                           (0x1001, b"1.2.826.0.1.3680043.9.7777.90002\0")):
        command += b"\0\0" + element.to_bytes(2, "little") + b"UI" + len(value).to_bytes(2, "little") + value
        found.append(value[:-1])
    return data[:meta_end] + command + data[meta_end:], found


@pytest.mark.filterwarnings("ignore::UserWarning")  # the markers break some VRs' formats on purpose
def test_no_marker_survives_basic_profile() -> None:
    data, markers = _source()
    assert len(markers) > 1100
    missing_in = [m for m in markers if m not in data]
    assert missing_in == []  # every marker is really in the input
    out = Deidentifier(DeidSettings(Profile(), key=b"s" * 32)).part10(data).data
    left = [m.decode("latin-1") for m in markers if m in out]
    assert left == []
    back = pydicom.dcmread(io.BytesIO(out))
    assert back[OUTER].value[0][MIDDLE].value[0][INNER].value[0]  # depth 3 kept, cleaned
    assert back.PatientIdentityRemoved == "YES"
