"""Clean Pixel Data (PS3.15 E.3.1): burned-in regions blanked by rule, images no rule covers held back.

A rule names the images it covers (Modality, Manufacturer, Manufacturer's Model Name: case-insensitive glob
patterns; Rows and Columns: exact, 0 for any) and the rectangles to blank in them, `[x0, y0, x1, y1]`:
columns then rows, from the top-left pixel, the end excluded, clipped to the image. The FIRST rule that
matches applies (order them from the most specific to the most generic); a matching rule without regions
declares those images free of burned-in text.

Rules file (TOML; JSON with the same keys, `rules` a list of tables, is accepted too)::

    # Optional: the modalities held back when no rule covers them (default: DEFAULT_BURN_IN below).
    hold_back_modalities = ["US", "IVUS", "SC", "OT", "XA", "RF", "ES", "XC", "OP", "PX"]
    # Optional: trust Burned In Annotation NO on those modalities (default false: held back anyway).
    trust_burned_in_no = false

    [[rule]]                       # `rules` is accepted as well
    modality = "US"
    manufacturer = "GE*"
    model = "LOGIQ E9*"
    rows = 600
    columns = 800
    regions = [[0, 0, 800, 60], [0, 560, 300, 600]]
    fill = 0                       # optional: the value written; default the image's black

Blanking writes, in every frame and every sample, the black of the Photometric Interpretation (the
smallest value for MONOCHROME2, the largest for MONOCHROME1, 0 for RGB and palette colour, Y=0 with
neutral chroma for YBR_FULL) unless `fill` says otherwise. The pixels are then written back in the stored
transfer syntax through `pacs.codecs`: native data in place, compressed data decoded, blanked and
re-encoded (lossless syntaxes stay lossless and the rest of the image is unchanged bit for bit; JPEG
Baseline/Extended is re-encoded lossy, and Lossy Image Compression, Method and Ratio are kept and
updated as `pacs.codecs.lossy` does). Burned In Annotation is then NO (E.3.1).

Holding back (`must_hold_back`): an image that no rule covers is held back (HeldBack, never exported)
when its Burned In Annotation is YES, or its modality is in `hold_back_modalities`, or its SOP class is a
Secondary Capture or Ultrasound one. PS3.15 E.2 says the Basic Profile without this option "does not
address information burned-in to the pixels": the hold-back belongs to the option.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian

from pacs.deid.options import HeldBack

#: Modalities whose images routinely carry burned-in text (ultrasound, captures, fluoroscopy and
#: angiography, endoscopy and photography, dental panoramics, "other").
DEFAULT_BURN_IN: frozenset[str] = frozenset({"US", "IVUS", "SC", "OT", "XA", "RF", "ES", "XC", "OP", "PX"})
#: SOP classes whose images are screen or video captures whatever their Modality says: Secondary Capture
#: (…1.7 and its multi-frame kinds …1.7.x) and Ultrasound (…1.6.x, …1.3.1, the retired …1.6 and …1.3).
_STORAGE = "1.2.840.10008.5.1.4.1.1."
_BURN_IN_CLASSES = frozenset(_STORAGE + c for c in ("7", "6", "3", "3.1"))
_BURN_IN_FAMILIES = (_STORAGE + "7.", _STORAGE + "6.")
_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

Region = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class PixelRule:
    """Regions (x0, y0, x1, y1: columns and rows, end exclusive) to blank in the matching images;
    an empty criterion matches anything."""

    regions: tuple[Region, ...]
    modality: str = ""
    manufacturer: str = ""
    model: str = ""
    rows: int = 0
    columns: int = 0
    #: The value written in the regions (every sample); None: the black of the image.
    fill: int | None = None

    def __post_init__(self) -> None:
        for region in self.regions:
            if len(region) != 4 or not all(isinstance(v, int) and v >= 0 for v in region):
                raise ValueError(f"region {list(region)}: four integers x0, y0, x1, y1, none negative")
            x0, y0, x1, y1 = region
            if x1 <= x0 or y1 <= y0:
                raise ValueError(f"region {list(region)}: x1 must exceed x0 and y1 exceed y0")
        if self.rows < 0 or self.columns < 0:
            raise ValueError("rows and columns must be 0 (any) or more")

    def matches(self, ds: Dataset) -> bool:
        if self.rows and int(ds.get("Rows") or 0) != self.rows:
            return False
        if self.columns and int(ds.get("Columns") or 0) != self.columns:
            return False
        return all(_glob(text, pattern) for text, pattern in (
            (ds.get("Modality"), self.modality), (ds.get("Manufacturer"), self.manufacturer),
            (ds.get("ManufacturerModelName"), self.model)))


def _glob(value: object, pattern: str) -> bool:
    if not pattern:
        return True
    return fnmatch.fnmatchcase(str(value or "").strip().casefold(), pattern.strip().casefold())


@dataclass(frozen=True, slots=True)
class PixelRules:
    rules: tuple[PixelRule, ...] = field(default_factory=tuple)
    #: Modalities held back when no rule covers them.
    hold_back_modalities: frozenset[str] = DEFAULT_BURN_IN
    #: True: an image of those modalities whose Burned In Annotation is NO is not held back.
    trust_burned_in_no: bool = False

    def match(self, ds: Dataset) -> PixelRule | None:
        """The first rule covering `ds`, or None."""
        return next((r for r in self.rules if r.matches(ds)), None)

    def clean(self, ds: Dataset, *, match: Dataset | None = None) -> bool:
        """Blank the regions of the first matching rule in every frame of `ds` (in place, the pixels
        re-encoded in their transfer syntax) and set Burned In Annotation to NO; True when it changed
        the pixels. `match`: the data set whose Modality, Manufacturer, model and Burned In Annotation
        are matched, and whose file meta gives the transfer syntax when `ds` has none (the original,
        when `ds` is a de-identified copy); default `ds`. The elements changed are new objects: a copy
        sharing elements with `match` leaves `match` untouched.
        Raises HeldBack for an image that no rule covers and that may carry burned-in annotation
        (`must_hold_back`), or whose pixels cannot be blanked."""
        source = ds if match is None else match
        if not _has_pixels(ds):
            return False
        rule = self.match(source)
        if rule is None:
            reason = must_hold_back(source, self)
            if reason:
                raise HeldBack(reason)
            ds.add_new(0x00280301, "CS", "NO")  # a new element: never one shared with the original
            return False
        changed = False
        if rule.regions and "PixelData" in ds:
            blank(ds, rule.regions, rule.fill, syntax=transfer_syntax(ds, match))
            changed = True
        ds.add_new(0x00280301, "CS", "NO")
        return changed


def transfer_syntax(ds: Dataset, original: Dataset | None = None) -> UID:
    """The transfer syntax of `ds`'s pixel data: its file meta's, else `original`'s, else native in the
    byte order it was read with. HeldBack for encapsulated pixel data of an unknown syntax."""
    for source in (ds, original):
        meta = getattr(source, "file_meta", None) if source is not None else None
        if meta is not None and meta.get("TransferSyntaxUID"):
            return UID(str(meta.TransferSyntaxUID))
    elem = ds["PixelData"]
    if elem.is_undefined_length or bytes(elem.value[:4]) == b"\xfe\xff\x00\xe0":
        raise HeldBack("the burned-in regions cannot be blanked: encapsulated pixel data of an unknown "
                       "transfer syntax (no file meta)")
    little = (original if original is not None else ds).original_encoding[1]
    return UID(ExplicitVRBigEndian if little is False else ExplicitVRLittleEndian)


def _has_pixels(ds: Dataset) -> bool:
    return any(k in ds for k in _PIXEL_TAGS)


def must_hold_back(ds: Dataset, rules: PixelRules) -> str | None:
    """Why `ds` must be held back under the Clean Pixel Data option, or None: an image that no rule
    covers whose Burned In Annotation is YES, or whose modality or SOP class is known to burn in text."""
    if not _has_pixels(ds) or rules.match(ds) is not None:
        return None
    what = _describe(ds)
    bia = str(ds.get("BurnedInAnnotation") or "").strip().upper()
    if bia == "YES":
        return f"Burned In Annotation is YES and no pixel rule covers it ({what})"
    if bia == "NO" and rules.trust_burned_in_no:
        return None
    modality = str(ds.get("Modality") or "").strip().upper()
    if modality in rules.hold_back_modalities:
        return f"modality {modality} may carry burned-in annotation and no pixel rule covers it ({what})"
    sop_class = str(ds.get("SOPClassUID") or "")
    if sop_class in _BURN_IN_CLASSES or sop_class.startswith(_BURN_IN_FAMILIES):
        return (f"{UID(sop_class).name} may carry burned-in annotation and no pixel rule covers it "
                f"({what})")
    return None


def _describe(ds: Dataset) -> str:
    size = f"{ds.get('Columns', '?')}x{ds.get('Rows', '?')}"
    modality, maker = str(ds.get("Modality") or "-"), str(ds.get("Manufacturer") or "-")
    model = str(ds.get("ManufacturerModelName") or "-")
    return f"modality {modality!r}, manufacturer {maker!r}, model {model!r}, {size}"


def blank(ds: Dataset, regions: tuple[Region, ...], fill: int | None = None, *,
          syntax: str | None = None) -> None:
    """Write `fill` (default: the image's black) into `regions` of every frame of `ds`, in place, the
    pixel data staying in its transfer syntax (`syntax`, default `transfer_syntax(ds)`). HeldBack when
    it cannot be done (no decoder or encoder, a pixel layout that cannot be blanked); `ds` is then to
    be discarded (a codec failing half-way may have left it decoded)."""
    from pacs.codecs import EncodeOptions, TranscodeError, transcode

    stored = UID(syntax) if syntax else transfer_syntax(ds)
    if stored.is_compressed and int(ds.get("BitsAllocated") or 0) not in (8, 16):
        raise HeldBack(f"the burned-in regions cannot be blanked: {stored.name} with Bits Allocated "
                       f"{ds.get('BitsAllocated')} cannot be encoded again here")  # before any change
    _fill_values(ds, int(ds.get("SamplesPerPixel") or 1), fill)  # a fill out of range: before any change
    _unshare(ds)
    temporary = getattr(ds, "file_meta", None) is None
    if temporary:  # what the codecs read the syntax from; the caller makes the file meta it wants
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = stored
    try:
        if not stored.is_compressed:
            _blank_native(ds, stored, regions, fill)
            return
        # decoded (with what the codecs record of a lossy stream), blanked, encoded again as stored
        transcode(ds, ExplicitVRLittleEndian, new_uid=False)
        _blank_native(ds, UID(ExplicitVRLittleEndian), regions, fill)
        transcode(ds, stored, EncodeOptions(), new_uid=False)
    except TranscodeError as exc:
        raise HeldBack(f"the burned-in regions cannot be blanked: {exc}") from exc
    finally:
        if temporary:
            del ds.file_meta


def _unshare(ds: Dataset) -> None:
    """The image pixel elements (groups 0028 and 7FE0) and the file meta of `ds` made its own objects,
    so that changing them cannot change a data set `ds` was copied from element by element."""
    for tag, elem in list(ds._dict.items()):
        if tag.group in (0x0028, 0x7FE0) and isinstance(elem, DataElement):
            ds._dict[tag] = copy.copy(elem)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        ds.file_meta = copy.deepcopy(meta)


def _blank_native(ds: Dataset, syntax: UID, regions: tuple[Region, ...], fill: int | None) -> None:
    bits = int(ds.get("BitsAllocated") or 0)
    if bits not in (8, 16, 32):
        raise HeldBack(f"the burned-in regions cannot be blanked: Bits Allocated {bits}")
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        _expand_ybr_422(ds)
    rows, columns = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel") or 1)
    frames = max(1, int(ds.get("NumberOfFrames") or 1))
    planar = int(ds.get("PlanarConfiguration") or 0) if samples > 1 else 0
    signed = int(ds.get("PixelRepresentation") or 0)
    dtype = np.dtype(f"{'<' if syntax.is_little_endian else '>'}{'i' if signed else 'u'}{bits // 8}")
    count = rows * columns * samples * frames
    data = bytearray(ds.PixelData)
    if len(data) < count * dtype.itemsize:
        raise HeldBack(f"the burned-in regions cannot be blanked: {len(data)} bytes of pixel data for "
                       f"{frames} frame(s) of {columns}x{rows}x{samples} samples of {bits} bits")
    flat = np.frombuffer(data, dtype, count=count)
    view = flat.reshape((frames, samples, rows, columns) if planar else (frames, rows, columns, samples))
    values = _fill_values(ds, samples, fill)
    for x0, y0, x1, y1 in regions:
        x1, y1 = min(x1, columns), min(y1, rows)
        if x0 >= x1 or y0 >= y1:
            continue
        for s, value in enumerate(values):
            if planar:
                view[:, s, y0:y1, x0:x1] = value
            else:
                view[:, y0:y1, x0:x1, s] = value
    ds.PixelData = bytes(data)
    _forget_pixels(ds)


def _expand_ybr_422(ds: Dataset) -> None:
    """Native YBR_FULL_422 (two luminance samples share their chroma) made YBR_FULL, colour-by-pixel, so
    that a region can be blanked sample by sample; the values are those pydicom decodes, unchanged."""
    from pydicom.pixels import get_decoder

    syntax = ds.file_meta.TransferSyntaxUID
    options: dict[str, Any] = {"as_rgb": False}  # YBR samples as stored, not converted
    arr, props = get_decoder(syntax).as_array(ds, **options)
    if props["photometric_interpretation"] != "YBR_FULL":
        raise HeldBack("the burned-in regions cannot be blanked: YBR_FULL_422 pixel data not expanded")
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.PlanarConfiguration = 0
    order = "<" if UID(syntax).is_little_endian else ">"
    ds.PixelData = np.ascontiguousarray(arr, dtype=f"{order}u{int(ds.BitsAllocated) // 8}").tobytes()
    _forget_pixels(ds)


def _forget_pixels(ds: Dataset) -> None:
    ds._pixel_array = None
    ds._pixel_id = {}


def _fill_values(ds: Dataset, samples: int, fill: int | None) -> list[int]:
    """The value of each sample written in a blanked region."""
    bits = int(ds.get("BitsStored") or ds.BitsAllocated)
    signed = bool(int(ds.get("PixelRepresentation") or 0))
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if fill is not None:
        if not low <= fill <= high:
            raise HeldBack(f"the burned-in regions cannot be blanked: fill {fill} is outside {low}..{high}, "
                           "the values of this image")
        return [fill] * samples
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "MONOCHROME1":
        return [high] * samples
    if photometric == "MONOCHROME2":
        return [low] * samples
    if photometric.startswith("YBR") and samples == 3:
        return [0, 1 << (bits - 1), 1 << (bits - 1)]
    return [0] * samples


def load_pixel_rules(source: str | Path | Mapping[str, Any]) -> PixelRules:
    """Pixel rules from a TOML or JSON file, TOML or JSON text, or an already parsed mapping (the format
    is in this module's docstring). ValueError naming what is wrong."""
    if isinstance(source, Mapping):
        return _rules_from(source)
    if not str(source).strip():
        return PixelRules()
    text, name = _read(source)
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"pixel rules {name}: not valid TOML or JSON: {exc}") from None
    try:
        return _rules_from(data)
    except ValueError as exc:
        raise ValueError(f"pixel rules {name}: {exc}") from None


def _read(source: str | Path) -> tuple[str, str]:
    if isinstance(source, Path) or ("\n" not in source and not source.lstrip().startswith("{")
                                    and "=" not in source):
        path = Path(source)
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise ValueError(f"pixel rules {path}: {exc.strerror or exc}") from None
    return str(source), "(text)"


_RULE_KEYS = {"modality", "manufacturer", "model", "rows", "columns", "regions", "fill"}


def _rules_from(data: Mapping[str, Any]) -> PixelRules:
    unknown = set(data) - {"rule", "rules", "hold_back_modalities", "trust_burned_in_no"}
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
    items = [*data.get("rule", []), *data.get("rules", [])]
    rules = []
    for n, item in enumerate(items, 1):
        if not isinstance(item, Mapping):
            raise ValueError(f"rule {n}: a table of {', '.join(sorted(_RULE_KEYS))}")
        bad = set(item) - _RULE_KEYS
        if bad:
            raise ValueError(f"rule {n}: unknown key(s) {', '.join(sorted(bad))}")
        try:
            regions = tuple(tuple(r) for r in item.get("regions", []))
            rules.append(PixelRule(
                regions=regions,  # type: ignore[arg-type]  # checked by PixelRule
                modality=_text(item, "modality"), manufacturer=_text(item, "manufacturer"),
                model=_text(item, "model"), rows=_int(item, "rows"), columns=_int(item, "columns"),
                fill=_int(item, "fill") if item.get("fill") is not None else None))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"rule {n}: {exc}") from None
    kwargs: dict[str, Any] = {}
    if "hold_back_modalities" in data:
        modalities = data["hold_back_modalities"]
        if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
            raise ValueError("hold_back_modalities: a list of modality codes")
        kwargs["hold_back_modalities"] = frozenset(m.strip().upper() for m in modalities)
    if "trust_burned_in_no" in data:
        if not isinstance(data["trust_burned_in_no"], bool):
            raise ValueError("trust_burned_in_no: true or false")
        kwargs["trust_burned_in_no"] = data["trust_burned_in_no"]
    return PixelRules(tuple(rules), **kwargs)


def _text(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{key}: a text (glob pattern)")
    return value


def _int(item: Mapping[str, Any], key: str) -> int:
    value = item.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key}: an integer")
    return value
