"""The de-identifier: one data set (or Part 10 object) in, a de-identified copy out.

INTERFACE SKELETON (issue 13): the signatures below are what the services and the CLI call; the
body is a placeholder that the engine replaces (the Annex E table, every option, UIDs, dates, ...).
"""

from __future__ import annotations

import hashlib
import hmac
import io
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

import pydicom
from pydicom.dataset import Dataset

from pacs.deid.options import DeidError, Profile
from pacs.deid.pixels import PixelRules


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


class Deidentifier:
    def __init__(self, settings: DeidSettings, crosswalk: CrosswalkWriter | None = None) -> None:
        if not settings.key:
            raise DeidError("no project key: de-identification needs the project's secret")
        self.settings = settings
        self.crosswalk = crosswalk

    def uid(self, value: str) -> str:
        """The replacement of a UID: `2.25.` + a keyed hash, the same for the same input and key."""
        digest = hmac.new(self.settings.key, value.encode("ascii", "replace"), hashlib.sha256).digest()
        return "2.25." + str(int.from_bytes(digest[:16], "big"))

    def dataset(self, ds: Dataset) -> Dataset:
        """A de-identified copy of `ds` (left untouched). Raises HeldBack or DeidError."""
        out = Dataset(ds)  # PLACEHOLDER: the engine replaces this body
        out = pydicom.dcmread(io.BytesIO(_encode(ds)), force=True)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            if keyword in out:
                setattr(out, keyword, self.uid(str(getattr(out, keyword))))
        out.PatientName = "ANON"
        out.PatientID = "ANON"
        out.PatientIdentityRemoved = "YES"
        if "file_meta" in out.__dict__ or getattr(out, "file_meta", None) is not None:
            out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        return out

    def part10(self, data: bytes | BinaryIO) -> Deidentified:
        """De-identify a Part 10 object: a new Part 10 object (preamble zeroed, file meta made anew,
        the original transfer syntax kept). Raises HeldBack or DeidError."""
        try:
            ds = pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data, force=True)
        except Exception as exc:
            raise DeidError(f"not a readable DICOM object: {type(exc).__name__}: {exc}") from exc
        out = self.dataset(ds)
        raw = _encode(out)
        return Deidentified(raw, str(out.StudyInstanceUID), str(out.SeriesInstanceUID),
                            str(out.SOPInstanceUID), str(out.SOPClassUID),
                            str(out.file_meta.TransferSyntaxUID))


def _encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.preamble = b"\0" * 128
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
