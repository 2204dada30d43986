"""Part 10 writing for de-identified data sets, fast: kept RawDataElements (most of an instance,
Pixel Data included) are copied to the output as the bytes they were read as, with no per-element
pydicom machinery; sequences are written with undefined lengths (always valid, PS3.5 7.5); only
the replaced elements go through pydicom's element writer. Little endian syntaxes only (explicit or
implicit VR, encapsulated pixel data included); anything else (big endian, deflate, a data set read
in another encoding than its syntax) is written by `pydicom.dcmwrite`.
"""

from __future__ import annotations

import io
import struct

import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import ImplicitVRLittleEndian

_LONG = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"})
_UNDEFINED = 0xFFFFFFFF
_ITEM = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
_ITEM_END = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
_SEQ_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_TAG = struct.Struct("<HH")


def encode(ds: Dataset) -> bytes:
    """`ds` (with `file_meta` and `preamble`) as a Part 10 object."""
    syntax = ds.file_meta.TransferSyntaxUID
    implicit = syntax == ImplicitVRLittleEndian
    if not (syntax.is_little_endian and not syntax.is_deflated) or ds._read_implicit is not implicit or (
            ds._read_little is False):
        return _pydicom(ds)
    parts = [ds.preamble or b"\0" * 128, b"DICM", _meta(ds.file_meta)]
    _write(ds, parts, implicit, ds._parent_encoding)
    return b"".join(parts)


def _meta(meta: FileMetaDataset) -> bytes:
    """File meta (PS3.10 7.1) with the group length and version; pydicom's writer when unusual."""
    body = [_TAG.pack(2, 1) + b"OB\0\0" + (2).to_bytes(4, "little") + b"\0\1"]
    for element, vr in ((0x0002, "UI"), (0x0003, "UI"), (0x0010, "UI"), (0x0012, "UI"), (0x0013, "SH"),
                        (0x0016, "AE")):
        value = meta.get(0x00020000 | element)
        if value is None:
            continue
        data = str(value.value).encode("ascii")
        if len(data) & 1:
            data += b"\0" if vr == "UI" else b" "
        body.append(_TAG.pack(2, element) + vr.encode() + len(data).to_bytes(2, "little") + data)
    if set(meta.keys()) - {0x00020000 | e for e in (0, 1, 2, 3, 0x10, 0x12, 0x13, 0x16)}:
        buf = DicomBytesIO()
        buf.is_little_endian, buf.is_implicit_VR = True, False
        write_file_meta_info(buf, meta, enforce_standard=True)
        return buf.getvalue()
    rest = b"".join(body)
    return _TAG.pack(2, 0) + b"UL" + (4).to_bytes(2, "little") + len(rest).to_bytes(4, "little") + rest


def _pydicom(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _write(ds: Dataset, parts: list[bytes], implicit: bool, parent: str | list[str]) -> None:
    charset = ds._dict.get(0x00080005)  # type: ignore[call-overload]
    encodings = parent
    if charset is not None:
        value = charset.value
        if isinstance(value, bytes):
            value = [v.strip() for v in value.decode("ascii", "replace").split("\\")]
        encodings = convert_encodings(value) if value else parent
    for tag in sorted(ds._dict):
        if tag & 0xFFFF == 0 and tag >> 16 > 6:
            continue  # retired group lengths are not written (PS3.5 7.2)
        elem = ds._dict[tag]
        if isinstance(elem, RawDataElement) and elem.is_little_endian and elem.is_implicit_VR is implicit \
                and (implicit or (elem.VR and len(elem.VR) == 2)) and isinstance(elem.value, bytes):
            _raw(elem, parts, implicit)
        elif elem.VR == "SQ" and isinstance(elem, DataElement):
            _sequence(elem, parts, implicit, encodings)
        else:
            buf = DicomBytesIO()
            buf.is_little_endian, buf.is_implicit_VR = True, implicit
            if isinstance(elem, RawDataElement):
                elem = pydicom.dataelem.convert_raw_data_element(elem, encoding=encodings, ds=ds)
                if elem.VR == "SQ":
                    _sequence(elem, parts, implicit, encodings)
                    continue
            write_data_element(buf, elem, encodings)
            parts.append(buf.getvalue())


def _raw(elem: RawDataElement, parts: list[bytes], implicit: bool) -> None:
    tag = elem.tag
    value: bytes = elem.value  # type: ignore[assignment]
    undefined = elem.length == _UNDEFINED
    length = _UNDEFINED if undefined else len(value)
    head = _TAG.pack(tag >> 16, tag & 0xFFFF)
    if implicit:
        parts.append(head + length.to_bytes(4, "little"))
    else:
        vr = str(elem.VR)
        size = b"\0\0" + length.to_bytes(4, "little") if vr in _LONG else length.to_bytes(2, "little")
        parts.append(head + vr.encode() + size)
    parts.append(value)
    if undefined:
        parts.append(_SEQ_END)


def _sequence(elem: DataElement, parts: list[bytes], implicit: bool, encodings: str | list[str]) -> None:
    tag = elem.tag
    head = _TAG.pack(tag >> 16, tag & 0xFFFF)
    parts.append(head + (b"" if implicit else b"SQ\0\0") + b"\xff\xff\xff\xff")
    for item in elem.value:
        parts.append(_ITEM)
        _write(item, parts, implicit, encodings)
        parts.append(_ITEM_END)
    parts.append(_SEQ_END)

