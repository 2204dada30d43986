"""The DICOM JSON Model (PS3.18 Annex F): fast encoding of pydicom datasets, and decoding back.

`to_dicom_json` walks a dataset once. Elements still in their raw, undecoded form (the common case
right after `dcmread`) are decoded straight from their bytes, without building pydicom `DataElement`
objects and without converting them inside the dataset; sequences of defined length are parsed
here too. Anything unusual (UN, private tags of implicit VR files, ambiguous VRs, ISO 2022 escapes,
an item with its own Specific Character Set, malformed values, custom pydicom hooks) goes through
pydicom's own conversion (`ds[tag]`, for a whole top-level sequence). The output equals pydicom's
`Dataset.to_json_dict` except where the latter departs from Annex F or from this module's bulk data
policy:

* empty components of a multi-valued element are ``null`` (F.2.5); pydicom gives ``""`` for strings,
  ``{"Alphabetic": ""}`` for PN and fails on empty DS/IS components;
* PN objects hold only the non-empty component groups; pydicom always writes ``"Alphabetic"`` and
  may write empty ``"Ideographic"``/``"Phonetic"``;
* an SQ without items is ``{"vr": "SQ"}`` (no "Value", F.2.5); pydicom writes ``"Value": []``;
* group length elements (gggg,0000) and group 0002 are never written;
* ambiguous VRs that pydicom could not resolve are written as a concrete VR (OW, US or SS);
* bulk data is decided on the value length in bytes, see `to_dicom_json`; pydicom compares the
  length with 3/4 of its threshold (the base64 size) and only for binary VRs;
* values that cannot be decoded (e.g. a DS of "1,5") are dropped with a warning, leaving
  ``{"vr": vr}``, where pydicom raises.
"""

from __future__ import annotations

import base64
import logging
import struct
import sys
from collections.abc import Callable, Iterable, Mapping, MutableSequence
from io import BufferedIOBase
from typing import Any

import orjson
from pydicom import config
from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.fileutil import buffer_length
from pydicom.hooks import hooks, raw_element_value, raw_element_vr
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, STANDARD_VR, PersonName, format_number_as_ds

__all__ = [
    "BINARY_VRS",
    "PATH_SEPARATOR",
    "PIXEL_DATA_TAGS",
    "BulkDataUri",
    "BulkDataUriHandler",
    "DicomJson",
    "dumps",
    "from_dicom_json",
    "to_dicom_json",
]

logger = logging.getLogger(__name__)

DicomJson = dict[str, dict[str, Any]]
"""A DICOM JSON Model object: 8 upper-case hex digit tag -> {"vr": ..., "Value" | "InlineBinary" | ...}."""

BulkDataUri = Callable[[str], str]
"""Gives the BulkDataURI of the element at an attribute path ("7FE00010", "00400275/0/00081032")."""

BulkDataUriHandler = Callable[[str], Any]
"""Gives the value of an element from its BulkDataURI (for `from_dicom_json`)."""

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # Float, Double Float, Pixel Data
PATH_SEPARATOR = "/"

_LATIN1 = "latin-1"  # pydicom's default_encoding "iso8859"
_NATIVE_LITTLE = sys.byteorder == "little"
_LUT_DESCRIPTOR_TAGS = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})
_AMBIGUOUS_VRS = frozenset({"OB or OW", "US or OW", "US or SS or OW", "US or SS"})
_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})
_INT_VRS = frozenset({"SL", "SS", "SV", "UL", "US", "UV"})
_FLOAT_VRS = frozenset({"FL", "FD"})
# Value sizes in bytes of fixed-size VRs, to estimate a converted value's length.
_VALUE_SIZES = {"AT": 4, "FD": 8, "FL": 4, "SL": 4, "SS": 2, "SV": 8, "UL": 4, "US": 2, "UV": 8}

Values = list[Any]


class _Undecodable(Exception):
    """The raw value needs pydicom's own conversion."""


