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
from typing import Any, BinaryIO

import pydicom
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import ENCODED_VR
from pydicom.tag import BaseTag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    PrivateTransferSyntaxes,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

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
    """The header of a stored Part 10 object (stops before Pixel Data, reads nothing after it).

    What `pydicom.dcmread(fp, stop_before_pixels=True)` returns — a FileDataset of raw (undecoded)
    elements, `fp` left at the start of the pixel data element (or at the end) — read here in a few
    large reads and one walk over the element headers, several times faster than pydicom's
    element-by-element reads. A sequence of undefined length is kept raw too (its items' bytes, as
    if its length were defined). Anything unusual (no preamble, deflated, big endian, a VR pydicom
    would have to guess, an undefined length other than a sequence's, a malformed header) is read
    by pydicom itself."""
    start = fp.tell()
    try:
        ds = _FastHeader(fp, start).read()
    except (_Unusual, struct.error, InvalidDataset, ValueError, KeyError):
        ds = None
    if ds is not None:
        return ds
    fp.seek(start)
    return pydicom.dcmread(fp, stop_before_pixels=True)


class _Unusual(Exception):
    """The fast header reader leaves this object to pydicom."""


_VR_NAMES = {vr: vr.decode() for vr in ENCODED_VR}
_VR_LONG = {vr for vr, name in _VR_NAMES.items() if name in EXPLICIT_VR_LENGTH_32}
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_FIRST_READ = 16384
_IMPLICIT_HEAD = struct.Struct("<HHI").unpack_from
_EXPLICIT_HEAD = struct.Struct("<HH2sH").unpack_from
_U32 = struct.Struct("<I").unpack_from
_Raw = RawDataElement
_SPECIFIC_CHARACTER_SET = 0x00080005


def _empty(vr: str | None) -> Any:
    """The value pydicom gives an empty raw element."""
    return empty_value_for_VR(vr, raw=True)


