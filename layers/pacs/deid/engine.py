"""The de-identifier: one data set (or Part 10 object) in, a de-identified copy out.

PS3.15 Annex E: the Basic Application Level Confidentiality Profile and every option, as data
(`table`), compound codes by IOD Type (`iod_types`), UIDs by keyed hash (`uids`), per-patient date
shifts (`dates`), pseudonyms (`pseudonyms`), safe private attributes (`private`), the
de-identification attributes (`method`). File meta made anew: Media Storage SOP Instance UID
follows the new SOP Instance UID, our Implementation Class UID and Version, no Source AE Title; the
original transfer syntax kept; the preamble zeroed.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pacs.deid import dates, method, pseudonyms, walk
from pacs.deid.encode import encode
from pacs.deid.options import DeidError, Option, Profile
from pacs.deid.pixels import PixelRules
from pacs.deid.table import compile_table
from pacs.deid.uids import UidMapper


class CrosswalkWriter(Protocol):
    """Where original → pseudonym pairs go for authorised re-identification (`pacs.deid.crosswalk`)."""

    def record(self, kind: str, original: str, pseudonym: str) -> None: ...


@dataclass(frozen=True, slots=True)
class DeidSettings:
    """What one de-identification run uses."""

    profile: Profile = field(default_factory=Profile)
    #: The project's secret key (`pacs.deid.secrets`): the same key, the same pseudonyms and UIDs.
    key: bytes = b""
    #: The project's name (pseudonyms of two projects never match).
    project: str = "default"
    #: Burned-in regions to blank (Clean Pixel Data option).
    pixel_rules: PixelRules = field(default_factory=PixelRules)


@dataclass(frozen=True, slots=True)
class Deidentified:
    """A de-identified Part 10 object and the identifiers it now has."""

    data: bytes
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str


IMPLEMENTATION_CLASS_UID = "2.25.8511620340853933741194546798660130975"
IMPLEMENTATION_VERSION = "PACS_DEID_1"
#: What a malformed object makes pydicom (or the walk over its values) raise.
_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError, struct.error)


class Deidentifier:
    """PS3.15 Annex E de-identification under `settings.profile` (see `pacs.deid.table` for the
    decisions, `pacs.deid.walk` for the pass over the elements). One instance per project key may
    serve many calls and threads of work in turn; it holds caches (UIDs, crosswalk pairs seen)."""

    def __init__(self, settings: DeidSettings, crosswalk: CrosswalkWriter | None = None) -> None:
        if not settings.key:
            raise DeidError("no project key: de-identification needs the project's secret")
        self.settings = settings
        self.crosswalk = crosswalk
        self._amap = compile_table(settings.profile.options)
        self._uids = UidMapper(settings.key)
        self._seen: set[tuple[str, str]] = set()

    def uid(self, value: str) -> str:
        """The replacement of a UID: `2.25.` + a keyed hash, the same for the same input and key."""
        return self._uids.map(value)

    def shift_days(self, patient_id: str, issuer: str = "") -> int:
        """The date shift (days back) of a patient under Retain Longitudinal with Modified Dates."""
        return dates.shift_days(self.settings.key, patient_id, issuer)

    def _record(self, kind: str, original: str, pseudonym: str) -> None:
        if self.crosswalk is None or not original or (kind, original) in self._seen:
            return
        self._seen.add((kind, original))
        self.crosswalk.record(kind, original, pseudonym)

    def _pseudonym(self, tag: int, src: Dataset, original: str) -> str:
        key = self.settings.key
        if tag == walk.ACCESSION:
            value = pseudonyms.accession(key, original)
            self._record("accession_number", original, value)
            return value
        pid_elem = src._dict.get(BaseTag(walk.PATIENT_ID))
        issuer_elem = src._dict.get(BaseTag(walk.ISSUER))
        pid = walk.text_of(src, pid_elem).strip() if pid_elem is not None else ""
        issuer = walk.text_of(src, issuer_elem).strip() if issuer_elem is not None else ""
        if tag == walk.PATIENT_ID:
            value = pseudonyms.patient_id(key, original, issuer)
            self._record("patient_id", original, value)
        else:
            value = pseudonyms.patient_name(key, pid, issuer)
            self._record("patient_name", original, value)
        return value

    def dataset(self, ds: Dataset) -> Dataset:
        """A de-identified copy of `ds` (left untouched; kept values, Pixel Data included, share
        its bytes). Raises HeldBack or DeidError."""
        profile = self.settings.profile
        sop_class = _ui(ds, 0x00080016)
        ctx = walk.Context(
            top=ds, sop_class=sop_class, amap=self._amap, uid=self._uids.map,
            retain_uids=Option.RETAIN_UIDS in profile,
            modified_dates=Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in profile,
            key=self.settings.key, pseudonym=self._pseudonym)
        try:
            out = walk.walk(ds, ctx)
        except _ERRORS as exc:
            raise DeidError(f"cannot de-identify: {type(exc).__name__}: {exc}") from exc
        out._parent_encoding = ds._parent_encoding
        for tag in [t for t in out._dict if t >> 16 == 2]:
            del out._dict[tag]  # file meta in the data set body (a broken writer's): made anew below
        method.stamp(out, profile)
        if Option.CLEAN_PIXEL_DATA in profile and 0x7FE00010 in out._dict:
            self._clean_pixels(ds, out)
        self._record_study(ds, out, ctx)
        out.file_meta = self._file_meta(ds, out)
        out.preamble = b"\0" * 128
        return out

    def _clean_pixels(self, ds: Dataset, out: Dataset) -> None:
        """Clean Pixel Data: the rules match on the original (its modality, manufacturer, model and
        Burned In Annotation, which `out` may no longer have) and read its transfer syntax."""
        self.settings.pixel_rules.clean(out, match=ds)
        out.add_new(0x00280301, "CS", "NO")  # E.3.1 (the rules set it too; a new element, not ds's)

    def _record_study(self, ds: Dataset, out: Dataset, ctx: walk.Context) -> None:
        if self.crosswalk is None:
            return
        study = _ui(ds, 0x0020000D)
        if study:
            self._record("study_uid", study, _ui(out, 0x0020000D))
        if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in self.settings.profile and 0x00100020 in ds._dict:
            pid = ctx.top_text(walk.PATIENT_ID)
            self._record("date_shift_days", pid, str(ctx.shift))

    def _file_meta(self, ds: Dataset, out: Dataset) -> FileMetaDataset:
        meta = FileMetaDataset()
        old = getattr(ds, "file_meta", None)
        syntax = old.get("TransferSyntaxUID") if old is not None else None
        if syntax is None:
            syntax = ImplicitVRLittleEndian if ds._read_implicit else ExplicitVRLittleEndian
        sop_class = _ui(out, 0x00080016) or (old.get("MediaStorageSOPClassUID") if old else None)
        sop_uid = _ui(out, 0x00080018)
        if not sop_class or not sop_uid:
            raise DeidError("not a composite instance: no SOP Class UID or SOP Instance UID")
        meta.MediaStorageSOPClassUID = UID(str(sop_class))
        meta.MediaStorageSOPInstanceUID = UID(str(sop_uid))
        meta.TransferSyntaxUID = UID(str(syntax))
        meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION
        return meta

    def part10(self, data: bytes | BinaryIO) -> Deidentified:
        """De-identify a Part 10 object: a new Part 10 object (preamble zeroed, file meta made anew,
        the original transfer syntax kept). Raises HeldBack or DeidError."""
        try:
            ds = pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data, force=True)
        except Exception as exc:
            raise DeidError(f"not a readable DICOM object: {type(exc).__name__}: {exc}") from exc
        if not ds._dict:
            raise DeidError("not a DICOM object: no data elements")
        out = self.dataset(ds)
        for tag in [t for t in out._dict if t >> 16 == 0]:
            del out._dict[tag]  # command elements have no place in a Part 10 data set (PS3.10 7.1)
        try:
            raw = encode(out)
        except _ERRORS as exc:
            raise DeidError(f"cannot write the de-identified object: {type(exc).__name__}: {exc}") from exc
        meta = out.file_meta
        return Deidentified(raw, _ui(out, 0x0020000D), _ui(out, 0x0020000E),
                            str(meta.MediaStorageSOPInstanceUID), str(meta.MediaStorageSOPClassUID),
                            str(meta.TransferSyntaxUID))


def _ui(ds: Dataset, tag: int) -> str:
    """A UID of `ds` as text, read without decoding the element in place."""
    found = ds._dict.get(BaseTag(tag))
    return walk.text_of(ds, found, "UI") if found is not None else ""
