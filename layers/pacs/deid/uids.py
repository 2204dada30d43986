"""UID replacement (action U): `2.25.` + the integer of a keyed HMAC-SHA256 truncated to 128 bits
(a UUID-sized value, PS3.5 B.2), at most 44 characters. The same input and key always give the
same output: across calls, processes and Lambda invocations, with no state but the key.
Registered DICOM UIDs (`1.2.840.10008.…`: SOP classes, transfer syntaxes, coding schemes) are
not instance UIDs and are kept."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

DICOM_ROOT = "1.2.840.10008."


class UidMapper:
    """Keyed UID remapping with a bounded LRU cache."""

    def __init__(self, key: bytes, cache_size: int = 65536) -> None:
        self._key = key
        self.map = lru_cache(maxsize=cache_size)(self._map)

    def _map(self, value: str) -> str:
        stripped = value.strip("\0 ")
        if not value or stripped.startswith(DICOM_ROOT):
            return stripped
        value = stripped or value  # a UID of NULs or spaces still gets a (non-empty) replacement
        digest = hmac.new(self._key, b"uid\0" + value.encode("ascii", "replace"), hashlib.sha256).digest()
        return "2.25." + str(int.from_bytes(digest[:16], "big"))
