"""Ingest: stored as received, duplicates by policy, failures store nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from pacs.errors import DuplicateRejected, InvalidDataset, InvalidUID, StorageFailure
from pacs.services.ingest import DuplicatePolicy, IngestService, Outcome
from pacs.storage.filesystem import FilesystemBlobStore
from pacs.storage.port import BlobInfo

from tests.unit.conftest import MakePart10


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "objects")


def test_stored_as_received(store: FilesystemBlobStore, make_part10: MakePart10) -> None:
    data = make_part10()
    result = IngestService(store).ingest(data)
    assert result.outcome is Outcome.STORED
    assert result.key == (
        "default/studies/1.2.826.0.1.3680043.8.498.1/series/1.2.826.0.1.3680043.8.498.1.1"
        "/instances/1.2.826.0.1.3680043.8.498.1.1.1.dcm"
    )
    assert store.get(result.key) == data
    assert files(store.root) == [result.key]  # no temporary file left behind


def test_identical_resend_is_a_no_op(store: FilesystemBlobStore, make_part10: MakePart10) -> None:
    svc = IngestService(store)
    data = make_part10()
    first = svc.ingest(data)
    mtime = store.path(first.key).stat().st_mtime_ns
    assert svc.ingest(data).outcome is Outcome.IDENTICAL
    assert store.path(first.key).stat().st_mtime_ns == mtime
    assert files(store.root) == [first.key]


def test_replace_keeps_newest_and_history(store: FilesystemBlobStore, make_part10: MakePart10) -> None:
    svc = IngestService(store)
    old, new = make_part10(), make_part10(StudyDescription="corrected")
    key = svc.ingest(old).key
    assert svc.ingest(new).outcome is Outcome.REPLACED
    assert store.get(key) == new
    history = [f for f in files(store.root) if f.startswith("default/history/")]
    assert len(history) == 1 and store.get(history[0]) == old


def test_keep_policy(store: FilesystemBlobStore, make_part10: MakePart10) -> None:
    svc = IngestService(store, duplicate_policy=DuplicatePolicy.KEEP)
    old = make_part10()
    key = svc.ingest(old).key
    assert svc.ingest(make_part10(StudyDescription="other")).outcome is Outcome.KEPT_EXISTING
    assert store.get(key) == old


def test_reject_policy(store: FilesystemBlobStore, make_part10: MakePart10) -> None:
    svc = IngestService(store, duplicate_policy="reject")  # type: ignore[arg-type]
    old = make_part10()
    key = svc.ingest(old).key
    with pytest.raises(DuplicateRejected) as err:
        svc.ingest(make_part10(StudyDescription="other"))
    assert err.value.dimse_status == 0xA900 and err.value.http_status == 409
    assert store.get(key) == old


@pytest.mark.parametrize(
    ("attrs", "error"),
    [
        ({"StudyInstanceUID": "1.2.3.../../x"}, InvalidUID),
        ({"SeriesInstanceUID": "1.2.x/y"}, InvalidUID),
        ({"SOPInstanceUID": "1." + "3" * 70}, InvalidUID),
    ],
)
def test_bad_input_stores_nothing(
    store: FilesystemBlobStore, make_part10: MakePart10, attrs: dict[str, Any], error: type
) -> None:
    with pytest.raises(error):
        IngestService(store).ingest(make_part10(**attrs))
    assert files(store.root) == []


GUID = "6f1c2a9e-3b4d-4c5e-8f70-1a2b3c4d5e6f"


@pytest.mark.parametrize("attr", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_key_safe_non_uids_follow_the_uid_policy(
    store: FilesystemBlobStore, make_part10: MakePart10, attr: str
) -> None:
    """A GUID instead of a UID: stored under the key-safe policy (the default), under its prefix;
    refused with a reason under the strict one, nothing stored."""
    data = make_part10(**{attr: GUID})
    with pytest.raises(InvalidUID) as err:
        IngestService(store, uid_policy="strict").ingest(data)
    assert attr in err.value.reason and "strict" in err.value.reason
    assert files(store.root) == []
    stored = IngestService(store).ingest(data)
    assert GUID in stored.key and stored.key.startswith("default/studies/")
    assert files(store.root) == [stored.key]


def test_the_uid_policy_comes_from_the_setting(store: FilesystemBlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACS_UID_POLICY", "strict")
    assert IngestService(store).uid_policy == "strict"
    monkeypatch.delenv("PACS_UID_POLICY")
    assert IngestService(store).uid_policy == "key-safe"


def test_truncated_and_garbage_store_nothing(store: FilesystemBlobStore, make_part10: MakePart10) -> None:
    for payload in (make_part10()[:-10], b"not dicom at all"):
        with pytest.raises(InvalidDataset):
            IngestService(store).ingest(payload)
    assert files(store.root) == []


class FailingStore(FilesystemBlobStore):
    def put(self, key: str, data: bytes | BinaryIO, **kw: Any) -> BlobInfo:
        raise StorageFailure(f"could not store {key}: disk full")


def test_storage_failure_is_reported(tmp_path: Path, make_part10: MakePart10) -> None:
    store = FailingStore(tmp_path / "objects")
    with pytest.raises(StorageFailure) as err:
        IngestService(store).ingest(make_part10())
    assert err.value.dimse_status == 0xA700
    assert files(store.root) == []


def test_filesystem_write_failure_leaves_no_temp(tmp_path: Path, make_part10: MakePart10) -> None:
    store = FilesystemBlobStore(tmp_path / "objects")
    (tmp_path / "objects" / "default").write_text("a file where a directory must go")
    with pytest.raises(StorageFailure):
        IngestService(store).ingest(make_part10())
    assert files(store.root) == ["default"]


# -- spooled files (the gateway's chunked receive): linked into place, never read whole --------------


def spooled(tmp_path: Path, data: bytes, name: str = "spool.dcm") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_file_is_linked_into_place(store: FilesystemBlobStore, tmp_path: Path, make_part10: MakePart10) -> None:
    data = make_part10()
    path = spooled(tmp_path, data)
    result = IngestService(store).ingest_file(path)
    assert result.outcome is Outcome.STORED and result.size == len(data)
    assert store.get(result.key) == data
    assert store.path(result.key).stat().st_ino == path.stat().st_ino  # no copy
    path.unlink()  # what the gateway's receiver does afterwards
    assert store.get(result.key) == data


def test_file_duplicates_follow_the_policy(store: FilesystemBlobStore, tmp_path: Path, make_part10: MakePart10) -> None:
    svc = IngestService(store)
    first = svc.ingest_file(spooled(tmp_path, make_part10(), "a.dcm"))
    assert svc.ingest_file(spooled(tmp_path, make_part10(), "b.dcm")).outcome is Outcome.IDENTICAL
    newer = make_part10(StudyDescription="corrected")
    assert svc.ingest_file(spooled(tmp_path, newer, "c.dcm")).outcome is Outcome.REPLACED
    assert store.get(first.key) == newer
    assert len([f for f in files(store.root) if "/history/" in f]) == 1


@pytest.mark.parametrize(
    ("payload", "error"),
    [(b"", InvalidDataset), (b"garbage" * 40, InvalidDataset)],
)
def test_bad_files_store_nothing(store: FilesystemBlobStore, tmp_path: Path, payload: bytes, error: type) -> None:
    with pytest.raises(error):
        IngestService(store).ingest_file(spooled(tmp_path, payload))
    assert files(store.root) == []


def test_bad_uid_in_a_file(store: FilesystemBlobStore, tmp_path: Path, make_part10: MakePart10) -> None:
    with pytest.raises(InvalidUID):
        IngestService(store).ingest_file(spooled(tmp_path, make_part10(StudyInstanceUID="1.2.x/..")))
    with pytest.raises(InvalidDataset):
        IngestService(store).ingest_file(spooled(tmp_path, make_part10()[:-5]))
    assert files(store.root) == []


def test_file_from_another_filesystem_is_copied(tmp_path: Path, make_part10: MakePart10) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    store = FilesystemBlobStore(tmp_path / "objects")
    data = make_part10()
    path = shm / f"pacs-test-{os.getpid()}-{tmp_path.name}.dcm"  # unique across concurrent test runs
    path.write_bytes(data)
    try:
        result = IngestService(store).ingest_file(path)
    finally:
        path.unlink()
    assert store.get(result.key) == data


def test_wrong_study_is_refused_and_named(store: FilesystemBlobStore, tmp_path: Path, make_part10: MakePart10) -> None:
    from pacs.errors import WrongStudy

    svc = IngestService(store)
    for call in (lambda: svc.ingest(make_part10(), study_uid="1.2.3"),
                 lambda: svc.ingest_file(spooled(tmp_path, make_part10()), study_uid="1.2.3")):
        with pytest.raises(WrongStudy) as err:
            call()
        assert err.value.dimse_status == 0xA900 and err.value.http_status == 409
        assert err.value.sop_instance_uid == "1.2.826.0.1.3680043.8.498.1.1.1"
        assert err.value.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert files(store.root) == []
    assert svc.ingest(make_part10(), study_uid="1.2.826.0.1.3680043.8.498.1").outcome is Outcome.STORED


def test_errors_name_the_instance(store: FilesystemBlobStore, make_part10: MakePart10) -> None:
    svc = IngestService(store, duplicate_policy=DuplicatePolicy.REJECT)
    svc.ingest(make_part10())
    with pytest.raises(DuplicateRejected) as err:
        svc.ingest(make_part10(StudyDescription="other"))
    assert err.value.sop_instance_uid == "1.2.826.0.1.3680043.8.498.1.1.1"


def test_concurrent_stores_share_directory_fsyncs_yet_each_waits_for_one_after_its_link(
    store: FilesystemBlobStore, tmp_path: Path, make_part10: MakePart10, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: parallel writers into one series directory share its fsync, but none returns (so
    no C-STORE is answered) before an fsync of the directory that began after its own link ended, and
    each file's own data is fsync'ed before its link."""
    import os
    import stat
    import threading
    import time

    log: list[tuple[str, str, int]] = []  # (what, name, ns)
    lock = threading.Lock()
    real_fsync, real_link = os.fsync, os.link

    def note(what: str, name: str) -> None:
        with lock:
            log.append((what, name, time.monotonic_ns()))

    def fsync(fd: int) -> None:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        inode = str(os.fstat(fd).st_ino)
        note("dir-start" if is_dir else "file", inode)
        time.sleep(0.02)  # a slow disk: writers pile up behind a running fsync
        real_fsync(fd)
        if is_dir:
            note("dir-end", inode)

    def link(src: Any, dst: Any) -> None:
        real_link(src, dst)
        note("link", str(os.stat(dst).st_ino))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    svc = IngestService(store)
    paths = []
    for n in range(12):
        p = tmp_path / f"spool{n}.dcm"
        p.write_bytes(make_part10(SOPInstanceUID=f"1.2.826.0.1.3680043.8.498.1.1.{n + 10}"))
        paths.append(p)
    returned: dict[str, int] = {}

    def send(p: Path) -> None:
        result = svc.ingest_file(p)
        inode = str(os.stat(store.path(result.key)).st_ino)
        with lock:
            returned[inode] = time.monotonic_ns()

    threads = [threading.Thread(target=send, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(returned) == 12
    dir_runs = [(ns, next(e for w, i, e in log if w == "dir-end" and i == inode and e >= ns))
                for w, inode, ns in log if w == "dir-start"]
    assert len(dir_runs) < 12  # shared
    for inode, done in returned.items():
        linked = next(ns for w, i, ns in log if w == "link" and i == inode)
        synced = next(ns for w, i, ns in log if w == "file" and i == inode)
        assert synced < linked  # the data before its name
        assert any(linked < start and end < done for start, end in dir_runs), inode  # the name before the answer
