"""UIDs: what a conformant UID is, what is safe as a key, and which SOP classes store instances.

Nothing taken from a dataset reaches a key or a path unchecked: `check_uid` admits a *key-safe*
identifier (letters, digits, dots and dashes, starting with a letter or digit, at most 64
characters), which can never leave its prefix (no '/', no NUL, no '.' or '..' component).
Conformant UIDs (`is_valid_uid`) are a subset; real devices also emit hashes and GUIDs, which ingest
accepts or refuses by its UID policy (`UidPolicy`, setting `PACS_UID_POLICY`).
"""

from __future__ import annotations

import enum
import re

from pydicom._uid_dict import UID_dictionary

from pacs.errors import InvalidUID

UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
MAX_UID_LENGTH = 64
#: What may become part of a key: a letter or digit, then letters, digits, dots and dashes.
KEY_SAFE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
#: Storage SOP classes newer than pydicom's UID dictionary (pynetdicom knows them).
_NEWER_STORAGE = (
    "1.2.840.10008.5.1.4.1.1.9.100.1",  # Waveform Presentation State Storage
    "1.2.840.10008.5.1.4.1.1.9.100.2",  # Waveform Acquisition Presentation State Storage
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
    "1.2.840.10008.5.1.4.1.1.66.8",  # Height Map Segmentation Storage
)


class UidPolicy(enum.StrEnum):
    """Which instance UIDs ingest accepts."""

    #: Conformant UIDs only (digits and dots).
    STRICT = "strict"
    #: Conformant UIDs and key-safe non-UIDs (hashes, GUIDs): stored and served by their value.
    KEY_SAFE = "key-safe"


def is_valid_uid(value: object) -> bool:
    """True when `value` is a DICOM UID: digits and dots, no empty component, at most 64 characters."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_UID_LENGTH
        and UID_PATTERN.fullmatch(value) is not None
    )


def is_key_safe(value: object) -> bool:
    """True when `value` may become part of a key: letters, digits, dots and dashes, starting with a
    letter or digit, at most 64 characters (every valid UID is key-safe)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_UID_LENGTH
        and KEY_SAFE_PATTERN.fullmatch(value) is not None
    )


def _why_not(value: object) -> str:
    if not isinstance(value, str):
        return "not text"
    if not value:
        return "empty"
    if len(value) > MAX_UID_LENGTH:
        return f"{len(value)} characters, more than {MAX_UID_LENGTH}"
    if "\0" in value:
        return "contains NUL"
    if "/" in value or "\\" in value:
        return "contains a path separator"
    if not value[0].isascii() or not value[0].isalnum():
        return "does not start with a letter or digit"
    return "only letters, digits, dots and dashes are allowed"


def check_uid(value: object, name: str = "UID", *, strict: bool = False) -> str:
    """`value` (DICOM padding removed) when it is key-safe (with `strict`: a conformant UID), else
    InvalidUID naming the attribute and the reason."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        value = value.rstrip("\x00 ")
    # The reason first: a DIMSE Error Comment keeps only 64 characters.
    if not is_key_safe(value):
        raise InvalidUID(f"{name} {_why_not(value)}: {repr(value)[:80]} (not a UID)")
    if strict and not is_valid_uid(value):
        raise InvalidUID(f"{name} is not a valid UID (digits and dots): {repr(value)[:80]}")
    return value  # type: ignore[return-value]


def check_policy(value: str, name: str, policy: UidPolicy) -> str:
    """`value` (already key-safe) under ingest's UID policy: InvalidUID when the policy is strict
    and it is not a conformant UID."""
    if policy is UidPolicy.STRICT and not is_valid_uid(value):
        raise InvalidUID(f"{name} is not a valid UID (UID policy strict): {value!r}")
    return value


def _storage_classes() -> frozenset[str]:
    """Every storage SOP class of the standard, retired ones included: what pydicom's UID dictionary
    names '… Storage' (not Storage Commitment, not the Media Storage Directory), and newer ones."""
    named = {
        uid for uid, (name, kind, *_rest) in UID_dictionary.items()
        if kind == "SOP Class" and "Storage" in name
        and "Storage Commitment" not in name and "Media Storage Directory" not in name
    }
    return frozenset(named | set(_NEWER_STORAGE))


#: Every storage SOP class of the standard, retired included (PS3.4 Annex B and the classes that
#: store with it: hanging protocols, colour palettes, implant templates, procedure protocols…).
STORAGE_SOP_CLASSES = _storage_classes()


def is_storage_sop_class(uid: str) -> bool:
    """A storage SOP class of the standard (retired included)."""
    return uid in STORAGE_SOP_CLASSES


def is_unknown_sop_class(uid: str) -> bool:
    """A key-safe UID that is not a UID of the standard pydicom knows (a private class, or one newer than
    its dictionary): what the gateway accepts as a storage SOP class when configured to
    (`accept_unknown_sop_classes`). Known non-storage classes (worklist, print…) are not unknown."""
    return is_key_safe(uid) and uid not in UID_dictionary and uid not in STORAGE_SOP_CLASSES
