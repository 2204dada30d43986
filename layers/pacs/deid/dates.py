"""Dates under Retain Longitudinal Temporal Information with Modified Dates (PS3.15 E.3.6).

One shift per patient: 1–3650 days back (never 0, never more than ten years), derived from the
key and the ORIGINAL Patient ID and Issuer of Patient ID by HMAC-SHA256: the same in every call
and process with no state, different under another key. DA values and the date part of DT values
are moved back by it (partial DT/DA precision kept); TM values are kept (a whole-day shift keeps
the time of day). A value that is not a date becomes the VR's dummy.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, timedelta

MIN_DAYS, MAX_DAYS = 1, 3650
DUMMY_DA = "19000101"


def shift_days(key: bytes, patient_id: str, issuer: str = "") -> int:
    """The patient's shift in days (MIN_DAYS..MAX_DAYS, applied backwards)."""
    msg = b"shift\0" + patient_id.strip().encode("utf-8", "replace") + b"\0" + issuer.strip().encode(
        "utf-8", "replace")
    digest = hmac.new(key, msg, hashlib.sha256).digest()
    return MIN_DAYS + int.from_bytes(digest[:8], "big") % (MAX_DAYS - MIN_DAYS + 1)


def _shift_date(text: str, days: int) -> str | None:
    """`text` (YYYY, YYYYMM or YYYYMMDD) moved `days` back, at the same precision; None if invalid."""
    if len(text) not in (4, 6, 8) or not text.isdigit():
        return None
    try:
        day = date(int(text[:4]), int(text[4:6] or 1), int(text[6:8] or 1))
        moved = day - timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return moved.strftime("%Y%m%d")[: len(text)].rjust(len(text), "0")


def shift_da(value: str, days: int) -> str:
    """A DA value (backslash multi-values, ranges `a-b` too) shifted `days` back."""
    out = []
    for one in value.split("\\"):
        parts = [p.strip() for p in one.split("-")]
        moved = [(_shift_date(p, days) or DUMMY_DA) if p else "" for p in parts]
        out.append("-".join(moved))
    return "\\".join(out)


def shift_dt(value: str, days: int) -> str:
    """A DT value: its date part (first 4, 6 or 8 digits) shifted, time and offset kept."""
    out = []
    for one in value.split("\\"):
        one = one.strip()
        digits = len(one) - len(one.lstrip("0123456789"))
        head = min(digits, 8)
        if head not in (4, 6, 8):
            out.append("19000101000000")
            continue
        moved = _shift_date(one[:head], days)
        out.append((moved + one[head:]) if moved else "19000101000000")
    return "\\".join(out)
