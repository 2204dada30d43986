"""C-FIND (PS3.4 C.4.1) over the catalog: a request identifier in, response identifiers out.

Patient Root and Study Root Query/Retrieve information models, hierarchical queries at the PATIENT,
STUDY, SERIES and IMAGE levels. Matching is `pacs.catalog.matching` (shared with QIDO-RS), run by
the catalog's query methods, so study-level conditions reach the adapters' indexes. Protocol types
stay out: identifiers are pydicom Datasets, failures are `FindFailure(status, comment)`, and the
gateway turns them into C-FIND responses.

- Return keys are exactly those requested, zero-length when unknown; the Query/Retrieve Level, the
  unique keys of the level and of the levels above, and Retrieve AE Title are always returned.
- Keys this archive cannot match on (keys of a lower level, sequences, attributes it does not keep)
  are ignored for matching and flag the request (`FindRequest.unsupported`: Pending 0xFF01).
- Specific Character Set: pydicom decodes the identifier with the request's; a response is encoded
  in the request's when that can represent its values, else in ISO_IR 192 (UTF-8).
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom import config as pydicom_config
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import format_number_as_ds

from pacs.catalog.matching import Condition, condition, matches_all
from pacs.catalog.port import Catalog
from pacs.catalog.records import (
    MODALITIES_IN_STUDY,
    NUMBER_OF_SERIES_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_INSTANCES,
    NUMBER_OF_STUDY_RELATED_SERIES,
    SOP_CLASSES_IN_STUDY,
    DicomJson,
    InstanceRow,
    SeriesRow,
    StudyRow,
    first_value,
)
from pacs.services.query import SERIES_LEVEL, STUDY_LEVEL

#: Failure statuses (PS3.4 C.4.1.1.4).
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC000

SPECIFIC_CHARACTER_SET = 0x00080005
QUERY_RETRIEVE_LEVEL = 0x00080052
RETRIEVE_AE_TITLE = 0x00080054
INSTANCE_AVAILABILITY = 0x00080056
PATIENT_ID = 0x00100020
ISSUER_OF_PATIENT_ID = 0x00100021
STUDY_UID = 0x0020000D
SERIES_UID = 0x0020000E
SOP_UID = 0x00080018
N_PATIENT_STUDIES, N_PATIENT_SERIES, N_PATIENT_INSTANCES = 0x00201200, 0x00201202, 0x00201204

#: Patient-level attributes of the Patient Root model (PS3.4 Table C.6-1) that the catalog keeps
#: (on every study row).
PATIENT_LEVEL = frozenset({"00100010", "00100020", "00100021", "00100030", "00100040", "00101000"})
_PATIENT_AGGREGATES = frozenset(
    f"{t:08X}" for t in (N_PATIENT_STUDIES, N_PATIENT_SERIES, N_PATIENT_INSTANCES)
)
_UTF8 = "ISO_IR 192"


class Model(enum.StrEnum):
    PATIENT_ROOT = "PATIENT"
    STUDY_ROOT = "STUDY"


class Level(enum.StrEnum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


_ORDER = [Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE]
#: The unique key of each level (PS3.4 C.4.1.1.3.1).
UNIQUE_KEY = {
    Level.PATIENT: PATIENT_ID, Level.STUDY: STUDY_UID, Level.SERIES: SERIES_UID, Level.IMAGE: SOP_UID,
}


class FindFailure(Exception):
    """A request this SCP cannot answer: the status (0xA900, 0xC000…) and a comment (LO, ≤ 64)."""

    def __init__(self, status: int, comment: str, offending: int | None = None) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]
        self.offending = offending


@dataclass(frozen=True, slots=True)
class ReturnKey:
    tag: int
    vr: str
    hex: str  # "0010000": the DICOM JSON key


@dataclass(slots=True)
class FindRequest:
    model: Model
    level: Level
    #: Non-universal conditions, split by where they are matched.
    patient: list[Condition] = field(default_factory=list)
    study: list[Condition] = field(default_factory=list)
    series: list[Condition] = field(default_factory=list)
    image: list[Condition] = field(default_factory=list)
    #: The attributes to return, in tag order (level, unique keys and Retrieve AE Title included).
    keys: list[ReturnKey] = field(default_factory=list)
    #: The request's Specific Character Set (empty: the default repertoire).
    charsets: tuple[str, ...] = ()
    #: Some key could not be matched and was ignored (Pending 0xFF01).
    unsupported: bool = False


# --- parsing ------------------------------------------------------------------------------------


def _level_of(tag_hex: str) -> Level:
    """The level an attribute belongs to in the catalog (patient attributes live on studies)."""
    if tag_hex in PATIENT_LEVEL or tag_hex in _PATIENT_AGGREGATES:
        return Level.PATIENT
    if tag_hex in STUDY_LEVEL:
        return Level.STUDY
    if tag_hex in SERIES_LEVEL:
        return Level.SERIES
    return Level.IMAGE


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_text(v) for v in value)
    return str(value)


def _charsets(identifier: Dataset) -> tuple[str, ...]:
    raw = identifier.get("SpecificCharacterSet")
    if not raw:
        return ()
    values = [raw] if isinstance(raw, str) else list(raw)
    return tuple(v.strip() for v in values)


#: An identifier's element as parsing needs it: tag, VR (as received; None when unknown), its value as
#: text (None: zero-length) and, for a sequence, whether any of its items holds something.
Key = tuple[int, str | None, str | None, bool]


_VRS: dict[int, str | None] = {}


def _vr(tag: int) -> str | None:
    """The dictionary VR of a public tag (None: not in the dictionary), remembered."""
    try:
        return _VRS[tag]
    except KeyError:
        try:
            vr: str | None = dictionary_VR(tag)
        except KeyError:
            vr = None
        if len(_VRS) < 65536:
            _VRS[tag] = vr
        return vr


_RETURN_KEYS: dict[tuple[int, str], ReturnKey] = {}


def _return_key(tag: int, vr: str) -> ReturnKey:
    key = _RETURN_KEYS.get((tag, vr))
    if key is None:
        key = ReturnKey(tag, vr, f"{tag:08X}")
        if len(_RETURN_KEYS) < 65536:
            _RETURN_KEYS[(tag, vr)] = key
    return key


def _skipped(tag: int) -> bool:
    """Attributes never matched nor returned: charset and level (read apart), group lengths, the
    command and file meta groups, private attributes."""
    group, elem_no = tag >> 16, tag & 0xFFFF
    return tag in (SPECIFIC_CHARACTER_SET, QUERY_RETRIEVE_LEVEL) or bool(group & 1) or elem_no == 0 \
        or group <= 2


def _dataset_keys(identifier: Dataset) -> Iterator[Key]:
    for key in identifier.keys():  # noqa: SIM118 (a Dataset, not a dict)
        tag = int(key)
        if _skipped(tag):
            continue
        try:
            raw = identifier.get_item(tag)
            if isinstance(raw, RawDataElement) and not raw.length:
                vr, value = raw.VR, None  # a return key only (most of them): nothing to convert
            else:
                elem = identifier[tag]
                vr, value = elem.VR, elem.value
        except Exception as exc:
            raise FindFailure(
                UNABLE_TO_PROCESS, f"({tag >> 16:04X},{tag & 0xFFFF:04X}) undecodable: {exc}", tag
            ) from exc
        if vr == "SQ":
            yield tag, vr, None, bool(value and any(len(item) for item in value))
        else:
            yield tag, vr, _text(value) if value is not None else None, False


def parse_identifier(identifier: Dataset, model: Model) -> FindRequest:
    """Validate a C-FIND identifier against the model and turn it into conditions and return keys;
    FindFailure when it is malformed or does not fit the model."""
    try:
        charsets = _charsets(identifier)
        raw_level = identifier.get("QueryRetrieveLevel")
    except Exception as exc:
        raise FindFailure(UNABLE_TO_PROCESS, f"cannot decode the identifier: {exc}") from exc
    return _request(model, None if raw_level is None else str(raw_level), charsets, _dataset_keys(identifier))


_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
#: Explicit VRs whose values `parse_encoded` leaves to pydicom (numbers, binary, sequences).
_NOT_TEXT = frozenset({
    "IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT", "OB", "OD", "OF", "OL", "OV", "OW",
    "UN", "SQ",
})


def parse_encoded(data: bytes | memoryview, model: Model, *, implicit: bool) -> FindRequest | None:
    """`parse_identifier` straight from an identifier's Little Endian encoding, for the plain
    identifiers queries send (printable ASCII text, empty sequences and numbers, defined lengths);
    None for anything else, which `parse_identifier` (through pydicom) then handles. The same
    FindRequest or FindFailure as `parse_identifier` (tested on both)."""
    keys: list[Key] = []
    charsets: tuple[str, ...] = ()
    level: str | None = None
    n, i, last = len(data), 0, -1
    unpack = struct.unpack_from
    printable = _PRINTABLE.fullmatch
    while i < n:
        if i + 8 > n:
            return None
        if implicit:
            group, elem_no, length = unpack("<HHI", data, i)
            tag = group << 16 | elem_no
            head = 8
            vr: str | None = _vr(tag)
        else:
            group, elem_no, vr_bytes, length = unpack("<HH2sH", data, i)
            tag = group << 16 | elem_no
            vr = vr_bytes.decode("latin-1")
            head = 8
            if vr in _LONG_VRS:
                if i + 12 > n:
                    return None
                (length,) = unpack("<I", data, i + 8)
                head = 12
        if tag <= last:
            return None  # out of order or repeated: pydicom's reading decides
        last = tag
        start, i = i + head, i + head + length
        if length == 0xFFFFFFFF or i > n:
            return None
        text = None
        if length:
            if vr is not None and (vr in _NOT_TEXT or " or " in vr):
                return None  # a value pydicom converts (numbers, binary, sequences)
            raw = bytes(data[start:i]).rstrip(b"\0 ")
            if printable(raw) is None or raw[:1] == b" " or b"\\ " in raw or b" \\" in raw:
                return None  # not printable ASCII, or padding inside: pydicom's rules decide
            text = raw.decode("ascii")
        if tag == SPECIFIC_CHARACTER_SET:
            charsets = tuple(v.strip() for v in text.split("\\")) if text else ()
        elif tag == QUERY_RETRIEVE_LEVEL:
            level = text if text is not None else ""
        elif not (group & 1 or elem_no == 0 or group <= 2):  # `_skipped`
            keys.append((tag, vr, text, False))
    return _request(model, level, charsets, keys)


def _request(
    model: Model, raw_level: str | None, charsets: tuple[str, ...], items: Iterable[Key]
) -> FindRequest:
    if raw_level is None:
        raise FindFailure(UNABLE_TO_PROCESS, "QueryRetrieveLevel (0008,0052) missing", QUERY_RETRIEVE_LEVEL)
    try:
        level = Level(raw_level.strip())
    except ValueError:
        raise FindFailure(UNABLE_TO_PROCESS, f"QueryRetrieveLevel {raw_level[:16]!r} unknown",
                          QUERY_RETRIEVE_LEVEL) from None
    if model is Model.STUDY_ROOT and level is Level.PATIENT:
        raise FindFailure(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "no PATIENT level in Study Root",
                          QUERY_RETRIEVE_LEVEL)
    req = FindRequest(model, level, charsets=charsets)
    depth = _ORDER.index(level)
    keys: dict[int, ReturnKey] = {}
    for tag, vr, text, nonempty_sequence in items:
        known = _vr(tag)
        if known is not None:
            vr = known.split(" or ")[0] if " or " in known else known
        elif vr in ("UN", None):
            continue  # an unknown public attribute: nothing to return
        key = _return_key(tag, vr)  # type: ignore[arg-type]
        tag_hex = key.hex
        keys[tag] = key
        if vr == "SQ":
            if nonempty_sequence:
                req.unsupported = True  # sequence matching (C.2.2.2.6) is not supported
            continue
        stripped = (text or "").strip(" \x00")
        if not stripped or stripped == "*":
            continue
        try:
            cond = condition(tag_hex, text or "")
        except ValueError as exc:
            raise FindFailure(UNABLE_TO_PROCESS, str(exc), tag) from None
        if cond.kind == "universal":
            continue
        at = _level_of(tag_hex)
        if tag_hex in _PATIENT_AGGREGATES or _ORDER.index(at) > depth:
            req.unsupported = True  # a key below the query level, or an aggregate: ignored
            continue
        if at is Level.PATIENT:
            req.patient.append(cond)
        elif at is Level.STUDY:
            req.study.append(cond)
        elif at is Level.SERIES:
            req.series.append(cond)
        else:
            req.image.append(cond)
    # The Query/Retrieve level, the unique keys of this level and above, Retrieve AE Title.
    always = [QUERY_RETRIEVE_LEVEL, RETRIEVE_AE_TITLE, UNIQUE_KEY[level]]
    first = 0 if model is Model.PATIENT_ROOT else 1
    always += [UNIQUE_KEY[lv] for lv in _ORDER[first:depth]]
    for t in always:
        if t not in keys:
            keys[t] = _return_key(t, _vr(t) or "UN")
    req.keys = [keys[t] for t in sorted(keys)]
    _check_hierarchy(req, first, depth)
    return req


def _unique(conds: list[Condition], tag: int, what: str) -> Condition:
    tag_hex = f"{tag:08X}"
    c = next((c for c in conds if c.tag == tag_hex), None)
    if c is None:
        raise FindFailure(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, f"{what} required at this level", tag)
    if c.kind not in ("single", "list") or (tag == PATIENT_ID and c.kind != "single"):
        raise FindFailure(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, f"{what} must be a single value", tag)
    return c


def _check_hierarchy(req: FindRequest, first: int, depth: int) -> None:
    """Hierarchical search (PS3.4 C.4.1.2.2.1): the unique key of every level above is given."""
    for lv in _ORDER[first:depth]:
        if lv is Level.PATIENT:
            _unique(req.patient, PATIENT_ID, "PatientID")
        elif lv is Level.STUDY:
            _unique(req.study, STUDY_UID, "StudyInstanceUID")
        else:
            _unique(req.series, SERIES_UID, "SeriesInstanceUID")


# --- responses ----------------------------------------------------------------------------------


def _values(vr: str, values: list[Any]) -> list[Any]:
    if vr == "PN":
        out = []
        for v in values:
            if isinstance(v, dict):
                v = "=".join(v.get(g) or "" for g in ("Alphabetic", "Ideographic", "Phonetic")).rstrip("=")
            out.append(v)
        return out
    if vr == "DS":
        return [v if isinstance(v, str) else format_number_as_ds(v) if isinstance(v, float) else str(v)
                for v in values]
    if vr == "IS":
        return [str(v) for v in values]
    if vr == "AT":
        return [int(v, 16) if isinstance(v, str) else v for v in values]
    return values


#: Explicit VR with a 4-byte length (PS3.5 7.1.2); the others have a 2-byte length.
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_BINARY_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
#: An element of a response: tag, VR, value (None: zero-length; a list: several values).
Element = tuple[int, str, Any]


_EMPTY: dict[tuple[int, str, bool], bytes] = {}
#: VRs whose JSON values `_values` converts before encoding (names as objects, numbers).
_CONVERTED = frozenset({"PN", "DS", "IS", "AT"})


def _encode_element(tag: int, vr: str, value: Any, implicit: bool, codec: str) -> bytes:
    """One element in Little Endian (PS3.5 7.1), text in `codec`, padded to an even length."""
    if value is None or vr == "SQ" or (isinstance(value, list) and not value):
        empty = _EMPTY.get((tag, vr, implicit))
        if empty is not None:
            return empty
        data = b""
    elif isinstance(value, str) and vr not in _BINARY_FORMATS and vr != "AT":
        data = value.encode(codec)
        if len(data) & 1:
            data += b"\x00" if vr == "UI" else b" "
    else:
        values = value if isinstance(value, list) else [value]
        if vr in _BINARY_FORMATS:
            data = struct.pack(f"<{len(values)}{_BINARY_FORMATS[vr]}", *values)
        elif vr == "AT":
            data = b"".join(struct.pack("<HH", v >> 16, v & 0xFFFF) for v in values)
        else:
            data = "\\".join(str(v) for v in values).encode(codec)
            if len(data) & 1:
                data += b"\x00" if vr == "UI" else b" "
    group, elem = tag >> 16, tag & 0xFFFF
    if implicit:
        out = struct.pack("<HHI", group, elem, len(data)) + data
    elif vr in _LONG_VRS:
        out = struct.pack("<HH2sHI", group, elem, vr.encode(), 0, len(data)) + data
    elif len(data) > 0xFFFF:
        raise ValueError(f"({group:04X},{elem:04X}) too long for VR {vr}")
    else:
        out = struct.pack("<HH2sH", group, elem, vr.encode(), len(data)) + data
    if not data and len(_EMPTY) < 65536:
        _EMPTY[(tag, vr, implicit)] = out  # zero-length return keys: most of a response
    return out


class _Builder:
    """Response identifiers from the catalog's DICOM JSON: the elements once, then either a pydicom
    Dataset or, on the hot path, their Little Endian encoding directly (no Dataset at all)."""

    def __init__(self, req: FindRequest, ae_title: str) -> None:
        self.req = req
        self.keys = [(k.tag, k.vr, k.hex) for k in req.keys]
        self.level = req.level.value
        self.ae_title = ae_title
        charsets = req.charsets
        self.codec: str | None = None
        if len(charsets) == 1 and charsets[0] in python_encoding:
            self.codec = python_encoding[charsets[0]]
        elif not charsets:
            self.codec = "ascii"

    def elements(self, sources: Sequence[DicomJson]) -> tuple[list[Element], str | list[str] | None]:
        """Each return key from the first source holding it (else zero-length), in tag order, and the
        Specific Character Set the response needs (None: the default repertoire)."""
        out: list[Element] = []
        texts: list[str] = []
        for tag, key_vr, key_hex in self.keys:
            if tag == QUERY_RETRIEVE_LEVEL:
                out.append((tag, key_vr, self.level))
            elif tag == RETRIEVE_AE_TITLE:
                out.append((tag, key_vr, self.ae_title))
            elif tag == INSTANCE_AVAILABILITY:
                out.append((tag, key_vr, "ONLINE"))
            elif key_vr == "SQ":
                out.append((tag, "SQ", None))
            else:
                value: Any = None
                vr = key_vr
                for src in sources:
                    attr = src.get(key_hex)
                    if attr is not None:
                        vals = attr.get("Value")
                        vr = attr.get("vr", vr)
                        if vals:
                            vals = _values(vr, vals)
                            value = vals[0] if len(vals) == 1 else vals
                            for v in vals:
                                if isinstance(v, str) and not v.isascii():
                                    texts.append(v)
                        break
                out.append((tag, vr, value))
        return out, self._charset(texts)

    def build(self, sources: Sequence[DicomJson]) -> Dataset:
        """A response as a pydicom Dataset."""
        elements, charset = self.elements(sources)
        ignore = pydicom_config.IGNORE
        elems: dict[BaseTag, DataElement | RawDataElement] = {
            BaseTag(tag): DataElement(tag, vr, [] if vr == "SQ" else value, validation_mode=ignore)
            for tag, vr, value in elements
        }
        if charset:
            elems[BaseTag(SPECIFIC_CHARACTER_SET)] = DataElement(
                SPECIFIC_CHARACTER_SET, "CS", charset, validation_mode=ignore
            )
        return Dataset(elems)

    def encode(self, sources: Sequence[DicomJson], implicit: bool) -> bytes:
        """A response encoded in Implicit (or Explicit) VR Little Endian; ValueError when its
        character set is not a single one (ISO 2022 code extensions: use `build`)."""
        if not self.req.charsets:
            fast = self._encode_ascii(sources, implicit)
            if fast is not None:
                return fast
        elements, charset = self.elements(sources)
        if isinstance(charset, list):
            raise ValueError("ISO 2022 character sets: encode through pydicom")
        codec = "ascii" if charset is None else python_encoding[charset]
        if charset:
            elements.append((SPECIFIC_CHARACTER_SET, "CS", charset))
            elements.sort(key=lambda e: e[0])
        return b"".join(_encode_element(tag, vr, value, implicit, codec) for tag, vr, value in elements)

    def _encode_ascii(self, sources: Sequence[DicomJson], implicit: bool) -> bytes | None:
        """`encode` for a request without Specific Character Set, when every value is ASCII (None
        otherwise: the response needs a character set): the same bytes, the elements written as
        they are looked up."""
        out: list[bytes] = []
        fixed = {QUERY_RETRIEVE_LEVEL: self.level, RETRIEVE_AE_TITLE: self.ae_title,
                 INSTANCE_AVAILABILITY: "ONLINE"}
        for tag, key_vr, key_hex in self.keys:
            if tag in fixed:
                value: Any = fixed[tag]
                if not value.isascii():
                    return None
                out.append(_encode_element(tag, key_vr, value, implicit, "ascii"))
                continue
            if key_vr == "SQ":
                out.append(_encode_element(tag, "SQ", None, implicit, "ascii"))
                continue
            vr, vals = key_vr, None
            for src in sources:
                attr = src.get(key_hex)
                if attr is not None:
                    vals = attr.get("Value")
                    vr = attr.get("vr", vr)
                    break
            if not vals:
                out.append(_encode_element(tag, vr, None, implicit, "ascii"))
                continue
            if len(vals) == 1 and type(vals[0]) is str and vr not in _CONVERTED:
                value = vals[0]  # what `_values` would return
                if not value.isascii():
                    return None
            else:
                converted = _values(vr, vals)
                if any(isinstance(v, str) and not v.isascii() for v in converted):
                    return None
                value = converted[0] if len(converted) == 1 else converted
            out.append(_encode_element(tag, vr, value, implicit, "ascii"))
        return b"".join(out)

    def _charset(self, texts: list[str]) -> str | list[str] | None:
        """The request's character set when it can encode the values, else UTF-8."""
        charsets = self.req.charsets
        if not texts:
            return list(charsets) if len(charsets) > 1 else (charsets[0] if charsets else None)
        if self.codec is not None and self.codec != "ascii":
            try:
                for t in texts:
                    t.encode(self.codec)
                return charsets[0]
            except UnicodeEncodeError:
                pass
        return _UTF8