class _FastHeader:
    """One `read_header` call: the bytes read so far from `fp` (from `start`) and the walk over them."""

    def __init__(self, fp: BinaryIO, start: int) -> None:
        self.fp = fp
        self.start = start
        self.buf = fp.read(_FIRST_READ)
        self.eof = len(self.buf) < _FIRST_READ

    def more(self) -> None:
        """Read further (at least as much again as read so far); _Unusual at the end of the object."""
        if self.eof:
            raise _Unusual
        want = max(len(self.buf), _FIRST_READ)
        data = self.fp.read(want)
        self.eof = len(data) < want
        self.buf += data

    def need(self, end: int) -> None:
        """Make `buf` hold the bytes up to `end` (_Unusual when the object is shorter)."""
        while end > len(self.buf):
            self.more()

    def read(self) -> FileDataset:
        self.need(132)
        if self.buf[128:132] != b"DICM":
            raise _Unusual
        meta: dict[BaseTag, Any] = {}
        pos = 132
        while True:
            if pos + 8 > len(self.buf) and not self.eof:
                self.need(pos + 8)
            if pos + 8 > len(self.buf) or struct.unpack_from("<H", self.buf, pos)[0] != 0x0002:
                break
            tag, vr, length, pos = self.element(pos, False)
            if length == _UNDEFINED:
                raise _Unusual
            self.need(pos + length)
            meta[BaseTag(tag)] = self.raw(tag, vr, length, pos, False)
            pos += length
        syntax_elem = meta.get(BaseTag(_TRANSFER_SYNTAX))
        if syntax_elem is None or not syntax_elem.value:
            raise _Unusual
        syntax = syntax_elem.value.decode("ascii", "replace").rstrip("\x00 ")
        if syntax in (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, *PrivateTransferSyntaxes):
            raise _Unusual
        implicit = syntax == ImplicitVRLittleEndian
        elements: dict[BaseTag, Any] = {}
        end_at = None  # where the header ends: the pixel data element (None: the end of the object)
        self.need(pos + 8)
        if (self.buf[pos + 4 : pos + 6] in _VR_NAMES) == implicit or self.buf[pos : pos + 2] == b"\0\0":
            raise _Unusual  # pydicom guesses the encoding, or reads a command set first
        start, buf, n = self.start, self.buf, len(self.buf)
        while True:
            # the common case inline: a whole element header and value within what was read
            if pos + 12 <= n:
                if implicit:
                    group, elem, length = _IMPLICIT_HEAD(buf, pos)
                    vr, value_at = None, pos + 8
                else:
                    group, elem, code, length = _EXPLICIT_HEAD(buf, pos)
                    vr = _VR_NAMES.get(code)
                    if vr is None:
                        raise _Unusual  # pydicom would guess (an implicit switch, an unknown VR)
                    if code in _VR_LONG:
                        length = _U32(buf, pos + 8)[0]
                        value_at = pos + 12
                    else:
                        value_at = pos + 8
                tag = group << 16 | elem
                if value_at + length <= n and group != 0xFFFE and tag not in _PIXEL_TAGS:
                    key = BaseTag(tag)
                    elements[key] = _Raw(
                        key, vr, length,
                        buf[value_at : value_at + length] if length else _empty(vr),
                        start + value_at, implicit, True,
                    )
                    pos = value_at + length
                    continue
            # anything else: the end, more to read, pixel data, an undefined length
            if pos + 8 > n:
                if self.eof and pos == n:
                    break
                self.need(pos + 8)
                buf, n = self.buf, len(self.buf)
            element_at = pos
            tag, vr, length, pos = self.element(pos, implicit)
            buf, n = self.buf, len(self.buf)
            if tag in _PIXEL_TAGS:
                end_at = element_at
                break
            if tag >> 16 == 0xFFFE:
                raise _Unusual  # a delimiter at the top level
            if length == _UNDEFINED:
                if vr is None:
                    entry = DicomDictionary.get(tag)
                    vr = entry[0] if entry is not None else None
                if vr != "SQ":
                    raise _Unusual
                end = self.sequence_end(pos, implicit)
                buf, n = self.buf, len(self.buf)
                elements[BaseTag(tag)] = _Raw(
                    BaseTag(tag), "SQ", end - 8 - pos, buf[pos : end - 8], start + pos, implicit, True)
                pos = end
                continue
            self.need(pos + length)
            buf, n = self.buf, len(self.buf)
            elements[BaseTag(tag)] = self.raw(tag, vr, length, pos, implicit)
            pos += length
        if not elements and end_at is None:
            raise _Unusual  # no data set: pydicom does not go by the transfer syntax then
        self.fp.seek(self.start + (len(self.buf) if end_at is None else end_at))
        file_meta = FileMetaDataset(meta)
        file_meta.set_original_encoding(False, True, "iso8859")
        ds = FileDataset(self.fp, elements, self.buf[:128], file_meta, implicit, True)
        ds.set_original_encoding(implicit, True, ds._character_set)
        return ds

    def element(self, pos: int, implicit: bool) -> tuple[int, str | None, int, int]:
        """(tag, VR or None, length, value position) of the element header at `pos`."""
        buf = self.buf
        group, elem = struct.unpack_from("<HH", buf, pos)
        tag = group << 16 | elem
        if implicit or group == 0xFFFE:
            return tag, None, struct.unpack_from("<I", buf, pos + 4)[0], pos + 8
        code = buf[pos + 4 : pos + 6]
        vr = _VR_NAMES.get(code)
        if vr is None:
            raise _Unusual  # pydicom would guess (implicit switch, unknown VR)
        if code in _VR_LONG:
            self.need(pos + 12)
            return tag, vr, struct.unpack_from("<I", self.buf, pos + 8)[0], pos + 12
        return tag, vr, struct.unpack_from("<H", buf, pos + 6)[0], pos + 8

    def raw(self, tag: int, vr: str | None, length: int, pos: int, implicit: bool) -> Any:
        value = self.buf[pos : pos + length] if length else _empty(vr)
        return RawDataElement(BaseTag(tag), vr, length, value, self.start + pos, implicit, True)

    def sequence_end(self, pos: int, implicit: bool) -> int:
        """Where the undefined-length sequence whose items start at `pos` ends (after its delimiter)."""
        while True:
            try:
                return _walk_items(memoryview(self.buf), pos, True, implicit, False)
            except (InvalidDataset, struct.error):
                self.more()  # cut short by what was read so far (_Unusual at the end of the object)


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
    check_uid(ts, "TransferSyntaxUID", strict=True)
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


#: Sequences of undefined length nested deeper than this are refused (InvalidDataset, 0xC000): the walk,
#: and pydicom's readers after it, recurse per level; real objects stay far below it.
MAX_SEQUENCE_DEPTH = 128


def _walk(
    buf: memoryview, pos: int, end: int, little: bool, implicit: bool, until: int | None,
    capture: dict[int, str] | None = None, depth: int = 0,
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
                pos = _walk_items(buf, pos, little or vr == b"UN", implicit or vr == b"UN", False, depth + 1)
        else:
            if pos + length > n:
                raise _truncated(pos)
            if capture is not None and tag in _WANTED:
                capture[tag] = _text(buf[pos : pos + length])
            pos += length
    return pos


def _walk_items(
    buf: memoryview, pos: int, little: bool, implicit: bool, encapsulated: bool, depth: int = 1
) -> int:
    if depth > MAX_SEQUENCE_DEPTH:
        raise InvalidDataset(f"sequences nested more than {MAX_SEQUENCE_DEPTH} levels deep")
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
            pos = _walk(buf, pos, n, little, implicit, until=_ITEM_END, depth=depth)
        else:
            if pos + length > n:
                raise _truncated(pos)
            pos += length
