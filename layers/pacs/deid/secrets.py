"""The per-project secret keys behind pseudonyms, UIDs and date shifts.

One master secret per installation (`secret_source(settings)`):

- embedded: a file, PACS_DEID_SECRET or DATA_DIR/deid/secret.key, made on first use (32 random bytes,
  mode 0600, created atomically: processes starting together agree on one value);
- AWS: a Secrets Manager secret when PACS_DEID_SECRET is its ARN (`arn:aws:secretsmanager:…`;
  SecretString, a JSON SecretString's `secret` value, or SecretBinary), else an SSM SecureString
  parameter (its name, default `/pacs/deid/secret`, read WithDecryption). Read once per process and
  cached. A generated secret needs 64 characters or more (CDK: `password_length=64,
  exclude_punctuation=True`): the default 32 carry less than 256 bits.

A value is accepted as raw bytes (a file made here, SecretBinary), or as text: hex, base64 (standard
or URL-safe), or a passphrase. At least 32 bytes of entropy are required (estimated: 32 decoded bytes
that are not repetitive, or a passphrase of at least 256 bits by its character statistics); anything
less is a DeidError that says how to make a good one (`openssl rand -base64 32`).

Each project's key is derived from the master (HKDF-SHA256, the project's name as info): two projects
never share pseudonyms, and one secret to guard and rotate.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import math
import os
import re
import secrets
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pacs.deid.options import DeidError

if TYPE_CHECKING:
    from pacs.config import Settings

MASTER_BYTES = 32
#: The SSM parameter read in AWS when PACS_DEID_SECRET is empty.
DEFAULT_PARAMETER = "/pacs/deid/secret"
#: Entropy asked of a master secret (bits).
MIN_BITS = 8 * MASTER_BYTES
_HOW = "use at least 32 random bytes, e.g. the output of `openssl rand -base64 32`"


class SecretSource(Protocol):
    def master(self) -> bytes:
        """The installation's master secret (at least 32 bytes); DeidError when it cannot be read."""
        ...


def project_key(master: bytes, project: str) -> bytes:
    """The project's key: HKDF-SHA256 of the master secret with the project's name as info."""
    if len(master) < 16:
        raise DeidError("the de-identification master secret is shorter than 16 bytes")
    return HKDF(hashes.SHA256(), 32, salt=b"pacs-deid-v1", info=project.encode()).derive(master)


def secret_source(settings: Settings) -> FileSecret | SecretsManagerSecret | ParameterSecret:
    """The master secret's source for these settings (see the module's docstring); each kind is a
    SecretSource and says where it reads (`describe()`, never the secret itself)."""
    name = settings.deid_secret.strip()
    if settings.backend == "aws":
        endpoint = settings.endpoint_url or None
        if name.startswith("arn:aws:secretsmanager:"):
            return SecretsManagerSecret(name, region=settings.region, endpoint_url=endpoint)
        return ParameterSecret(name or DEFAULT_PARAMETER, region=settings.region, endpoint_url=endpoint)
    return FileSecret(Path(name) if name else settings.data_dir / "deid" / "secret.key")


# --- the value -----------------------------------------------------------------------------------------

def parse_secret(value: bytes | str, where: str) -> bytes:
    """The master bytes of a stored value: text (hex, base64, passphrase; surrounding white space
    ignored) or raw bytes. DeidError when it holds less than 32 bytes of entropy."""
    if isinstance(value, bytes):
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return _checked(value, where)
        if not text.strip().isprintable():
            return _checked(value, where)
        value = text
    text = value.strip()
    if not text:
        raise DeidError(f"the de-identification secret in {where} is empty: {_HOW}")
    if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", text):
        return _checked(bytes.fromhex(text), where)
    if re.fullmatch(r"[A-Za-z0-9+/_-]+={0,2}", text) and len(text) >= 43:
        try:
            decoded = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4),
                                       validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if decoded:
            return _checked(decoded, where)
    bits = len(text) * _bits_per_symbol(text)
    if bits < MIN_BITS:
        raise DeidError(f"the de-identification secret in {where} is too weak (a passphrase of about "
                        f"{bits:.0f} bits, {MIN_BITS} needed): {_HOW}")
    return text.encode("utf-8")


def _bits_per_symbol(data: str | bytes) -> float:
    """Shannon entropy of the value's own symbol frequencies (an estimate: repetition lowers it)."""
    counts = Counter(data)
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in counts.values()) if n else 0.0


def _checked(raw: bytes, where: str) -> bytes:
    if len(raw) < MASTER_BYTES:
        raise DeidError(f"the de-identification secret in {where} is too short ({len(raw)} bytes, "
                        f"{MASTER_BYTES} needed): {_HOW}")
    if _bits_per_symbol(raw) < 3.0:  # 32 random bytes: about 4.8 bits per byte; repeated patterns: less
        raise DeidError(f"the de-identification secret in {where} is repetitive, not random: {_HOW}")
    return raw


