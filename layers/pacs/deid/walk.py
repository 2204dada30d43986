"""One pass over a data set, every sequence at every depth, applying the compiled Annex E table.

Kept values stay pydicom RawDataElements (never decoded, written back byte for byte, Pixel Data
included: the output shares the input's bytes, nothing is copied); only the values an action
changes are decoded. See `table` (which action), `iod_types` (compound codes), `actions` (what D
and C write), `dates`, `uids`, `pseudonyms`, `private`.

A sequence cleaned by C (Clean Structured Content, Clean Descriptors…) is kept the same way, its
unlisted free-text values cleaned (`actions.clean_text`; person names get the dummy).

A sequence whose action is D (Content Sequence, Graphic Annotation Sequence, Verifying Observer
Sequence… under the basic profile) is replaced by a dummy of the same structure: its items are
kept, the attributes the table lists get their own action, and every other value in them (at any
depth) is replaced by its VR's dummy, except code strings (CS: enumerated values such as Value
Type), numbers and binary values (measurements, graphic coordinates), the code macro attributes
(Code Value, Coding Scheme Designator, Code Meaning… which name concepts, not people; but not in a
sequence named *Code Sequence that the table replaces, e.g. Institution Code Sequence), and UIDs,
which are remapped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from pacs.deid import actions, dates, iod_types, private
from pacs.deid.table import ActionMap

PATIENT_ID, PATIENT_NAME, ISSUER, ACCESSION = 0x00100020, 0x00100010, 0x00100021, 0x00080050
CODE_MACRO = frozenset({0x00080100, 0x00080102, 0x00080103, 0x00080104, 0x00080105, 0x00080106,
                        0x0008010F, 0x00080117, 0x00080118, 0x00080119, 0x00080120, 0x00080121,
                        0x00080122, 0x00080123, 0x00080124})
_AMBIGUOUS = {"US or SS": "US", "OB or OW": "OB", "US or OW": "OW", "US or SS or OW": "OW"}
_VR_CACHE: dict[int, str] = {}


def vr_of(tag: int, elem: DataElement | RawDataElement) -> str:
    """The element's VR (the dictionary's for implicit VR; UN for unknown tags)."""
    vr = elem.VR
    if vr and len(vr) == 2 and (vr != "UN" or tag >> 16 & 1):
        return str(vr)
    found = _VR_CACHE.get(tag)
    if found is None:
        try:
            found = str(dictionary_VR(tag))
        except KeyError:
            found = "UN"
        found = _AMBIGUOUS.get(found, found)
        _VR_CACHE[tag] = found if len(found) == 2 else "UN"
        found = _VR_CACHE[tag]
    return found


def value_of(ds: Dataset, elem: DataElement | RawDataElement) -> Any:
    """The decoded value of `elem` (a RawDataElement is decoded without touching `ds`)."""
    if isinstance(elem, RawDataElement):
        return convert_raw_data_element(elem, encoding=ds._character_set, ds=ds).value
    return elem.value


_RAW_TEXT = frozenset({"UI", "DA", "DT", "TM", "CS", "AS", "DS", "IS", "AE", "SH", "LO", "PN", "ST", "LT",
                       "UT", "UC", "UR"})


def make(src: Dataset, tag: int, vr: str, value: Any) -> DataElement | RawDataElement:
    """A new element, as a RawDataElement in `src`'s encoding when it is text in ASCII or bytes
    (cheap to make, written as is), else a DataElement."""
    implicit = src._read_implicit
    if implicit is None or src._read_little is not True:
        return DataElement(tag, vr, value)
    if value is None or value == "":
        data = b""
    elif isinstance(value, str) and vr in _RAW_TEXT and value.isascii():
        data = value.encode("ascii")
        if len(data) & 1:
            data += b"\0" if vr == "UI" else b" "
    elif isinstance(value, bytes) and vr in actions.BINARY_VRS:
        data = value + b"\0" * (len(value) & 1)
    else:
        return DataElement(tag, vr, value)
    return RawDataElement(BaseTag(tag), None if implicit else vr, len(data), data, 0, implicit, True)


_ASCII_VRS = frozenset({"UI", "DA", "DT", "TM", "CS", "AS", "DS", "IS", "AE"})


def text_of(ds: Dataset, elem: DataElement | RawDataElement, vr: str = "") -> str:
    """The value as text (multi-values joined by backslashes); ASCII-only VRs decoded directly."""
    if vr in _ASCII_VRS and isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
        return elem.value.decode("latin-1").strip(" \0")
    value = value_of(ds, elem)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


@dataclass
class Context:
    """What one instance's walk needs: its SOP class, and lazily its shift and identifying words."""

    top: Dataset
    sop_class: str
    amap: ActionMap
    uid: Callable[[str], str]
    retain_uids: bool
    modified_dates: bool
    key: bytes
    pseudonym: Callable[[int, Dataset, str], str]
    _shift: int | None = None
    _words: frozenset[str] | None = None

    @property
    def shift(self) -> int:
        if self._shift is None:
            self._shift = dates.shift_days(self.key, self.top_text(PATIENT_ID), self.top_text(ISSUER))
        return self._shift

    def top_text(self, tag: int) -> str:
        elem = self.top._dict.get(BaseTag(tag))
        return "" if elem is None else text_of(self.top, elem).strip()

    @property
    def words(self) -> frozenset[str]:
        """The words of the top-level values that the basic profile removes or replaces."""
        if self._words is None:
            values = []
            for tag, elem in self.top._dict.items():
                vr = vr_of(tag, elem)
                if (vr in actions.TEXT_VRS or vr in ("DA", "DT")) and (
                        self.amap.action(tag) not in ("K", "C") or tag in (PATIENT_ID, PATIENT_NAME)):
                    raw = elem.value
                    values.append(raw.decode("latin-1") if isinstance(raw, bytes)
                                  else text_of(self.top, elem))
            self._words = actions.identifying_words(values)
        return self._words