# --- raw (undecoded) values, following pydicom.values converters -----------------------------------


def _components(parts: list[str]) -> Values:
    """Single value: [] if empty; multiple values: empty components become None."""
    if len(parts) == 1:
        return parts if parts[0] else []
    return [p or None for p in parts]


def _decode_text(data: bytes, encodings: list[str]) -> str:
    """Decode a text value like pydicom's decode_bytes when no ISO 2022 escape is present."""
    if b"\x1b" in data:
        raise _Undecodable
    return data.decode(encodings[0])


def _raw_string(data: bytes, little: bool, enc: list[str]) -> Values:  # AS CS DA DT TM
    return _components(data.decode(_LATIN1).rstrip(" \x00").split("\\"))


def _raw_ae(data: bytes, little: bool, enc: list[str]) -> Values:
    return _components([p.strip() for p in data.decode(_LATIN1).split("\\")])


def _raw_ui(data: bytes, little: bool, enc: list[str]) -> Values:
    return _components(data.decode(_LATIN1).rstrip("\x00 ").split("\\"))


def _raw_ur(data: bytes, little: bool, enc: list[str]) -> Values:
    value = data.decode(_LATIN1).rstrip()
    return [value] if value else []


def _raw_text(data: bytes, little: bool, enc: list[str]) -> Values:  # LO SH UC
    return _components([p.rstrip("\x00 ") for p in _decode_text(data, enc).split("\\")])


def _raw_single_text(data: bytes, little: bool, enc: list[str]) -> Values:  # LT ST UT
    value = _decode_text(data, enc).rstrip("\x00 ")
    return [value] if value else []


def _pn(value: str) -> dict[str, str] | None:
    """The PN object of a decoded name: its non-empty component groups, None if there are none."""
    if "=" not in value:
        return {"Alphabetic": value} if value else None
    return _pn_groups(value.split("="))


def _pn_groups(groups: Iterable[str]) -> dict[str, str] | None:
    names = ("Alphabetic", "Ideographic", "Phonetic")
    obj = {name: group for name, group in zip(names, groups, strict=False) if group}
    return obj or None


def _raw_pn(data: bytes, little: bool, enc: list[str]) -> Values:
    return [_pn(p) for p in _decode_text(data.rstrip(b"\x00 "), enc).split("\\")]


