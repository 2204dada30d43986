"""The de-identification master secret (pacs.deid.secrets): the data dir's file, Secrets Manager and SSM
(on moto), the values accepted, and the per-project keys."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from pacs.config import Settings
from pacs.deid.options import DeidError
from pacs.deid.secrets import (
    DEFAULT_PARAMETER,
    FileSecret,
    ParameterSecret,
    SecretsManagerSecret,
    clear_cache,
    parse_secret,
    project_key,
    secret_source,
)

from tests.unit.aws import fake_aws_credentials

RANDOM = bytes(range(7, 256, 7))[:32] + b"\x00\xff"  # 34 bytes, all distinct: accepted as random


def _master(path: str) -> bytes:
    return FileSecret(path).master()


# --- the file ------------------------------------------------------------------------------------------

def test_file_made_once_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "data" / "deid" / "secret.key"
    first = FileSecret(path).master()
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert FileSecret(path).master() == first
    assert path.read_bytes() == first
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temporary file left


def test_file_creation_is_safe_across_threads_and_processes(tmp_path: Path) -> None:
    path = tmp_path / "deid" / "secret.key"
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def one() -> None:
        barrier.wait()
        results.append(FileSecret(path).master())

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other = tmp_path / "other" / "secret.key"
    with ProcessPoolExecutor(4) as pool:
        from_processes = list(pool.map(_master, [str(other)] * 16))
    assert len(set(results)) == 1 and results[0] == path.read_bytes()
    assert len(set(from_processes)) == 1 and from_processes[0] == other.read_bytes()
    assert stat.S_IMODE(other.stat().st_mode) == 0o600


def test_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(RANDOM)
    os.chmod(path, 0o644)
    with pytest.raises(DeidError, match="chmod 600"):
        FileSecret(path).master()
    os.chmod(path, 0o600)
    assert FileSecret(path).master() == RANDOM


def test_file_given_as_text(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text(base64.b64encode(RANDOM).decode() + "\n")
    os.chmod(path, 0o600)
    assert FileSecret(path).master() == RANDOM


def test_file_unreadable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DeidError, match=r"cannot read .*Not a directory"):
        FileSecret(tmp_path / "file" / "secret.key").master()


# --- the values accepted ---------------------------------------------------------------------------

def test_values_accepted() -> None:
    assert parse_secret(RANDOM, "x") == RANDOM
    assert parse_secret(base64.b64encode(RANDOM).decode(), "x") == RANDOM
    assert parse_secret(base64.urlsafe_b64encode(RANDOM).decode().rstrip("="), "x") == RANDOM
    assert parse_secret(RANDOM.hex(), "x") == RANDOM
    assert parse_secret(f"  {RANDOM.hex().upper()}\n", "x") == RANDOM
    short = "Tq7#vLp2@Zr9!mXw4$Kd8&Nf3*Hs6^Bj1%Gy5Uc0"  # 40 distinct symbols: about 213 bits
    with pytest.raises(DeidError, match="too weak"):
        parse_secret(short, "x")
    passphrase = short + " plus: Wombat Quixotic 61 Ferns, oNyx & a Jolly Vizier"  # about 340 bits
    assert parse_secret(passphrase, "x") == passphrase.encode()


def test_generated_passwords() -> None:
    """What a CDK / Secrets Manager generated secret looks like: 64 letters and digits pass; the
    default 32 printable characters carry less than 256 bits and are refused."""
    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    printable = alnum + "!#$%&()*+,-.:;<=>?@[]^_{|}~"
    stream = hashlib.sha512(b"fixed seed").digest()
    long_alnum = "".join(alnum[b % len(alnum)] for b in stream)
    assert len(parse_secret(long_alnum, "x")) >= 32
    with pytest.raises(DeidError, match="too weak"):
        parse_secret("".join(printable[b % len(printable)] for b in stream[:32]), "x")


@pytest.mark.parametrize("value", [
    b"", "   ", b"\x01" * 64, RANDOM[:16], base64.b64encode(b"\x00" * 32).decode(),
    "ab" * 40, "0123456789abcdef" * 2, "password123",
])
def test_values_refused(value: bytes | str) -> None:
    with pytest.raises(DeidError, match="secret in where"):
        parse_secret(value, "where")


def test_project_keys() -> None:
    a, b = project_key(RANDOM, "trial-7"), project_key(RANDOM, "trial-8")
    assert len(a) == 32 and a != b and project_key(RANDOM, "trial-7") == a
    assert project_key(RANDOM[::-1], "trial-7") != a
    with pytest.raises(DeidError):
        project_key(b"short", "p")


# --- which source ------------------------------------------------------------------------------------

def test_secret_source_by_settings(tmp_path: Path) -> None:
    embedded = secret_source(Settings(data_dir=tmp_path))
    assert isinstance(embedded, FileSecret) and embedded.path == tmp_path / "deid" / "secret.key"
    named = secret_source(Settings(data_dir=tmp_path, deid_secret=str(tmp_path / "k")))
    assert isinstance(named, FileSecret) and named.path == tmp_path / "k"
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pacs-deid-AbCdEf"
    sm = secret_source(Settings(backend="aws", deid_secret=arn, region="us-east-1"))
    assert isinstance(sm, SecretsManagerSecret) and sm.region == "eu-west-1" and sm.name == arn
    ssm = secret_source(Settings(backend="aws", region="us-east-2", endpoint_url="http://127.0.0.1:5000"))
    assert isinstance(ssm, ParameterSecret) and ssm.name == DEFAULT_PARAMETER
    assert ssm.region == "us-east-2" and ssm.endpoint_url == "http://127.0.0.1:5000"
    assert "secret.key" in embedded.describe() and DEFAULT_PARAMETER in ssm.describe()


# --- AWS, on moto ----------------------------------------------------------------------------------

@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    fake_aws_credentials(monkeypatch)
    clear_cache()
    with mock_aws():
        yield
    clear_cache()


def test_secrets_manager_string_and_binary(aws: None) -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    text = client.create_secret(Name="pacs-deid", SecretString=base64.b64encode(RANDOM).decode())["ARN"]
    binary = client.create_secret(Name="pacs-deid-bin", SecretBinary=RANDOM[::-1])["ARN"]
    settings = Settings(backend="aws", deid_secret=text, region="us-east-1")
    assert secret_source(settings).master() == RANDOM
    assert SecretsManagerSecret(binary).master() == RANDOM[::-1]


def test_secrets_manager_json_secret_string(aws: None) -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    named = client.create_secret(Name="a", SecretString=json.dumps({"secret": RANDOM.hex(), "note": "x"}))
    only = client.create_secret(Name="b", SecretString=json.dumps({"generated": RANDOM.hex()}))
    many = client.create_secret(Name="c", SecretString=json.dumps({"one": RANDOM.hex(), "two": "y"}))
    assert SecretsManagerSecret(named["ARN"]).master() == RANDOM
    assert SecretsManagerSecret(only["ARN"]).master() == RANDOM
    with pytest.raises(DeidError, match="`secret` value"):
        SecretsManagerSecret(many["ARN"]).master()


def test_secrets_manager_cached_per_process(aws: None) -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    arn = client.create_secret(Name="pacs-deid", SecretString=RANDOM.hex())["ARN"]
    assert SecretsManagerSecret(arn).master() == RANDOM
    client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    assert SecretsManagerSecret(arn).master() == RANDOM  # read once: no call this time
    clear_cache()
    with pytest.raises(DeidError, match="ResourceNotFoundException"):
        SecretsManagerSecret(arn).master()


def test_secrets_manager_weak_or_missing(aws: None) -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    arn = client.create_secret(Name="weak", SecretString="hunter2")["ARN"]
    with pytest.raises(DeidError, match="too weak"):
        SecretsManagerSecret(arn).master()
    missing = arn.replace("weak", "absent")
    with pytest.raises(DeidError, match=rf"cannot read .*{missing}"):
        SecretsManagerSecret(missing).master()


def test_ssm_secure_string(aws: None) -> None:
    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(Name=DEFAULT_PARAMETER, Value=base64.b64encode(RANDOM).decode(), Type="SecureString")
    assert secret_source(Settings(backend="aws", region="us-east-1")).master() == RANDOM
    ssm.put_parameter(Name="/pacs/plain", Value=RANDOM.hex(), Type="String")
    with pytest.raises(DeidError, match="SecureString"):
        ParameterSecret("/pacs/plain", region="us-east-1").master()
    with pytest.raises(DeidError, match="ParameterNotFound"):
        ParameterSecret("/pacs/absent", region="us-east-1").master()
    ssm.put_parameter(Name="/pacs/short", Value="c2hvcnQ=", Type="SecureString")
    with pytest.raises(DeidError, match="/pacs/short"):
        ParameterSecret("/pacs/short", region="us-east-1").master()
