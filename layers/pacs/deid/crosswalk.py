"""The crosswalk: original → pseudonym pairs of one project, encrypted, for authorised re-identification.

One object per pair, (kind, pseudonym, original), at

    {partition}/export/crosswalk/{project}/{HMAC(pseudonym)}/{HMAC(kind, original)}

(hex HMAC-SHA256 under a key derived from the project's key), holding `PCW1 | nonce | AES-256-GCM(JSON
{kind, original, pseudonym})` with the object's key as associated data (an object moved to another key
does not decrypt). Neither keys nor bytes show an identifier in clear. Both keys are derived from the
project key by HKDF-SHA256 with their own info strings, so the crosswalk cannot be read without the
project's secret.

Writes are put-if-absent: recording the same pair again (another instance of the study, another
process, another Lambda) leaves the one object there; no read-modify-write, no index to race on. A
pseudonym that stands for several originals (a date shift shared by patients, a collision) keeps them
all: `lookup` lists every one, nothing recorded is ever replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pacs.deid.options import DeidError
from pacs.errors import NotFound
from pacs.storage.keys import check_partition
from pacs.storage.port import AlreadyExists, BlobStore

MAGIC = b"PCW1"
_NONCE = 12
PROJECT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Object keys remembered as written by this process (no request for a pair already recorded here).
_REMEMBERED = 65536


def check_project(project: str) -> str:
    """A project name usable in an object key: letters, digits, '.', '_', '-', 1-64 characters."""
    if not PROJECT_PATTERN.fullmatch(project) or ".." in project:
        raise DeidError(f"project {project!r} must match {PROJECT_PATTERN.pattern}")
    return project


def _derive(key: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=b"pacs-deid-crosswalk-v1", info=info).derive(key)


class Crosswalk:
    """The crosswalk of `project` in `store`, readable and writable with the project's key."""

    def __init__(self, store: BlobStore, partition: str, project: str, key: bytes) -> None:
        if len(key) < 16:
            raise DeidError("the crosswalk needs the project's key (16 bytes or more)")
        self.store = store
        self.prefix = f"{check_partition(partition)}/export/crosswalk/{check_project(project)}/"
        self._aead = AESGCM(_derive(key, b"encryption"))
        self._names = _derive(key, b"object names")
        self._written: OrderedDict[str, None] = OrderedDict()

    def _name(self, text: str) -> str:
        return hmac.new(self._names, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def key_for(self, kind: str, original: str, pseudonym: str) -> str:
        """The object key of a pair."""
        return f"{self.prefix}{self._name(pseudonym)}/{self._name(kind + chr(0) + original)}"

    def record(self, kind: str, original: str, pseudonym: str) -> None:
        """Record that `pseudonym` (of `kind`: a UID, a patient ID…) stands for `original`."""
        key = self.key_for(kind, original, pseudonym)
        if key in self._written:
            self._written.move_to_end(key)
            return
        payload = json.dumps({"kind": kind, "original": original, "pseudonym": pseudonym},
                             ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        nonce = os.urandom(_NONCE)
        blob = MAGIC + nonce + self._aead.encrypt(nonce, payload, key.encode())
        with contextlib.suppress(AlreadyExists):  # recorded before (here or elsewhere): that one stays
            self.store.put(key, blob, content_type="application/octet-stream", if_absent=True)
        self._written[key] = None
        if len(self._written) > _REMEMBERED:
            self._written.popitem(last=False)

    def lookup(self, pseudonym: str) -> list[tuple[str, str]]:
        """The (kind, original) pairs recorded for `pseudonym`, sorted; DeidError when an entry does not
        decrypt with this key (another project's key, or tampered with)."""
        found: list[tuple[str, str]] = []
        for info in self.store.list(f"{self.prefix}{self._name(pseudonym)}/"):
            try:
                blob = self.store.get(info.key)
            except NotFound:
                continue
            entry = self._open(info.key, blob)
            if entry["pseudonym"] == pseudonym:
                found.append((entry["kind"], entry["original"]))
        return sorted(found)

    def _open(self, key: str, blob: bytes) -> dict[str, str]:
        if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _NONCE + 16:
            raise DeidError(f"crosswalk entry {key} is not one (bad header)")
        nonce = blob[len(MAGIC):len(MAGIC) + _NONCE]
        try:
            payload = self._aead.decrypt(nonce, blob[len(MAGIC) + _NONCE:], key.encode())
        except InvalidTag:
            raise DeidError(f"crosswalk entry {key} does not decrypt with this project's key") from None
        entry = json.loads(payload)
        return {k: str(entry[k]) for k in ("kind", "original", "pseudonym")}
