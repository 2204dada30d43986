"""The encrypted crosswalk (pacs.deid.crosswalk) on the filesystem store and on S3 (moto)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from pacs.deid.crosswalk import Crosswalk
from pacs.deid.options import DeidError
from pacs.deid.secrets import project_key
from pacs.storage.filesystem import FilesystemBlobStore
from pacs.storage.port import BlobStore
from pacs.storage.s3 import S3BlobStore

from tests.unit.aws import fake_aws_credentials

MASTER = bytes(range(1, 33))
KEY = project_key(MASTER, "trial-7")
PAIRS = [
    ("PatientName", "Doe^John", "PN-7f3a"),
    ("PatientID", "HOSP-0012345", "PID-9c1e"),
    ("StudyInstanceUID", "1.2.826.0.1.3680043.8.498.77", "2.25.1234567890"),
    ("PatientName", "Müller^Jürgen", "PN-00aa"),
]


@pytest.fixture
def fs_store(tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "objects", fsync=False)


@pytest.fixture
def s3_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3BlobStore]:
    fake_aws_credentials(monkeypatch)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="exports")
        yield S3BlobStore("exports", region="us-east-1")


def _objects(store: BlobStore) -> dict[str, bytes]:
    return {info.key: store.get(info.key) for info in store.list("default/")}


def _round_trip_and_scan(store: BlobStore) -> None:
    cw = Crosswalk(store, "default", "trial-7", KEY)
    for kind, original, pseudonym in PAIRS:
        cw.record(kind, original, pseudonym)
    assert cw.lookup("PN-7f3a") == [("PatientName", "Doe^John")]
    assert cw.lookup("2.25.1234567890") == [("StudyInstanceUID", "1.2.826.0.1.3680043.8.498.77")]
    assert cw.lookup("PN-00aa") == [("PatientName", "Müller^Jürgen")]
    assert cw.lookup("unknown") == []
    # a reader in another process: only the store and the key
    assert Crosswalk(store, "default", "trial-7", KEY).lookup("PID-9c1e") == [("PatientID", "HOSP-0012345")]
    objects = _objects(store)
    assert len(objects) == len(PAIRS)
    assert all(k.startswith("default/export/crosswalk/trial-7/") for k in objects)
    for kind, original, pseudonym in PAIRS:
        for text in (original, pseudonym, kind, original.split("^")[0]):
            for encoded in {text.encode(), text.encode("latin-1", "ignore"), text.encode("utf-16-le")}:
                for key, blob in objects.items():
                    assert encoded not in key.encode() and encoded not in blob, (text, key)


def test_round_trip_and_no_identity_on_the_filesystem(fs_store: FilesystemBlobStore) -> None:
    _round_trip_and_scan(fs_store)


def test_round_trip_and_no_identity_on_s3(s3_store: S3BlobStore) -> None:
    _round_trip_and_scan(s3_store)


def _idempotent(store: BlobStore) -> None:
    cw = Crosswalk(store, "default", "trial-7", KEY)
    cw.record("PatientID", "HOSP-1", "PID-1")
    cw.record("PatientID", "HOSP-1", "PID-1")
    Crosswalk(store, "default", "trial-7", KEY).record("PatientID", "HOSP-1", "PID-1")  # another process
    assert len(_objects(store)) == 1
    key = cw.key_for("PatientID", "HOSP-1", "PID-1")
    first = store.get(key)
    Crosswalk(store, "default", "trial-7", KEY).record("PatientID", "HOSP-1", "PID-1")
    assert store.get(key) == first  # never rewritten
    # a pseudonym standing for two originals (a date shift shared by two patients): both kept
    Crosswalk(store, "default", "trial-7", KEY).record("PatientID", "HOSP-2", "PID-1")
    assert store.get(key) == first and len(_objects(store)) == 2
    assert cw.lookup("PID-1") == [("PatientID", "HOSP-1"), ("PatientID", "HOSP-2")]
    cw.record("OtherPatientIDs", "HOSP-1", "PID-1")  # another kind, the same pseudonym: its own object
    assert cw.lookup("PID-1") == [("OtherPatientIDs", "HOSP-1"), ("PatientID", "HOSP-1"),
                                  ("PatientID", "HOSP-2")]


def test_idempotent_on_the_filesystem(fs_store: FilesystemBlobStore) -> None:
    _idempotent(fs_store)


def test_idempotent_on_s3(s3_store: S3BlobStore) -> None:
    _idempotent(s3_store)


def test_concurrent_writers_leave_one_object(fs_store: FilesystemBlobStore) -> None:
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def one(n: int) -> None:
        barrier.wait()
        try:
            Crosswalk(fs_store, "default", "trial-7", KEY).record("PatientID", "HOSP-1", "PID-1")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(_objects(fs_store)) == 1
    assert Crosswalk(fs_store, "default", "trial-7", KEY).lookup("PID-1") == [("PatientID", "HOSP-1")]


def test_other_keys_and_projects(fs_store: FilesystemBlobStore) -> None:
    Crosswalk(fs_store, "default", "trial-7", KEY).record("PatientID", "HOSP-1", "PID-1")
    assert Crosswalk(fs_store, "default", "trial-8", project_key(MASTER, "trial-8")).lookup("PID-1") == []
    assert Crosswalk(fs_store, "other", "trial-7", KEY).lookup("PID-1") == []
    cw = Crosswalk(fs_store, "default", "trial-7", KEY)
    key = cw.key_for("PatientID", "HOSP-1", "PID-1")
    intruder = Crosswalk(fs_store, "default", "trial-7", project_key(MASTER, "trial-8"))
    fs_store.put(intruder.key_for("PatientID", "HOSP-1", "PID-1"), fs_store.get(key))  # under another key
    with pytest.raises(DeidError, match="does not decrypt"):
        intruder.lookup("PID-1")
    moved = cw.key_for("PatientID", "HOSP-1", "PID-2")
    fs_store.put(moved, fs_store.get(key))  # an entry moved to another pseudonym's key
    with pytest.raises(DeidError, match="does not decrypt"):
        cw.lookup("PID-2")
    fs_store.put(cw.key_for("PatientID", "HOSP-1", "PID-3"), b"garbage")
    with pytest.raises(DeidError, match="bad header"):
        cw.lookup("PID-3")


@pytest.mark.parametrize("project", ["", "../x", "a/b", "a" * 65, "-x", "x y"])
def test_bad_project_names(fs_store: FilesystemBlobStore, project: str) -> None:
    with pytest.raises(DeidError, match="project"):
        Crosswalk(fs_store, "default", project, KEY)


def test_bad_partition_and_key(fs_store: FilesystemBlobStore) -> None:
    with pytest.raises(ValueError, match="partition"):
        Crosswalk(fs_store, "../x", "p", KEY)
    with pytest.raises(DeidError, match="key"):
        Crosswalk(fs_store, "default", "p", b"")
