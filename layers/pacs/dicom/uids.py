"""UID validation: nothing taken from a dataset reaches a key or a path unchecked."""

from __future__ import annotations

import re

from pacs.errors import InvalidUID

UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
MAX_UID_LENGTH = 64


def is_valid_uid(value: object) -> bool:
    """True when `value` is a DICOM UID: digits and dots, no empty component, at most 64 characters."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_UID_LENGTH
        and UID_PATTERN.fullmatch(value) is not None
    )


def check_uid(value: object, name: str = "UID") -> str:
    """Return `value` as a valid UID or raise InvalidUID naming the attribute."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        value = value.rstrip("\x00 ")
    if not is_valid_uid(value):
        shown = repr(value)[:80]
        raise InvalidUID(f"{name} {shown} is not a valid UID (digits and dots, at most 64 characters)")
    return value  # type: ignore[return-value]
