"""STOW-RS metadata and bulk data (PS3.18 10.5.1.2.2, 8.6): DICOM JSON instances → Part 10 files.

A request of `multipart/related; type="application/dicom+json"` carries a JSON array of instances
(DICOM JSON Model, PS3.18 Annex F) whose large values are `BulkDataURI`s naming later parts by their
`Content-Location`. The caller spools every bulk part to a file (`BulkData.add`); `rebuild_part10`
then writes one instance as a Part 10 file that goes through the ordinary ingest path.

Pixel Data is never read into memory: the file meta and the attributes before (7FE0,0010) are written
by pydicom, the Pixel Data element header by hand, its value copied from the spooled parts (native:
their bytes; compressed: one fragment per part, i.e. one part per frame, with an empty Basic Offset
Table), then the rare attributes after it. Other bulk data (and InlineBinary) is decoded in memory.

The transfer syntax is the JSON's (0002,0010) if given, else the pixel data part's `transfer-syntax`
media type parameter, else the default of its media type (image/jls → JPEG-LS lossless…), else
Explicit VR Little Endian. Bad input raises InvalidDataset (0xC000) or InvalidUID (0xA900) naming the
instance when its UIDs are known; a body that is not JSON, or not an array, raises MalformedMetadata.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin

import orjson
import pydicom
from pydicom.charset import default_encoding
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from pacs.dicom.frames import MEDIA_TYPES
from pacs.dicom.json_model import from_dicom_json
from pacs.dicom.uids import check_uid
from pacs.errors import InvalidDataset, InvalidUID, PacsError

OCTET_STREAM = "application/octet-stream"
JSON_TYPES = frozenset({"application/dicom+json", "application/json"})
#: The most JSON metadata one request may carry (it is parsed in memory).
MAX_METADATA_BYTES = 64 * 1024 * 1024

#: The default transfer syntax of a bulk data media type (PS3.18 Table 8.7.3-5): the first listed.
DEFAULT_SYNTAX: dict[str, str] = {
    **{media: ts for ts, media in reversed(MEDIA_TYPES.items())},
    OCTET_STREAM: ExplicitVRLittleEndian,
    "image/x-jls": "1.2.840.10008.1.2.4.80",
    "image/x-dicom-rle": "1.2.840.10008.1.2.5",
}
_NATIVE = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_REFUSED: dict[str, str] = {
    ExplicitVRBigEndian: "Explicit VR Big Endian (retired)",
    DeflatedExplicitVRLittleEndian: "Deflated Explicit VR Little Endian",
}
_PIXEL_DATA = 0x7FE00010
_PIXEL_KEY = "7FE00010"
_MAX_LENGTH = 0xFFFFFFFE
_ITEM, _SEQ_END = b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_UIDS = (("00080016", "SOPClassUID"), ("00080018", "SOPInstanceUID"),
         ("0020000D", "StudyInstanceUID"), ("0020000E", "SeriesInstanceUID"))


class MalformedMetadata(PacsError):
    """The metadata part is not a JSON array of objects (HTTP 400; nothing is stored)."""

    http_status = 400


class MetadataTooLarge(PacsError):
    """The JSON metadata of a request exceeds MAX_METADATA_BYTES (HTTP 413; nothing is stored)."""

    http_status = 413


@dataclass(frozen=True, slots=True)
class BulkPart:
    """One spooled bulk data part."""

    path: Path
    media_type: str
    transfer_syntax: str | None = None

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass(slots=True)
class BulkData:
    """The bulk data parts of a request by Content-Location (several parts of one location are the
    frames of one value, in order). Locations and BulkDataURIs match as given or resolved against
    `base` (the request URL), so relative and absolute forms of one URI meet."""

    base: str = ""
    parts: dict[str, list[BulkPart]] = field(default_factory=dict)

    def add(self, location: str, part: BulkPart) -> None:
        self.parts.setdefault(self._key(location), []).append(part)

    def find(self, uri: str) -> list[BulkPart]:
        found = self.parts.get(self._key(uri))
        if not found:
            raise InvalidDataset(f"BulkDataURI {uri[:200]!r} is not the Content-Location of any part")
        return found

    def read(self, uri: str) -> bytes:
        """The value of a (non pixel data) bulk data element, in memory."""
        return b"".join(p.path.read_bytes() for p in self.find(uri))

    def _key(self, uri: str) -> str:
        uri = uri.strip()
        return urljoin(self.base, uri) if self.base else uri


def parse_metadata(parts: Iterable[bytes | bytearray]) -> list[Any]:
    """The instances of the JSON metadata parts (each an array), in order."""
    instances: list[Any] = []
    for data in parts:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise MalformedMetadata(f"the metadata part is not valid JSON: {exc}") from None
        if not isinstance(doc, list):
            raise MalformedMetadata(
                f"the metadata part is a JSON {type(doc).__name__}, not an array of DICOM JSON objects")
        instances += doc
    if not instances:
        raise MalformedMetadata("the request has no instance metadata (an empty or missing JSON part)")
    return instances


def instance_uids(instance: object) -> tuple[str | None, str | None]:
    """(SOP Class UID, SOP Instance UID) of a JSON instance as given, for a failure report."""
    def first(key: str) -> str | None:
        attr = instance.get(key, instance.get(key.lower())) if isinstance(instance, dict) else None
        value = attr.get("Value") if isinstance(attr, dict) else None
        return value[0] if isinstance(value, list) and value and isinstance(value[0], str) else None

    return first("00080016"), first("00080018")


def rebuild_part10(instance: object, bulk: BulkData, out: IO[bytes]) -> None:
    """Write one DICOM JSON instance with its bulk data to `out` as a Part 10 file."""
    sop_class, sop_instance = instance_uids(instance)
    try:
        _rebuild(instance, bulk, out)
    except PacsError as exc:
        exc.sop_class_uid, exc.sop_instance_uid = sop_class, sop_instance
        raise


def _rebuild(instance: object, bulk: BulkData, out: IO[bytes]) -> None:
    if not isinstance(instance, dict):
        raise InvalidDataset(
            f"an instance of the metadata is a JSON {type(instance).__name__}, not an object")
    instance = {str(k).upper(): v for k, v in instance.items()}
    _check_uids(instance)
    attrs = {k: v for k, v in instance.items() if not k.startswith("0002")}
    pixel_attr = attrs.pop(_PIXEL_KEY, None)
    pixels: list[BulkPart] | bytes | None = None
    if isinstance(pixel_attr, dict) and "BulkDataURI" in pixel_attr:
        pixels = bulk.find(_first(pixel_attr["BulkDataURI"]))
    elif pixel_attr is not None:
        attrs[_PIXEL_KEY] = pixel_attr  # InlineBinary (or empty): decoded below like any element
    try:
        ds = from_dicom_json(attrs, bulk_data_uri_handler=bulk.read)
    except PacsError:
        raise
    except Exception as exc:  # KeyError (no "vr"), ValueError (a bad tag or number), TypeError…
        raise InvalidDataset(f"cannot decode the DICOM JSON instance: {type(exc).__name__}: {exc}") from None
    if _PIXEL_DATA in ds:
        inline = ds[_PIXEL_DATA].value
        del ds[_PIXEL_DATA]
        pixels = bytes(inline) if inline else None
    vr = str(pixel_attr.get("vr", "")) if isinstance(pixel_attr, dict) else ""
    ts = _transfer_syntax(instance, pixels)
    header, trailer = Dataset(), Dataset()
    for elem in ds:
        (header if elem.tag < _PIXEL_DATA else trailer).add(elem)
    header.file_meta = meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(ts)
    try:
        pydicom.dcmwrite(out, header, enforce_file_format=True)
    except Exception as exc:  # a value pydicom cannot encode in its VR
        raise InvalidDataset(f"cannot encode the instance: {type(exc).__name__}: {exc}") from None
    if pixels is not None:
        _write_pixel_data(out, ts, vr, pixels, header)
    if len(trailer):
        fp = DicomFileLike(out)
        fp.is_little_endian, fp.is_implicit_VR = True, ts == ImplicitVRLittleEndian
        write_dataset(fp, trailer, header.get("SpecificCharacterSet") or default_encoding)


def _first(value: Any) -> str:
    value = value[0] if isinstance(value, list) and value else value
    if not isinstance(value, str):
        raise InvalidDataset("a BulkDataURI is not a string")
    return value


def _check_uids(instance: dict[str, Any]) -> None:
    for key, keyword in _UIDS:
        attr = instance.get(key)
        value = attr.get("Value") if isinstance(attr, dict) else None
        if not isinstance(value, list) or not value or not value[0]:
            raise InvalidDataset(f"required attribute {keyword} ({key}) is missing or empty")
        if not isinstance(value[0], str):
            raise InvalidUID(f"{keyword} is not a UID: {value[0]!r}")
        check_uid(value[0], keyword)


def _transfer_syntax(instance: dict[str, Any], pixels: list[BulkPart] | bytes | None) -> str:
    parts = pixels if isinstance(pixels, list) else []
    media = {p.media_type for p in parts}
    attr = instance.get("00020010")
    given = attr.get("Value") if isinstance(attr, dict) else None
    if isinstance(given, list) and given and isinstance(given[0], str):
        ts = given[0]
    elif named := {p.transfer_syntax for p in parts if p.transfer_syntax}:
        if len(named) > 1:
            raise InvalidDataset(f"the pixel data parts name several transfer syntaxes: {sorted(named)}")
        ts = named.pop()
    elif media:
        if len(media) > 1:
            raise InvalidDataset(f"the pixel data parts have several media types: {sorted(media)}")
        kind = next(iter(media))
        if kind not in DEFAULT_SYNTAX:
            raise InvalidDataset(f"pixel data of media type {kind} is not supported")
        ts = DEFAULT_SYNTAX[kind]
    else:
        ts = ExplicitVRLittleEndian
    check_uid(ts, "TransferSyntaxUID")
    if ts in _REFUSED:
        raise InvalidDataset(f"STOW-RS bulk data in {_REFUSED[ts]} is not supported")
    if ts in _NATIVE and media - {OCTET_STREAM}:
        raise InvalidDataset(f"pixel data of media type {sorted(media)[0]} in native transfer syntax {ts}")
    return ts


def _native_length(ds: Dataset) -> int | None:
    """The length of native pixel data the Image Pixel attributes call for, if they are all given."""
    try:
        rows, cols, bits = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        samples, frames = int(ds.get("SamplesPerPixel", 1)), int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    pixels = rows * cols * samples * frames
    return (pixels + 7) // 8 if bits == 1 else pixels * (bits // 8)


def _write_pixel_data(
    out: IO[bytes], ts: str, vr: str, pixels: list[BulkPart] | bytes, header: Dataset
) -> None:
    sources: list[BulkPart | bytes] = list(pixels) if isinstance(pixels, list) else [pixels]
    sizes = [len(s) if isinstance(s, bytes) else s.size for s in sources]
    if ts not in _NATIVE:  # encapsulated: one fragment per part (= per frame), empty offset table
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF) + _ITEM + bytes(4))
        for source, size in zip(sources, sizes, strict=True):
            if size + size % 2 > _MAX_LENGTH:
                raise InvalidDataset(f"a frame of {size} bytes is too long for a fragment")
            out.write(_ITEM + struct.pack("<I", size + size % 2))
            _copy(source, out)
            if size % 2:
                out.write(b"\0")
        out.write(_SEQ_END)
        return
    total = sum(sizes)
    expected = _native_length(header)
    if expected is not None and total not in (expected, expected + expected % 2):
        raise InvalidDataset(
            f"the pixel data has {total} bytes; Rows, Columns, Samples per Pixel, Bits Allocated and "
            f"Number of Frames call for {expected}")
    if total + total % 2 > _MAX_LENGTH:
        raise InvalidDataset(f"native pixel data of {total} bytes is too long for one element")
    if vr not in ("OB", "OW"):
        vr = "OW" if int(header.get("BitsAllocated", 16) or 16) > 8 else "OB"
    length = total + total % 2
    if ts == ImplicitVRLittleEndian:
        out.write(struct.pack("<HHI", 0x7FE0, 0x0010, length))
    else:
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, vr.encode(), 0, length))
    for source in sources:
        _copy(source, out)
    if total % 2:
        out.write(b"\0")


def _copy(source: BulkPart | bytes, out: IO[bytes]) -> None:
    if isinstance(source, bytes):
        out.write(source)
        return
    with open(source.path, "rb") as fh:
        shutil.copyfileobj(fh, out, 1 << 20)

