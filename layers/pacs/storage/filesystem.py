"""Filesystem BlobStore: keys are relative paths under a root; writes are atomic and durable.

A write goes to a temporary file in the target directory, is fsync'ed, renamed over the target,
and the directory is fsync'ed: after `put` returns, the object survives a crash. Objects are
announced through `notify` (the embedded stand-in for S3 bucket notifications) only after that.

Writers that add names to the same directory at the same moment (parallel associations) share its
fsync (group commit, `DirectorySync`): each still returns only after an fsync of the directory that
started after its own name was linked.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pacs.errors import NotFound, StorageFailure
from pacs.events.model import ObjectEvent, sequencer_now
from pacs.storage.port import AlreadyExists, BlobInfo, Notify

_COPY_CHUNK = 1 << 20


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"object key {key!r} is not a clean relative key")
    return key


class DirectorySync:
    """fsync of directories, shared by the threads that need one at the same time (group commit).

    A caller takes a ticket after its change to the directory; it returns once an fsync of that
    directory that started after the ticket was taken has completed: its own, or one that another
    caller started meanwhile and that covers every ticket taken before it began. A failed fsync
    raises in the caller that ran it; the callers waiting on it run their own."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        #: directory -> [last ticket, last ticket covered by a completed fsync, an fsync running]
        self._dirs: dict[str, list[int]] = {}
        #: fsyncs run (for tests and metrics)
        self.fsyncs = 0

    def sync(self, directory: str) -> None:
        with self._cond:
            state = self._dirs.setdefault(directory, [0, 0, 0])
            state[0] += 1
            ticket = state[0]
            while True:
                if state[1] >= ticket:
                    return  # an fsync that started after our change has completed
                if not state[2]:
                    state[2] = 1
                    covers = state[0]
                    break
                self._cond.wait()
        done = False
        try:
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            done = True
        finally:
            with self._cond:
                self.fsyncs += 1
                state[2] = 0
                if done:
                    state[1] = max(state[1], covers)
                    if state[1] >= state[0] and self._dirs.get(directory) is state:
                        del self._dirs[directory]  # nobody waits: forget it
                self._cond.notify_all()


class FilesystemBlobStore:
    #: Reads are local (no network round trip to overlap): readers of many objects read one by one.
    local = True

    def __init__(self, root: str | Path, *, notify: Notify | None = None, fsync: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self.notify = notify
        self.fsync = fsync
        self.dir_sync = DirectorySync()
        #: Directories known to exist (made or seen here): no mkdir for every object.
        self._made: set[str] = set()

    def _durable(self, key: str) -> bool:
        """Whether a write is fsync'ed: originals and replaced versions are; derived data (metadata,
        packed bodies: rebuilt from the originals whenever missing) is not, to keep ingest cheap."""
        return self.fsync and "/derived/" not in key

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    @staticmethod
    def _etag(st: os.stat_result) -> str:
        """Size and modification time: changes whenever the object is rewritten."""
        return f"{st.st_size:x}-{st.st_mtime_ns:x}"

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        content_type: str = "application/dicom",
        if_absent: bool = False,
    ) -> BlobInfo:
        target = f"{self._root}/{_check_key(key)}"
        parent, name = target.rsplit("/", 1)
        tmp = f"{parent}/.{name}.{os.getpid()}.{sequencer_now()}.tmp"
        durable = self._durable(key)
        try:
            fh = self._create(tmp, parent)
            with fh:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    fh.write(data)
                else:
                    while chunk := data.read(_COPY_CHUNK):
                        fh.write(chunk)
                fh.flush()
                if durable:
                    os.fsync(fh.fileno())
                st = os.fstat(fh.fileno())
            if if_absent:
                try:
                    os.link(tmp, target)  # atomic, fails when the target exists
                except FileExistsError:
                    raise AlreadyExists(key) from None
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
            else:
                os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StorageFailure(f"could not store {key}: {exc.strerror or exc}") from exc
        return self._announce(key, parent, st, durable)

    def _create(self, tmp: str, parent: str) -> BinaryIO:
        """A new file `tmp` for writing, making `parent` if needed."""
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        try:
            return open(tmp, "wb")  # closed by the caller
        except FileNotFoundError:
            self._made.discard(parent)  # removed meanwhile: make it again
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
            return open(tmp, "wb")

    def put_file(
        self, key: str, path: Path, *, content_type: str = "application/dicom", if_absent: bool = False
    ) -> BlobInfo:
        """Hard-link the file into place when it is on the same filesystem (no copy at all),
        else copy it. The link is atomic, so `if_absent` is exact here too."""
        target = f"{self._root}/{_check_key(key)}"
        parent = target.rsplit("/", 1)[0]
        durable = self._durable(key)
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if durable:
                    os.fsync(fd)
                st = os.fstat(fd)  # the object's inode: size and mtime as the target will show them
            finally:
                os.close(fd)
            self._link(path, target, parent, replace=not if_absent)
        except FileExistsError:
            raise AlreadyExists(key) from None
        except OSError as exc:
            if exc.errno == errno.EXDEV:  # another filesystem: copy instead
                with open(path, "rb") as fh:
                    return self.put(key, fh, content_type=content_type, if_absent=if_absent)
            raise StorageFailure(f"could not store {key}: {exc.strerror or exc}") from exc
        return self._announce(key, parent, st, durable)

    def _link(self, path: Path | str, target: str, parent: str, *, replace: bool) -> None:
        """Link `path` as `target` (over an existing one when `replace`), making `parent` if needed."""
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        name = target
        if replace:
            name = f"{parent}/.{target.rsplit('/', 1)[1]}.{os.getpid()}.{sequencer_now()}.tmp"
        try:
            os.link(path, name)
        except FileNotFoundError:
            if not os.path.exists(path):
                raise
            self._made.discard(parent)  # removed meanwhile: make it again
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
            os.link(path, name)
        if replace:
            os.replace(name, target)

    def _announce(self, key: str, parent: str, st: os.stat_result, durable: bool) -> BlobInfo:
        """Make the new name durable (the directory's fsync, shared with concurrent writers), then
        announce the object."""
        if durable:
            try:
                self.dir_sync.sync(parent)
            except OSError as exc:
                raise StorageFailure(f"could not store {key}: {exc.strerror or exc}") from exc
        info = BlobInfo(key=key, size=st.st_size, etag=self._etag(st), sequencer=f"{st.st_mtime_ns:020X}")
        if self.notify is not None:
            self.notify(ObjectEvent("created", key, size=info.size, etag=info.etag, sequencer=info.sequencer))
        return info

    def head(self, key: str) -> BlobInfo | None:
        try:
            st = self.path(key).stat()
        except FileNotFoundError:
            return None
        return BlobInfo(key=key, size=st.st_size, etag=self._etag(st), sequencer=f"{st.st_mtime_ns:020X}")

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.path(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"no object {key}") from None

    def get(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with self.open(key) as fh:
            while chunk := fh.read(chunk_size):
                yield chunk

    def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        if self.notify is not None:
            self.notify(ObjectEvent("removed", key, sequencer=sequencer_now()))

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        """Objects whose key starts with `prefix`, in key order (temporary files skipped)."""
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = full.stat()
                    yield BlobInfo(key=key, size=st.st_size, etag=self._etag(st))

    def presigned_get(self, key: str, expires: int = 900) -> str | None:
        """Files cannot be presigned: large responses are streamed instead."""
        return None