def walk(src: Dataset, ctx: Context, parent: int | None = None, mode: str = "",
         codes_too: bool = False) -> Dataset:
    """A de-identified copy of `src` (a data set or a sequence item); `mode` "D" or "C" inside a
    sequence replaced by D or cleaned by C: the values the table does not list are replaced too."""
    out = Dataset(parent_encoding=src._parent_encoding)
    out.set_original_encoding(src._read_implicit, src._read_little, src._read_charset)
    out.is_undefined_length_sequence_item = src.is_undefined_length_sequence_item
    amap = ctx.amap
    explicit = src._read_implicit is False
    creators: dict[int, str] = {}
    put = out._dict
    for btag, elem in src._dict.items():
        tag = int(btag)
        action = amap.action(tag)
        if tag >> 16 & 1:
            if action == "C" and _safe_private(src, tag, elem, creators):
                vr = vr_of(tag, elem)
                block = (tag & 0xFFFF0000) | ((tag & 0xFFFF) >> 8)
                if vr in ("UN", "OB") and isinstance(elem, RawDataElement) and private.safe_vr(
                        creators.get(block, ""), tag) == "SQ":
                    elem, vr = elem._replace(VR="SQ"), "SQ"  # implicit VR: the table knows it is a sequence
                if vr == "SQ":
                    put[btag] = _sequence(src, ctx, tag, elem, mode="")
                elif vr == "UI" and not ctx.retain_uids and (tag & 0xFFFF) >= 0x1000:
                    put[btag] = make(src, tag, "UI", ctx.uid(text_of(src, elem, "UI")))
                else:
                    put[btag] = elem
            continue
        if "/" in action:
            action = iod_types.resolve(action, ctx.sop_class, tag, parent)
        if action == "X":
            continue
        vr = vr_of(tag, elem)
        if action == "K":
            if vr == "SQ":
                put[btag] = _sequence(src, ctx, tag, elem, mode=mode, codes_too=codes_too)
            elif mode and _dummy_leaf(tag, vr, codes_too) and not (vr == "UI" and ctx.retain_uids):
                leaf = "D" if mode == "D" or vr in ("PN", "UI") else "C"
                put[btag] = _replace(src, ctx, tag, elem, vr, leaf)
            elif explicit and isinstance(elem, RawDataElement) and elem.is_implicit_VR:
                put[btag] = _explicit(src, elem)  # read as implicit VR under an explicit syntax
            else:
                put[btag] = elem
            continue
        put[btag] = _replace(src, ctx, tag, elem, vr, action)
    if amap.private == "C":
        _drop_empty_blocks(put)
    return out


def _drop_empty_blocks(put: Any) -> None:
    """Private creator elements whose block kept no element go too."""
    blocks = {(t & 0xFFFF0000) | ((t & 0xFFFF) >> 8) for t in put if t >> 16 & 1 and t & 0xFFFF >= 0x1000}
    for tag in [t for t in put if t >> 16 & 1 and 0x10 <= t & 0xFFFF < 0x100 and t not in blocks]:
        del put[tag]


