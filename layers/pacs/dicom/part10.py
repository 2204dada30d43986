"""Part 10 parsing for ingest: one walk over the element headers, validate, detect truncation.

`parse_part10` is the one parse of the ingest path: it walks every element header of the file meta
and the data set (no value decoded but the few UIDs it needs), which both finds the UIDs and proves
the data set complete. Deflated data sets are inflated by pydicom instead. Bad input raises
InvalidDataset or InvalidUID with a reason; nothing is stored.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from pacs.dicom.uids import check_uid
from pacs.errors import InvalidDataset

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UR", b"UT", b"UN", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


_SOP_CLASS, _SOP_INSTANCE, _STUDY, _SERIES = 0x00080016, 0x00080018, 0x0020000D, 0x0020000E
_WANTED = {_SOP_CLASS: "SOPClassUID", _SOP_INSTANCE: "SOPInstanceUID", _STUDY: "StudyInstanceUID",
           _SERIES: "SeriesInstanceUID"}
_TRANSFER_SYNTAX, _MEDIA_SOP_INSTANCE = 0x00020010, 0x00020003


@dataclass(frozen=True, slots=True)
class Part10Header:
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str


def read_header(fp: BinaryIO) -> Dataset:
    """The header of a stored Part 10 object (stops before Pixel Data, reads nothing after it)."""
    return pydicom.dcmread(fp, stop_before_pixels=True)


def parse_part10(data: bytes | bytearray | memoryview) -> Part10Header:
    """Parse and validate a Part 10 object received for storage."""
    buf = memoryview(data)
    if len(buf) < 132 or bytes(buf[128:132]) != b"DICM":
        raise InvalidDataset("not a DICOM Part 10 object (no 'DICM' prefix after the preamble)")
    meta: dict[int, str] = {}
    try:
        offset = _read_meta(buf, meta)
    except struct.error:
        raise InvalidDataset("the file meta information is truncated") from None
    ts = meta.get(_TRANSFER_SYNTAX, "")
    if not ts:
        raise InvalidDataset("the file meta has no Transfer Syntax UID (0002,0010)")
    check_uid(ts, "TransferSyntaxUID")
    found: dict[int, str] = {}
    if ts == DeflatedExplicitVRLittleEndian:
        found = _uids_by_pydicom(buf)
    else:
        try:
            check_complete(buf, offset, ts, capture=found)
        except struct.error:
            raise InvalidDataset("data set is truncated") from None
    for tag, keyword in _WANTED.items():
        if not found.get(tag):
            raise InvalidDataset(f"required attribute {keyword} is missing or empty")
    header = Part10Header(
        transfer_syntax_uid=ts,
        sop_class_uid=check_uid(found[_SOP_CLASS], "SOPClassUID"),
        sop_instance_uid=check_uid(found[_SOP_INSTANCE], "SOPInstanceUID"),
        study_uid=check_uid(found[_STUDY], "StudyInstanceUID"),
        series_uid=check_uid(found[_SERIES], "SeriesInstanceUID"),
    )
    media_uid = meta.get(_MEDIA_SOP_INSTANCE, "")
    if media_uid and media_uid != header.sop_instance_uid:
        raise InvalidDataset(
            f"SOPInstanceUID {header.sop_instance_uid} differs from the request's {media_uid}"
        )
    return header


def _text(raw: memoryview) -> str:
    return bytes(raw).decode("ascii", "replace").rstrip("\x00 ")


def _uids_by_pydicom(buf: memoryview) -> dict[int, str]:
    try:
        ds = read_header(io.BytesIO(buf))  # type: ignore[arg-type]
    except Exception as exc:  # pydicom raises many kinds on garbage
        raise InvalidDataset(f"cannot parse the data set: {exc}") from exc
    return {tag: str(ds.get(keyword, "") or "") for tag, keyword in _WANTED.items()}


def _read_meta(buf: memoryview, out: dict[int, str]) -> int:
    """Read group 0002 (explicit VR little endian) into `out`; return where the data set starts."""
    pos = 132
    while pos + 8 <= len(buf):
        group, elem = struct.unpack_from("<HH", buf, pos)
        if group != 0x0002:
            return pos
        vr = bytes(buf[pos + 4 : pos + 6])
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", buf, pos + 8)
            pos += 12
        else:
            (length,) = struct.unpack_from("<H", buf, pos + 6)
            pos += 8
        if pos + length > len(buf):
            raise InvalidDataset("the file meta information is truncated")
        if vr == b"UI":
            out[group << 16 | elem] = _text(buf[pos : pos + length])
        pos += length
    return pos


def check_complete(
    buf: memoryview, offset: int, transfer_syntax: str, capture: dict[int, str] | None = None
) -> None:
    """Walk every element header of the data set; raise InvalidDataset when it is cut short.

    The values of the top-level UIDs ingest needs are put in `capture`."""
    little = transfer_syntax != ExplicitVRBigEndian
    implicit = transfer_syntax == ImplicitVRLittleEndian
    if not implicit and offset + 6 <= len(buf) and not bytes(buf[offset + 4 : offset + 6]).isalpha():
        implicit = True  # encoded implicit despite the meta (pydicom reads these too)
    end = _walk(buf, offset, len(buf), little, implicit, until=None, capture=capture)
    if end != len(buf):
        raise InvalidDataset(f"data set is truncated or malformed near byte {end}")


def _truncated(pos: int) -> InvalidDataset:
    return InvalidDataset(f"data set is truncated: an element at byte {pos} runs past the end")


def _walk(
    buf: memoryview, pos: int, end: int, little: bool, implicit: bool, until: int | None,
    capture: dict[int, str] | None = None,
) -> int:
    """Skip elements from `pos` to `end` (or to the delimiter tag `until`); return the position after."""
    order = "<" if little else ">"
    n = len(buf)
    while pos < end:
        if pos + 8 > n:
            raise _truncated(pos)
        group, elem = struct.unpack_from(order + "HH", buf, pos)
        tag = group << 16 | elem
        if group == 0xFFFE:  # item and delimiters are always implicit
            (length,) = struct.unpack_from(order + "I", buf, pos + 4)
            pos += 8
            if tag == until:
                return pos
            raise InvalidDataset(f"unexpected delimiter ({group:04X},{elem:04X}) at byte {pos - 8}")
        if implicit:
            (length,) = struct.unpack_from(order + "I", buf, pos + 4)
            vr = b"SQ" if length == _UNDEFINED else b"??"
            pos += 8
        else:
            vr = bytes(buf[pos + 4 : pos + 6])
            if vr in _LONG_VRS:
                if pos + 12 > n:
                    raise _truncated(pos)
                (length,) = struct.unpack_from(order + "I", buf, pos + 8)
                pos += 12
            else:
                (length,) = struct.unpack_from(order + "H", buf, pos + 6)
                pos += 8
        if length == _UNDEFINED:
            if tag == 0x7FE00010:
                pos = _walk_items(buf, pos, little, implicit, encapsulated=True)
            else:  # SQ, or UN of undefined length (implicit VR little endian inside)
                pos = _walk_items(buf, pos, little or vr == b"UN", implicit or vr == b"UN", False)
        else:
            if pos + length > n:
                raise _truncated(pos)
            if capture is not None and tag in _WANTED:
                capture[tag] = _text(buf[pos : pos + length])
            pos += length
    return pos


def _walk_items(buf: memoryview, pos: int, little: bool, implicit: bool, encapsulated: bool) -> int:
    order = "<" if little else ">"
    n = len(buf)
    while True:
        if pos + 8 > n:
            raise _truncated(pos)
        group, elem = struct.unpack_from(order + "HH", buf, pos)
        (length,) = struct.unpack_from(order + "I", buf, pos + 4)
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise InvalidDataset(f"expected an item tag at byte {pos - 8}")
        if length == _UNDEFINED and not encapsulated:
            pos = _walk(buf, pos, n, little, implicit, until=_ITEM_END)
        else:
            if pos + length > n:
                raise _truncated(pos)
            pos += length