# --- the file (embedded) -------------------------------------------------------------------------------

class FileSecret:
    """The master secret in a file (embedded): made on first use, readable by its owner only."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return f"the file {self.path.resolve()}"

    def exists(self) -> bool:
        return self.path.exists()

    def master(self) -> bytes:
        try:
            return self._read()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise DeidError(f"cannot read the de-identification secret {self.path}: "
                            f"{exc.strerror or exc}") from None
        self._create()
        return self._read()

    def _read(self) -> bytes:
        with open(self.path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & 0o077:
                raise DeidError(f"the de-identification secret {self.path} can be read by others "
                                f"(mode {mode & 0o777:o}): `chmod 600 {self.path}`")
            data = f.read()
        return parse_secret(data, str(self.path))

    def _create(self) -> None:
        """32 random bytes written to a private temporary file, then linked to the name: the name
        appears complete or not at all, and never replaces one another process made first."""
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{self.path.name}.", suffix=".tmp")  # 0600
        except OSError as exc:
            raise DeidError(f"cannot create the de-identification secret {self.path}: "
                            f"{exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(MASTER_BYTES))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return  # another process made it first: that one is the secret
            dir_fd = os.open(parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise DeidError(f"cannot create the de-identification secret {self.path}: "
                            f"{exc.strerror or exc}") from None
        finally:
            Path(tmp).unlink(missing_ok=True)


# --- AWS -----------------------------------------------------------------------------------------------

_CACHE: dict[tuple[str, ...], bytes] = {}
_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget the secrets read from AWS (a rotation, tests)."""
    with _LOCK:
        _CACHE.clear()


class _AwsSecret(abc.ABC):
    service = ""

    def __init__(self, name: str, *, region: str = "", endpoint_url: str | None = None,
                 client: Any | None = None) -> None:
        self.name, self.region, self.endpoint_url, self._client = name, region, endpoint_url, client

    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client(self.service, region_name=self.region or None,
                                        endpoint_url=self.endpoint_url)
        return self._client

    def master(self) -> bytes:
        key = (self.service, self.name, self.region, self.endpoint_url or "")
        with _LOCK:
            cached = _CACHE.get(key)
        if cached is not None:
            return cached
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            value = self._fetch()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "") or str(exc)
            raise DeidError(f"cannot read the de-identification secret {self.describe()}: {code}") from None
        except BotoCoreError as exc:
            raise DeidError(f"cannot read the de-identification secret {self.describe()}: {exc}") from None
        master = parse_secret(value, self.describe())
        with _LOCK:
            return _CACHE.setdefault(key, master)

    def describe(self) -> str:
        return f"the {self.service} secret {self.name}"

    @abc.abstractmethod
    def _fetch(self) -> bytes | str:
        """The stored value (ClientError / BotoCoreError when it cannot be read)."""


class SecretsManagerSecret(_AwsSecret):
    """A Secrets Manager secret (its ARN), SecretString or SecretBinary."""

    service = "secretsmanager"

    def __init__(self, arn: str, *, region: str = "", endpoint_url: str | None = None,
                 client: Any | None = None) -> None:
        parts = arn.split(":")
        super().__init__(arn, region=(parts[3] if len(parts) > 3 and parts[3] else region),
                         endpoint_url=endpoint_url, client=client)

    def describe(self) -> str:
        return f"the Secrets Manager secret {self.name}"

    def _fetch(self) -> bytes | str:
        resp = self.client().get_secret_value(SecretId=self.name)
        if resp.get("SecretBinary") is not None:
            return bytes(resp["SecretBinary"])
        text = str(resp.get("SecretString") or "")
        if text.lstrip().startswith("{"):  # a JSON secret (generated from a template): its one value
            return _json_value(text, self.describe())
        return text


def _json_value(text: str, where: str) -> str:
    """The secret in a JSON SecretString: the value of `secret` or `key`, else the only value."""
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if not isinstance(data, dict):
        return text
    for name in ("secret", "key"):
        if isinstance(data.get(name), str):
            return str(data[name])
    values = [v for v in data.values() if isinstance(v, str)]
    if len(values) != 1:
        raise DeidError(f"{where} is a JSON object: give the secret as its `secret` value")
    return values[0]


class ParameterSecret(_AwsSecret):
    """An SSM SecureString parameter (KMS-encrypted), read WithDecryption."""

    service = "ssm"

    def describe(self) -> str:
        return f"the SSM parameter {self.name}"

    def _fetch(self) -> bytes | str:
        param = self.client().get_parameter(Name=self.name, WithDecryption=True)["Parameter"]
        if param.get("Type") != "SecureString":
            raise DeidError(f"{self.describe()} is a {param.get('Type')} parameter: store the secret as a "
                            "SecureString (KMS-encrypted)")
        return str(param.get("Value") or "")