def _study_json(row: StudyRow) -> DicomJson:
    """The study's attributes and aggregates, without copying its attributes."""
    return {
        MODALITIES_IN_STUDY: {"vr": "CS", "Value": sorted(row.modalities)},
        SOP_CLASSES_IN_STUDY: {"vr": "UI", "Value": sorted(row.sop_classes)},
        NUMBER_OF_STUDY_RELATED_SERIES: {"vr": "IS", "Value": [row.n_series]},
        NUMBER_OF_STUDY_RELATED_INSTANCES: {"vr": "IS", "Value": [row.n_instances]},
    }


def _wants(req: FindRequest, tags: Iterable[str]) -> bool:
    wanted = {k.hex for k in req.keys}
    return any(t in wanted for t in tags)


_STUDY_AGGREGATES = (MODALITIES_IN_STUDY, SOP_CLASSES_IN_STUDY, NUMBER_OF_STUDY_RELATED_SERIES,
                     NUMBER_OF_STUDY_RELATED_INSTANCES)


class FindService:
    """Runs parsed C-FIND requests against the catalog of one partition."""

    def __init__(self, catalog: Catalog, partition: str = "default", ae_title: str = "PACS") -> None:
        self.catalog = catalog
        self.partition = partition
        self.ae_title = ae_title

    def find(self, req: FindRequest) -> Iterator[Dataset]:
        """The response identifiers, one per match, lazily (a caller may stop at a C-CANCEL)."""
        builder = _Builder(req, self.ae_title)
        return map(builder.build, self._matches(req))

    def find_encoded(self, req: FindRequest, *, implicit: bool) -> Iterator[bytes]:
        """The same responses encoded in Implicit (or Explicit) VR Little Endian, without pydicom;
        for requests whose character set is at most a single one (`can_encode`)."""
        builder = _Builder(req, self.ae_title)
        return (builder.encode(m, implicit) for m in self._matches(req))

    @staticmethod
    def can_encode(req: FindRequest) -> bool:
        return len(req.charsets) <= 1 and all(c in python_encoding for c in req.charsets)

    def _matches(self, req: FindRequest) -> Iterator[Sequence[DicomJson]]:
        """Per match, where its return keys are looked up (first source first)."""
        if req.level is Level.PATIENT:
            return self._patients(req)
        if req.level is Level.STUDY:
            return self._studies(req)
        if req.level is Level.SERIES:
            return self._series(req)
        return self._images(req)

    def _study_rows(self, req: FindRequest) -> list[StudyRow]:
        return self.catalog.query_studies(self.partition, req.patient + req.study).rows

    def _patients(self, req: FindRequest) -> Iterator[Sequence[DicomJson]]:
        groups: dict[tuple[str | None, str | None], list[StudyRow]] = {}
        for row in self._study_rows(req):
            key = (first_value(row.attrs, "00100020"), first_value(row.attrs, "00100021"))
            groups.setdefault(key, []).append(row)
        for rows in groups.values():
            counts = {
                f"{N_PATIENT_STUDIES:08X}": {"vr": "IS", "Value": [len(rows)]},
                f"{N_PATIENT_SERIES:08X}": {"vr": "IS", "Value": [sum(r.n_series for r in rows)]},
                f"{N_PATIENT_INSTANCES:08X}": {"vr": "IS", "Value": [sum(r.n_instances for r in rows)]},
            }
            yield (rows[0].attrs, counts)  # the newest study's patient attributes

    def _studies(self, req: FindRequest) -> Iterator[Sequence[DicomJson]]:
        aggregates = _wants(req, _STUDY_AGGREGATES)
        for row in self._study_rows(req):
            yield (row.attrs, _study_json(row)) if aggregates else (row.attrs,)

    def _parent_studies(self, req: FindRequest) -> Iterator[StudyRow]:
        """The studies named by the StudyInstanceUID key that satisfy the other study-level keys."""
        uid_cond = _unique(req.study, STUDY_UID, "StudyInstanceUID")
        others = [c for c in req.patient + req.study if c is not uid_cond]
        for uid in uid_cond.uids:
            row = self.catalog.get_study(self.partition, uid)
            if row is None:
                continue
            if others and not matches_all({**row.attrs, **_study_json(row)}, others):
                continue
            yield row

    def _series_rows(self, req: FindRequest, study: StudyRow) -> list[SeriesRow]:
        return self.catalog.query_series(self.partition, study.study_uid, req.series).rows

    def _series(self, req: FindRequest) -> Iterator[Sequence[DicomJson]]:
        for study in self._parent_studies(req):
            study_json = _study_json(study)
            for s in self._series_rows(req, study):
                counts = {NUMBER_OF_SERIES_RELATED_INSTANCES: {"vr": "IS", "Value": [s.n_instances]}}
                yield (s.attrs, counts, _uid(STUDY_UID, study.study_uid), study.attrs, study_json)

    def _images(self, req: FindRequest) -> Iterator[Sequence[DicomJson]]:
        for study in self._parent_studies(req):
            study_json = _study_json(study)
            for s in self._series_rows(req, study):
                counts = {NUMBER_OF_SERIES_RELATED_INSTANCES: {"vr": "IS", "Value": [s.n_instances]}}
                rows: list[InstanceRow] = self.catalog.query_instances(
                    self.partition, study.study_uid, s.series_uid, req.image
                ).rows
                for r in rows:
                    yield (
                        r.attrs, _uid(SOP_UID, r.sop_uid), _uid(SERIES_UID, r.series_uid), s.attrs, counts,
                        _uid(STUDY_UID, r.study_uid), study.attrs, study_json,
                    )


def _uid(tag: int, uid: str) -> DicomJson:
    return {f"{tag:08X}": {"vr": "UI", "Value": [uid]}}
