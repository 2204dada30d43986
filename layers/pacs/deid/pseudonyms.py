"""Pseudonyms deterministic per project key: Patient ID → 16 characters of base32 of an HMAC,
Patient's Name → `ANON^` + the same, Accession Number → 16 characters (SH). The same original
under the same key always gives the same pseudonym; another project (key) a different one."""

from __future__ import annotations

import base64
import hashlib
import hmac


def _code(key: bytes, kind: str, value: str, length: int = 16) -> str:
    digest = hmac.new(key, kind.encode() + b"\0" + value.strip().encode("utf-8", "replace"),
                      hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii")[:length]


def patient_id(key: bytes, original: str, issuer: str = "") -> str:
    return _code(key, "pid", original + "\0" + issuer.strip())


def patient_name(key: bytes, original_id: str, issuer: str = "") -> str:
    """Derived from the patient's ID (not the name): one patient, one name, whatever the spelling."""
    return "ANON^" + patient_id(key, original_id, issuer)


def accession(key: bytes, original: str) -> str:
    return _code(key, "acc", original)