def _float_or_none(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return float(value)


def _int_or_none(value: Any) -> int | None:
    """An IS/integer value as int; like pydicom, a non-integral IS string is truncated."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return int(value)
    except ValueError:
        return int(float(value))


def _raw_ds(data: bytes, little: bool, enc: list[str]) -> Values:
    text = data.decode(_LATIN1).strip().rstrip(" \x00")
    if not text:
        return []
    parts = text.split("\\")
    try:
        return [float(p) for p in parts]
    except ValueError:
        return [_float_or_none(p) for p in parts]


def _raw_is(data: bytes, little: bool, enc: list[str]) -> Values:
    parts = data.decode(_LATIN1).rstrip(" \x00").split("\\")
    try:
        return [int(p) for p in parts]
    except ValueError:
        return [_int_or_none(p) for p in parts]


_NUMBER_CODES = {"FD": "d", "FL": "f", "SL": "i", "SS": "h", "SV": "q", "UL": "I", "US": "H", "UV": "Q"}


def _raw_numbers(code: str, size: int) -> Callable[[bytes, bool, list[str]], Values]:
    """Decoder of binary numbers with struct/memoryview format `code` of `size` bytes."""

    def decode(data: bytes, little: bool, enc: list[str]) -> Values:
        if little == _NATIVE_LITTLE:
            return memoryview(data).cast(code).tolist()  # type: ignore[call-overload]  # TypeError: bad length
        return list(struct.unpack(f"{'<' if little else '>'}{len(data) // size}{code}", data))

    return decode


_raw_words = _raw_numbers("H", 2)


def _raw_at(data: bytes, little: bool, enc: list[str]) -> Values:
    if len(data) % 4:
        raise _Undecodable
    words = _raw_words(data, little, enc)
    return [f"{g:04X}{e:04X}" for g, e in zip(words[::2], words[1::2], strict=True)]


_RAW_DECODERS: dict[str, Callable[[bytes, bool, list[str]], Values]] = {
    "AE": _raw_ae,
    "AS": _raw_string,
    "AT": _raw_at,
    "CS": _raw_string,
    "DA": _raw_string,
    "DS": _raw_ds,
    "DT": _raw_string,
    "FD": _raw_numbers("d", 8),
    "FL": _raw_numbers("f", 4),
    "IS": _raw_is,
    "LO": _raw_text,
    "LT": _raw_single_text,
    "PN": _raw_pn,
    "SH": _raw_text,
    "SL": _raw_numbers("i", 4),
    "SS": _raw_numbers("h", 2),
    "ST": _raw_single_text,
    "SV": _raw_numbers("q", 8),
    "TM": _raw_string,
    "UC": _raw_text,
    "UI": _raw_ui,
    "UL": _raw_numbers("I", 4),
    "UR": _raw_ur,
    "US": _raw_words,
    "UT": _raw_single_text,
    "UV": _raw_numbers("Q", 8),
}
_RAW_BINARY_VRS = BINARY_VRS - {"UN"}  # raw UN goes through pydicom (replace_un_with_known_vr)


# --- converted values (DataElement.value) ----------------------------------------------------------


def _as_list(value: Any) -> list[Any] | MutableSequence[Any] | tuple[Any, ...]:
    if isinstance(value, MultiValue | list | tuple):
        return value
    if hasattr(value, "tolist") and getattr(value, "ndim", None):  # numpy array (use_DS_numpy etc.)
        return value.tolist()  # type: ignore[no-any-return]
    return [value]


def _text(value: Any) -> str | None:
    if not value:
        return None
    if type(value) is str:
        return value
    if isinstance(value, bytes):
        return value.decode(_LATIN1)
    return str(value)  # UID, DA/DT/TM objects (datetime_conversion) give their DICOM string


def _encode_strings(value: Any) -> Values:
    return [_text(v) for v in _as_list(value)]


def _encode_pn(value: Any) -> Values:
    out: Values = []
    for name in _as_list(value):
        if isinstance(name, PersonName):
            out.append(_pn_groups(name.components))
        elif isinstance(name, bytes):
            out.append(_pn(name.decode(_LATIN1)))
        else:
            out.append(_pn(str(name)) if name is not None else None)
    return out


def _encode_floats(value: Any) -> Values:
    values = _as_list(value)
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return [_float_or_none(v) for v in values]


def _encode_ints(value: Any) -> Values:
    values = _as_list(value)
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        return [_int_or_none(v) for v in values]


def _at(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value):
        return None
    return f"{value if isinstance(value, int) else Tag(value):08X}"


def _encode_at(value: Any) -> Values:
    return [_at(v) for v in _as_list(value)]


_ENCODERS: dict[str, Callable[[Any], Values]] = {vr: _encode_strings for vr in _STRING_VRS}
_ENCODERS.update({vr: _encode_ints for vr in _INT_VRS | {"IS"}})
_ENCODERS.update({vr: _encode_floats for vr in _FLOAT_VRS | {"DS"}})
_ENCODERS.update({"PN": _encode_pn, "AT": _encode_at})


def _value_length(vr: str, value: Any) -> int:
    """Length in bytes (characters for text) of an encoded value, without padding."""
    if isinstance(value, str):
        return len(value)
    values = _as_list(value)
    size = _VALUE_SIZES.get(vr)
    if size is not None:
        return size * len(values)
    return sum(len(str(v)) for v in values if v is not None) + len(values) - 1


def _concrete_vr(vr: str, value: Any) -> str:
    """A concrete VR for an ambiguous one pydicom could not resolve."""
    if value is None or isinstance(value, bytes | bytearray | memoryview | BufferedIOBase):
        return "OW"
    values = [v for v in _as_list(value) if isinstance(v, int)]
    return "SS" if any(v < 0 for v in values) else "US"


def _read_buffer(buffer: BufferedIOBase) -> bytes:
    position = buffer.tell()
    try:
        buffer.seek(0)
        return buffer.read()
    finally:
        buffer.seek(position)


_HEADER = {True: struct.Struct("<HHI"), False: struct.Struct(">HHI")}  # tag, item/implicit length
_U16 = {True: struct.Struct("<H"), False: struct.Struct(">H")}
_U32 = {True: struct.Struct("<I"), False: struct.Struct(">I")}
_VRS = {vr.encode(): str(vr) for vr in STANDARD_VR}
_LONG_LENGTH_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)

_KEYS: dict[int, str] = {}


def _key(tag: int) -> str:
    """The JSON key of `tag`, cached (formatting is a noticeable share of the encoding time)."""
    key = f"{tag:08X}"
    if len(_KEYS) < 100_000:
        _KEYS[tag] = key
    return key


# --- encoder -----------------------------------------------------------------------------------------


class _Encoder:
    """One `to_dicom_json` call: the bulk data policy and whether raw values may be decoded here."""

    __slots__ = ("bulk_data_uri", "fast", "threshold")

    def __init__(self, threshold: int | None, bulk_data_uri: BulkDataUri | None) -> None:
        self.threshold = threshold
        self.bulk_data_uri = bulk_data_uri
        # Custom pydicom hooks or callbacks change how raw values are read: leave those to pydicom.
        self.fast = (
            config.data_element_callback is None
            and hooks.raw_element_vr is raw_element_vr
            and hooks.raw_element_value is raw_element_value
            and not hooks.raw_element_kwargs
        )

    def dataset(self, ds: Dataset, prefix: str, include: Callable[[int], bool] | None) -> DicomJson:
        """JSON of a pydicom Dataset; `prefix` is the bulk data path of its item ("" at the top)."""
        out: DicomJson = {}
        elements: Mapping[Any, Any] = ds._dict
        encodings: list[str] | None = None
        # Plain int keys: sorting BaseTags would call their Python-level __lt__.
        for tag, element in sorted(zip(map(int, elements), elements.values(), strict=True)):
            if not tag & 0xFFFF or tag >> 16 == 2:
                continue
            if include is not None and not include(tag):
                continue
            key = _KEYS.get(tag) or _key(tag)
            if type(element) is RawDataElement:
                if self.fast:
                    if encodings is None:
                        charset = ds.original_character_set or ds._character_set
                        encodings = [charset] if isinstance(charset, str) else list(charset)
                    obj = self.raw(tag, element, encodings, prefix + key)
                    if obj is not None:
                        out[key] = obj
                        continue
                element = ds[tag]
            out[key] = self.converted(element, prefix + key)
        return out

    def raw(self, tag: int, raw: RawDataElement, encodings: list[str], path: str) -> dict[str, Any] | None:
        """JSON of a raw element decoded from its bytes, or None to leave it to pydicom."""
        _, vr, length, data, _, implicit, little, _, is_buffered = raw
        if vr is None:  # implicit VR
            entry = DicomDictionary.get(tag)
            if entry is None or tag & 0x10000:
                return None
            vr = entry[0]
        if data is None and length == 0:  # empty (None with a length is a deferred read)
            data = b""
        if type(data) is not bytes or is_buffered:
            return None
        if vr == "SQ":
            if not data:
                return {"vr": vr}
            try:
                items, _ = self.items(data, 0, len(data), little, implicit, encodings, path)
            except (_Undecodable, ValueError, TypeError, UnicodeError, LookupError, struct.error):
                return None
            return {"vr": vr, "Value": items} if items else {"vr": vr}
        try:
            return self.value(tag, vr, data, little, encodings, path)
        except (_Undecodable, ValueError, TypeError, UnicodeError, LookupError, struct.error):
            return None

    def value(
        self, tag: int, vr: str, data: bytes, little: bool, encodings: list[str], path: str
    ) -> dict[str, Any]:
        """JSON of an encoded value other than SQ; raises _Undecodable (or a decoding error) for pydicom."""
        if vr in _RAW_BINARY_VRS:
            return self.binary(vr, tag, path, data)
        decode = _RAW_DECODERS.get(vr)
        if decode is None or tag in _LUT_DESCRIPTOR_TAGS:  # UN, ambiguous, US/SS fix-up of pydicom
            raise _Undecodable
        if not data:
            return {"vr": vr}
        if self.bulk_data_uri is not None and self.threshold is not None and len(data) > self.threshold:
            return {"vr": vr, "BulkDataURI": self.bulk_data_uri(path)}
        code = _NUMBER_CODES.get(vr)
        if code is not None and little == _NATIVE_LITTLE:  # inlined _raw_numbers
            return {"vr": vr, "Value": memoryview(data).cast(code).tolist()}  # type: ignore[call-overload]
        values = decode(data, little, encodings)
        if not values or (len(values) == 1 and values[0] is None):
            return {"vr": vr}
        return {"vr": vr, "Value": values}

    def items(
        self, buf: bytes, pos: int, end: int | None, little: bool, implicit: bool, enc: list[str], path: str
    ) -> tuple[list[DicomJson], int]:
        """Parse the items of an encoded sequence from `pos` to `end` (None: to its delimiter)."""
        header = _HEADER[little]
        items: list[DicomJson] = []
        size = len(buf)
        while end is None or pos < end:
            if pos + 8 > size:
                raise _Undecodable
            group, element, length = header.unpack_from(buf, pos)
            pos += 8
            if group != 0xFFFE:
                raise _Undecodable
            if element == 0xE0DD and end is None:  # sequence delimiter
                return items, pos
            if element != 0xE000:
                raise _Undecodable
            prefix = f"{path}{PATH_SEPARATOR}{len(items)}{PATH_SEPARATOR}"
            if length == 0xFFFFFFFF:
                item, pos = self.item(buf, pos, None, little, implicit, enc, prefix)
            else:
                item, _ = self.item(buf, pos, pos + length, little, implicit, enc, prefix)
                pos += length
            items.append(item)
        if pos != end:
            raise _Undecodable
        return items, pos

    def item(
        self, buf: bytes, pos: int, end: int | None, little: bool, implicit: bool, enc: list[str], prefix: str
    ) -> tuple[DicomJson, int]:
        """Parse an encoded item data set from `pos` to `end` (None: to its delimiter)."""
        header = _HEADER[little]
        short_length = _U16[little]
        long_length = _U32[little]
        out: DicomJson = {}
        size = len(buf) if end is None else end
        while end is None or pos < end:
            if pos + 8 > size:
                raise _Undecodable
            if implicit:
                group, element, length = header.unpack_from(buf, pos)
                pos += 8
                vr = None
            else:
                group, element, _ = header.unpack_from(buf, pos)
                vr = _VRS.get(buf[pos + 4 : pos + 6])
                if vr is None:  # not a VR: pydicom may assume a switch to implicit VR
                    raise _Undecodable
                if vr in _LONG_LENGTH_VRS:
                    if pos + 12 > size:
                        raise _Undecodable
                    length = long_length.unpack_from(buf, pos + 8)[0]
                    pos += 12
                else:
                    length = short_length.unpack_from(buf, pos + 6)[0]
                    pos += 8
            tag = group << 16 | element
            if group == 0xFFFE:
                if element == 0xE00D and end is None:  # item delimiter
                    return out, pos
                raise _Undecodable
            if vr is None:
                entry = DicomDictionary.get(tag)
                if entry is None or group & 1:
                    raise _Undecodable
                vr = entry[0]
            if tag == 0x00080005:  # an item with its own character set: left to pydicom
                raise _Undecodable
            key = _KEYS.get(tag) or _key(tag)
            path = prefix + key
            if length == 0xFFFFFFFF:
                if vr != "SQ":  # UN holding a sequence, encapsulated pixel data
                    raise _Undecodable
                items, pos = self.items(buf, pos, None, little, implicit, enc, path)
                obj = {"vr": vr, "Value": items} if items else {"vr": vr}
            else:
                start = pos
                pos += length
                if pos > size:
                    raise _Undecodable
                if vr == "SQ":
                    items, _ = self.items(buf, start, pos, little, implicit, enc, path)
                    obj = {"vr": vr, "Value": items} if items else {"vr": vr}
                else:
                    obj = self.value(tag, vr, buf[start:pos], little, enc, path)
            if element and group != 2:
                out[key] = obj
        return out, pos

    def converted(self, element: DataElement, path: str) -> dict[str, Any]:
        """JSON of a pydicom DataElement."""
        vr = element.VR
        if type(vr) is not str:
            vr = str(vr)  # pydicom.valuerep.VR enum member
        value = element.value
        if vr == "SQ":
            if not value:
                return {"vr": vr}
            prefix = path + PATH_SEPARATOR
            items = [
                self.dataset(item, f"{prefix}{index}{PATH_SEPARATOR}", None)
                for index, item in enumerate(value)
            ]
            return {"vr": vr, "Value": items}
        if vr in _AMBIGUOUS_VRS:
            vr = _concrete_vr(vr, value)
        if value is None:
            return {"vr": vr}
        encode = _ENCODERS.get(vr, _encode_strings)
        try:
            if vr in BINARY_VRS:
                return self.binary(vr, element.tag, path, value)
            if (
                self.bulk_data_uri is not None
                and self.threshold is not None
                and _value_length(vr, value) > self.threshold
            ):
                return {"vr": vr, "BulkDataURI": self.bulk_data_uri(path)}
            values = encode(value)
        except (TypeError, ValueError, OverflowError) as exc:
            logger.warning("Dropping undecodable value of %s (VR %s): %s", path, vr, exc)
            return {"vr": vr}
        if not values or (len(values) == 1 and values[0] is None):
            return {"vr": vr}
        return {"vr": vr, "Value": values}

    def binary(self, vr: str, tag: int, path: str, value: Any) -> dict[str, Any]:
        """InlineBinary, BulkDataURI, or nothing for a value above the threshold without a URI."""
        is_buffer = isinstance(value, BufferedIOBase)
        if not is_buffer and hasattr(value, "tobytes"):  # a numpy array
            value = value.tobytes()
        length = buffer_length(value) if is_buffer else len(value)
        if not length:
            return {"vr": vr}
        threshold = self.threshold
        if self.bulk_data_uri is not None:
            if tag in PIXEL_DATA_TAGS or (threshold is not None and length > threshold):
                return {"vr": vr, "BulkDataURI": self.bulk_data_uri(path)}
        elif threshold is not None and length > threshold:
            return {"vr": vr}
        data = _read_buffer(value) if is_buffer else value
        return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("ascii")}


def to_dicom_json(
    ds: Dataset,
    *,
    bulk_data_threshold: int | None = 1024,
    bulk_data_uri: BulkDataUri | None = None,
    include: Callable[[int], bool] | None = None,
) -> DicomJson:
    """Encode `ds` in the DICOM JSON Model (PS3.18 F.2).

    `include(tag)` selects the top-level elements (all when None); file meta (group 0002) and group
    length elements are never written. Bulk data, by the value length in bytes:

    * with `bulk_data_uri`, Pixel Data (7FE0,0010), Float and Double Float Pixel Data, and any other
      value (except SQ) longer than `bulk_data_threshold` become
      ``{"vr": vr, "BulkDataURI": bulk_data_uri(path)}``, where `path` is the tag, or
      ``"<seq tag>/<item index>/<tag>"`` (recursively) inside sequences;
    * without it, binary values (OB OD OF OL OV OW UN) are InlineBinary (base64), except that those
      longer than `bulk_data_threshold` are omitted as ``{"vr": vr}``;
    * a `bulk_data_threshold` of None means no limit: nothing goes to a URI by size, nothing omitted.

    `bulk_data_uri` should depend on the path only: it may be asked twice for a path inside a sequence
    that falls back to pydicom. Raw elements are decoded without converting them inside `ds` (see the
    module docstring).
    """
    return _Encoder(bulk_data_threshold, bulk_data_uri).dataset(ds, "", include)


# --- decoding ----------------------------------------------------------------------------------------


def _ds_string(value: float) -> str:
    """A DS string (at most 16 characters) for a JSON number."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = repr(value)
    return text if len(text) <= 16 else format_number_as_ds(value)


def _pn_string(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, dict):  # not conformant, but seen in the wild
        return str(value)
    groups = [value.get("Alphabetic") or "", value.get("Ideographic") or "", value.get("Phonetic") or ""]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _from_json_value(vr: str, values: list[Any], handler: BulkDataUriHandler | None) -> Any:
    if vr == "SQ":
        return [from_dicom_json(item or {}, bulk_data_uri_handler=handler) for item in values]
    if not values:
        return empty_value_for_VR(vr)
    out: Values
    if vr == "PN":
        out = [_pn_string(v) for v in values]
    elif vr == "AT":
        out = [int(v, 16) if v else None for v in values]
    elif vr in _INT_VRS or vr == "IS":
        out = [None if v is None else int(v) for v in values]
    elif vr == "DS":
        out = [None if v is None else _ds_string(float(v)) for v in values]
    elif vr in _FLOAT_VRS:
        out = [None if v is None else float(v) for v in values]
    else:
        out = ["" if v is None else v for v in values]
    return out[0] if len(out) == 1 else out


def _first(value: Any) -> Any:
    """The InlineBinary/BulkDataURI string, which some writers put in a list (as in PS3.18 F.4)."""
    return value[0] if isinstance(value, list) else value


def from_dicom_json(
    obj: DicomJson | str | bytes, *, bulk_data_uri_handler: BulkDataUriHandler | None = None
) -> Dataset:
    """Decode a DICOM JSON Model object (or its JSON text) into a pydicom Dataset.

    InlineBinary is decoded; a BulkDataURI element gets ``bulk_data_uri_handler(uri)`` as its value,
    or None (VM 0) without a handler. Null entries of multi-valued elements become "" for strings and
    None for numbers. DS numbers are written back as DS strings ("512", not "512.0").
    """
    attrs: DicomJson = orjson.loads(obj) if isinstance(obj, str | bytes) else obj
    ds = Dataset()
    for key, attr in attrs.items():
        vr = attr["vr"]
        if "Value" in attr:
            value = _from_json_value(vr, attr["Value"], bulk_data_uri_handler)
        elif "InlineBinary" in attr:
            value = base64.b64decode(_first(attr["InlineBinary"]))
        elif "BulkDataURI" in attr:
            uri = _first(attr["BulkDataURI"])
            value = bulk_data_uri_handler(uri) if bulk_data_uri_handler is not None else None
        else:
            value = empty_value_for_VR(vr)
        ds.add(DataElement(int(key, 16), vr, value, validation_mode=config.IGNORE))
    return ds


def dumps(obj: DicomJson | list[DicomJson]) -> bytes:
    """Serialise DICOM JSON (one object, or a list of them as in QIDO-RS/metadata responses)."""
    return orjson.dumps(obj)
