"""PS3.15 Table E.1-1, row by row: every one of the 621 rows planted at the top level and at depth 2
inside sequences the profile keeps, de-identified under the basic profile, each option alone and
the row's options together, and the expected action checked (see `expect`)."""

from __future__ import annotations

import json
import re
from itertools import combinations
from pathlib import Path

import pytest
from pacs.deid import Deidentifier, DeidSettings, Option, Profile, iod_types, table
from pacs.deid.options import COLUMNS
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

ROWS = table.rows()
IDS = [r["id"] for r in ROWS]
KEY = b"t" * 32
OUTER, INNER = 0x00082218, 0x00082220  # Anatomic Region (Modifier) Sequence: not in the table, kept
PATTERN_TAGS = {table.CURVES: (0x50000030, 0x50020030), table.OVERLAY_DATA: (0x60003000, 0x60023000),
                table.OVERLAY_COMMENTS: (0x60004000, 0x601E4000)}
UID_RE = re.compile(r"^2\.25\.\d{1,39}$")
ROOT = Path(__file__).resolve().parents[2]


def _vr(tag: int) -> str:
    if tag >> 16 in (0x5000, 0x5002) or (tag & 0xFFFF) == 0x3000:
        return "OB" if tag >> 16 < 0x6000 else "OW"
    if (tag & 0xFFFF) == 0x4000:
        return "LT"
    vr = dictionary_VR(tag)
    return {"US or SS": "US", "OB or OW": "OB", "US or OW": "US"}.get(vr, vr)


def marker(vr: str, tag: int) -> object:
    """An identifying value consistent with `vr` ("DOE" is the patient's surname)."""
    text = {"PN": "DOE^JOHN", "CS": "HEAD DOE", "DA": "20200315", "TM": "101010", "DT": "20200315101010",
            "AS": "045Y", "AE": "DOEAE", "UR": "http://doe.example", "DS": "12.5", "IS": "12",
            "SH": "HEAD DOE 12345", "UI": f"1.2.826.0.1.3680043.9.{tag}"}
    if vr in text:
        return text[vr]
    if vr in ("LO", "LT", "ST", "UT", "UC"):
        return "HEAD DOE 20200315"
    if vr in ("OB", "OW", "UN", "OF", "OD", "OL", "OV"):
        return b"DOEDOE\x01\x02"
    if vr == "SQ":
        item = Dataset()
        item.PatientName = "DOE^JOHN"
        item.CodeValue = "T-A0100"
        return Sequence([item])
    if vr == "AT":
        return 0x00100010
    return 7


def base() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = marker("UI", 0x00020003)  # what Media Storage SOP Instance UID repeats
    ds.PatientName = "DOE^JOHN"
    ds.PatientID = "DOE123"
    return ds


def planted(tags: tuple[int, ...]) -> tuple[Dataset, Dataset]:
    """A data set with `tags` at the top level and at depth 2 (OUTER > INNER > item); the inner item."""
    ds = base()
    inner_item = Dataset()
    for tag in tags:
        vr = _vr(tag)
        ds.add_new(tag, vr, marker(vr, tag))
        inner_item.add_new(tag, vr, marker(vr, tag))
    middle = Dataset()
    middle.add_new(INNER, "SQ", Sequence([inner_item]))
    ds.add_new(OUTER, "SQ", Sequence([middle]))
    return ds, inner_item


def expected(row: dict, options: frozenset[Option], tag: int, parent: int | None) -> str:
    """The action the table gives: an option's value replaces the basic one, C over K; compound
    codes by the IOD Type (checked on their own below)."""
    values = {row[COLUMNS[o]] for o in options if o in COLUMNS and COLUMNS[o] in row}
    code = ("C" if "C" in values else values.pop()) if values else row["basicProfile"]
    if "/" in code:
        code = iod_types.resolve(code, str(CTImageStorage), tag, parent)
    return code


