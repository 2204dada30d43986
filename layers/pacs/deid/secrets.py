"""The per-project secret keys behind pseudonyms, UIDs and date shifts.

One master secret per installation: a file in the data directory for `pacs up` (made on first use,
mode 0600), a Secrets Manager secret or a KMS-encrypted (SecureString) SSM parameter in AWS. Each
project's key is derived from it (HKDF-SHA256, the project's name as info): two projects never share
pseudonyms, and one secret to guard and rotate.

INTERFACE SKELETON (issue 13): the file source works; the AWS sources come with the helpers.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pacs.deid.options import DeidError

MASTER_BYTES = 32


class SecretSource(Protocol):
    def master(self) -> bytes:
        """The installation's master secret (at least 32 bytes); DeidError when it cannot be read."""
        ...


def project_key(master: bytes, project: str) -> bytes:
    """The project's key: HKDF-SHA256 of the master secret with the project's name as info."""
    if len(master) < 16:
        raise DeidError("the de-identification master secret is shorter than 16 bytes")
    return HKDF(hashes.SHA256(), 32, salt=b"pacs-deid-v1", info=project.encode()).derive(master)


class FileSecret:
    """The master secret in a file (embedded): made on first use, readable by its owner only."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def master(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            pass
        self.path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_bytes(MASTER_BYTES)
        try:  # O_EXCL: two processes making it at once agree on the first one written
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self.path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(value)
            f.flush()
            os.fsync(f.fileno())
        return value
