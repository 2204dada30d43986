"""Errors that carry the DICOM status or HTTP status they become, and a reason a person can act on."""

from __future__ import annotations


class PacsError(Exception):
    """Base error: `dimse_status` for DIMSE responses, `http_status` for DICOMweb responses."""

    dimse_status: int = 0xC000  # Error: cannot understand
    http_status: int = 500
    #: The instance concerned, when known (a STOW-RS failure lists it).
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidUID(PacsError):
    """A UID that is not key-safe (letters, digits, dots, dashes, at most 64 characters), or not a
    conformant UID where one is required (the strict UID policy, a transfer syntax)."""

    dimse_status = 0xA900  # Error: data set does not match SOP class
    http_status = 400


class InvalidDataset(PacsError):
    """Not DICOM, truncated, or missing a required attribute."""

    dimse_status = 0xC000  # Error: cannot understand
    http_status = 400


class DuplicateRejected(PacsError):
    """A re-sent SOP Instance UID with different content, refused by the duplicate policy."""

    dimse_status = 0xA900
    http_status = 409


class WrongStudy(PacsError):
    """An instance sent to a study (STOW-RS `/studies/{study}`) that belongs to another: not stored."""

    dimse_status = 0xA900  # Error: data set does not match SOP class (PS3.18 10.5.3.1)
    http_status = 409


class StorageFailure(PacsError):
    """The object store did not accept the write: nothing was stored."""

    dimse_status = 0xA700  # Refused: out of resources
    http_status = 503


class NotFound(PacsError):
    """A study, series, instance or object that does not exist."""

    http_status = 404


class CatalogConflict(PacsError):
    """A catalog write kept conflicting with concurrent writers; the caller should retry later."""

    dimse_status = 0xA700
    http_status = 503