def check(action: str, tag: int, vr: str, out: Dataset, options: frozenset[Option], where: str) -> None:
    original = marker(vr, tag)
    msg = f"{where} {tag:08X} {vr} {action} {sorted(options)}"
    if action == "X":
        assert tag not in out, msg
        return
    assert tag in out, msg
    value = out[tag].value
    if action == "K":
        if vr == "SQ":
            assert len(value) == 1, msg
        else:
            assert value == original, msg
    elif action == "Z":
        if tag in (0x00100010, 0x00100020, 0x00080050):
            assert value and "DOE" not in str(value), msg  # a pseudonym: Z allows a dummy
        else:
            assert value in (None, "", b"") or (vr == "SQ" and len(value) == 0), msg
    elif action in ("D", "U"):
        if vr == "UI":
            assert UID_RE.match(str(value)) and value != original, msg
        elif vr == "SQ":
            assert len(value) >= 1 and "DOE" not in str(value[0].get("PatientName", "")), msg
        else:
            assert value not in (None, "", b"") and value != original and "DOE" not in str(value), msg
    elif action == "C":
        if vr == "SQ":
            assert len(value) == 1 and "DOE" not in str(value[0].get("PatientName", "")), msg
        elif vr in ("DA", "DT"):
            assert value != original and re.fullmatch(r"\d{8}(\d{6})?", str(value)), msg
            if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in options:
                assert str(value) < str(original), msg
        elif vr == "TM" or tag == 0x00080201:  # a time, a UTC offset: kept by a whole-day shift
            assert value == original, msg
        elif vr in ("OB", "OW", "UN"):
            assert value == b"\0" * len(original), msg  # type: ignore[arg-type]
        else:
            assert "DOE" not in str(value) and "12345" not in str(value), msg
            if vr not in ("AE",):
                assert "HEAD" in str(value), msg
    else:
        raise AssertionError(f"unknown action {action}")


def option_sets(row: dict) -> list[frozenset[Option]]:
    """Basic, each option alone, and (when the row has two or more) the row's options together."""
    sets = [frozenset()] + [frozenset({o}) for o in Option]
    own = [o for o in Option if o in COLUMNS and COLUMNS[o] in row]
    both = {Option.RETAIN_LONGITUDINAL_FULL_DATES, Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}
    for n in range(2, len(own) + 1):
        sets += [frozenset(c) for c in combinations(own, n) if not both <= set(c)]
    return sets


def deid(options: frozenset[Option]) -> Deidentifier:
    return _DEIDS.setdefault(options, Deidentifier(DeidSettings(Profile(options), key=KEY)))


_DEIDS: dict[frozenset[Option], Deidentifier] = {}


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_row(row: dict) -> None:
    rid = row["id"]
    if rid == table.PRIVATE:
        return _private_row(row)
    tags = PATTERN_TAGS[rid] if rid in PATTERN_TAGS else (int(rid, 16),)
    for options in option_sets(row):
        ds, _ = planted(tags)
        out = deid(options).dataset(ds)
        inner = out[OUTER].value[0][INNER].value[0]
        for tag in tags:
            vr = _vr(tag)
            top = out.file_meta if tag >> 16 == 2 else out  # file meta: made anew, never in the body
            check(expected(row, options, tag, None), tag, vr, top, options, "top")
            check(expected(row, options, tag, INNER), tag, vr, inner, options, "depth 2")


def _private_row(row: dict) -> None:
    """(gggg,eeee) odd: X, or under Retain Safe Private only the E.3.10-1 safe elements kept."""
    for options in option_sets(row):
        ds = base()
        for target in (ds, _nested(ds)):
            target.add_new(0x00190010, "LO", "GEMS_ACQU_01")
            target.add_new(0x00191023, "DS", "1.5")  # safe: Table Speed
            target.add_new(0x00191050, "LO", "DOE")  # not in the table
            target.add_new(0x00290010, "LO", "DOE CREATOR")
            target.add_new(0x00291010, "LO", "DOE")
            target.add_new(0x00450010, "LO", "GEMS_HELIOS_01")  # a safe creator, none of its elements here
            target.add_new(0x00451050, "LO", "DOE")
        out = deid(options).dataset(ds)
        for target in (out, out[OUTER].value[0][INNER].value[0]):
            kept = {int(e.tag) for e in target if e.tag.is_private}
            if Option.RETAIN_SAFE_PRIVATE in options:
                assert kept == {0x00190010, 0x00191023}, options
            else:
                assert kept == set(), options


def _nested(ds: Dataset) -> Dataset:
    inner_item = Dataset()
    middle = Dataset()
    middle.add_new(INNER, "SQ", Sequence([inner_item]))
    ds.add_new(OUTER, "SQ", Sequence([middle]))
    return inner_item