def _explicit(src: Dataset, elem: RawDataElement) -> DataElement:
    """An element read as implicit VR, made writable under an explicit VR syntax."""
    out = convert_raw_data_element(elem, encoding=src._character_set, ds=src)
    if out.VR and len(out.VR) != 2:
        if out.tag == 0x7FE00010:
            out.VR = "OB" if out.is_undefined_length else "OW"  # type: ignore[assignment]
        else:
            out.VR = _AMBIGUOUS.get(out.VR, "UN")  # type: ignore[assignment]
    return out


def _dummy_leaf(tag: int, vr: str, codes_too: bool) -> bool:
    """Inside a D sequence: whether a value the table does not list gets a dummy."""
    if vr == "UI":
        return True
    if vr not in actions.TEXT_VRS and vr not in ("DA", "DT", "TM"):
        return False
    if vr == "CS":
        return False
    return codes_too or tag not in CODE_MACRO


def _safe_private(src: Dataset, tag: int, elem: DataElement | RawDataElement,
                  creators: dict[int, str]) -> bool:
    """Retain Safe Private: whether the private element is safe (a creator: whether its block may be)."""
    element = tag & 0xFFFF
    if element < 0x10:
        return False
    group = tag >> 16
    if element < 0x100:
        name = text_of(src, elem).strip()
        return (name, group) in private.safe_blocks()
    block = (tag & 0xFFFF0000) | (element >> 8)
    creator = creators.get(block)
    if creator is None:
        found = src._dict.get(BaseTag(block))
        creator = text_of(src, found).strip() if found is not None else ""
        creators[block] = creator
    return bool(creator) and private.is_safe(creator, tag)


def _sequence(src: Dataset, ctx: Context, tag: int, elem: DataElement | RawDataElement, mode: str,
              codes_too: bool = False) -> DataElement:
    items = value_of(src, elem) or []
    out = DataElement(tag, "SQ", Sequence([walk(item, ctx, tag, mode, codes_too) for item in items]))
    out.is_undefined_length = bool(getattr(elem, "is_undefined_length", False))
    return out


def _replace(src: Dataset, ctx: Context, tag: int, elem: DataElement | RawDataElement, vr: str,
             action: str) -> DataElement | RawDataElement:
    """The element that replaces `elem` under `action` (Z, D, U or C)."""
    if tag in (PATIENT_ID, PATIENT_NAME, ACCESSION) and action in ("Z", "D"):
        original = text_of(src, elem).strip()
        if original or action == "D" or tag != ACCESSION:
            return make(src, tag, vr, ctx.pseudonym(tag, src, original))
    if vr == "SQ":
        if action == "Z":
            return DataElement(tag, "SQ", Sequence())
        codes_too = action == "D" and (keyword_for_tag(tag) or "").endswith("CodeSequence")
        mode = action if action in ("D", "C") else ""
        return _sequence(src, ctx, tag, elem, mode=mode, codes_too=codes_too)
    if action == "Z":
        empty = b"" if vr in actions.BINARY_VRS else None if vr in actions.NUMBER_VRS or vr == "AT" else ""
        return make(src, tag, vr, empty)
    if vr == "UI" and action in ("U", "D", "C"):
        return make(src, tag, "UI", "\\".join(ctx.uid(v) for v in text_of(src, elem, "UI").split("\\")))
    if action == "C":
        return _clean(src, ctx, tag, elem, vr)
    length = len(elem.value) if vr in actions.BINARY_VRS and isinstance(elem.value, bytes) else 0
    return make(src, tag, vr, actions.dummy(vr, length))


def _clean(src: Dataset, ctx: Context, tag: int, elem: DataElement | RawDataElement,
           vr: str) -> DataElement | RawDataElement:
    """Action C by VR (see `actions`)."""
    if vr in ("DA", "DT"):
        text = text_of(src, elem, vr).strip()
        if not ctx.modified_dates:
            return make(src, tag, vr, actions.dummy(vr))
        if not text:
            return make(src, tag, vr, "")
        shifted = dates.shift_da(text, ctx.shift) if vr == "DA" else dates.shift_dt(text, ctx.shift)
        return make(src, tag, vr, shifted)
    if vr == "TM" or tag == 0x00080201:  # times and the UTC offset: unchanged by a whole-day shift
        return elem
    if vr in actions.BINARY_VRS:
        length = len(elem.value) if isinstance(elem.value, bytes) else 0
        return make(src, tag, vr, b"\0" * (length + (length & 1)))
    if vr == "AE":
        return make(src, tag, vr, actions.dummy(vr))
    if vr in actions.TEXT_VRS:
        return make(src, tag, vr, actions.clean_text(text_of(src, elem), ctx.words, vr))
    return elem