def test_every_row_is_a_test() -> None:
    """All 621 rows parametrised, none twice, none skipped: the 617 exact tags and 4 patterns."""
    assert len(ROWS) == 621 and len(set(IDS)) == 621
    exact = [r for r in ROWS if r["id"] not in table.PATTERNS]
    assert len(exact) == 617 and all(re.fullmatch(r"[0-9a-f]{8}", r["id"]) for r in exact)
    compiled = table.compile_table(frozenset())
    assert set(compiled.exact) == {int(r["id"], 16) for r in exact}
    assert OUTER not in compiled.exact and INNER not in compiled.exact


def test_precedence_c_over_k_and_unlisted() -> None:
    both = table.compile_table(frozenset({Option.RETAIN_DEVICE_IDENTITY,
                                          Option.RETAIN_LONGITUDINAL_MODIFIED_DATES}))
    assert both.action(0x00181200) == "C"  # Date of Last Calibration: K (device) vs C (dates)
    assert table.compile_table(frozenset({Option.RETAIN_DEVICE_IDENTITY})).action(0x00181200) == "K"
    basic = table.compile_table(frozenset())
    assert basic.action(0x00280010) == "K"  # Rows: standard, not listed
    assert basic.action(0x00280000) == "X"  # group length
    assert basic.action(0x00AA0010) == "X"  # even, not in the dictionary
    assert basic.action(0x60013000) == "X" and basic.action(0x60003000) == "X"
    assert basic.action(0x60000010) == "X" and basic.action(0x50000005) == "X"  # overlay group; a curve
    graphics = table.compile_table(frozenset({Option.CLEAN_GRAPHICS}))
    assert graphics.action(0x60000010) == "K" and graphics.action(0x60003000) == "C"
    assert table.compile_table(frozenset()) is basic  # compiled once


def test_compound_codes_by_iod_type() -> None:
    ct = str(CTImageStorage)
    assert iod_types.resolve("Z/D", ct, 0x00100020) == "Z"  # Patient ID, Type 2
    assert iod_types.resolve("X/Z", ct, 0x00180010) == "Z"  # Contrast/Bolus Agent, Type 2
    assert iod_types.resolve("X/D", ct, 0x00080021) == "X"  # Series Date, Type 3
    assert iod_types.resolve("X/D", ct, 0x00080080, 0x00080096) == "D"  # Institution Name, 1C in a sequence
    assert iod_types.resolve("X/Z/U*", ct, 0x00081140) == "X"  # Referenced Image Sequence, Type 3
    assert iod_types.resolve("X/Z/D", "1.2.3.999", 0x00080080) == "X"  # unknown SOP class: the first
    sr = "1.2.840.10008.5.1.4.1.1.88.22"
    assert iod_types.resolve("Z/D", sr, 0x00100020) == "Z"


def test_iod_types_json_is_a_fresh_generation() -> None:
    pytest.importorskip("highdicom")
    import importlib.util
    spec = importlib.util.spec_from_file_location("deid_types", ROOT / "tools" / "deid_types.py")
    assert spec and spec.loader
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    shipped = (ROOT / "layers" / "pacs" / "deid" / "data" / "iod-types.json").read_text()
    assert shipped == tool.render(tool.generate())
    assert len(shipped) < 400_000 and json.loads(shipped)["sop_classes"][str(CTImageStorage)] == "ct-image"


def test_safe_private_table() -> None:
    """Table E.3.10-1 as shipped: 479 rows, odd groups, known rows present, block-relative match."""
    from pacs.deid import private

    rows = private.safe_list()
    assert len(rows) == 479 and all(group & 1 for _, group, _ in rows)
    assert ("GEMS_ACQU_01", 0x0019, 0x23) in rows and ("SIEMENS MR HEADER", 0x0019, 0x0C) in rows
    assert private.is_safe("GEMS_ACQU_01 ", 0x00191123) and private.is_safe("GEMS_ACQU_01", 0x00194223)
    assert private.is_safe("GEMS_ACQU_01", 0x00191024)  # xx24 Mid Scan Time: safe too
    assert not private.is_safe("GEMS_ACQU_01", 0x00191050) and not private.is_safe("OTHER", 0x00191023)
    assert private.safe_vr("HOLOGIC, Inc.", 0x7E011010) == "SQ"
