"""Filesystem BlobStore: keys are relative paths under a root; writes are atomic and durable.

A write goes to a temporary file in the target directory, is fsync'ed, renamed over the target,
and the directory is fsync'ed: after `put` returns, the object survives a crash. Objects are
announced through `notify` (the embedded stand-in for S3 bucket notifications) only after that.
"""

from __future__ import annotations

import contextlib
import errno
import os
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


class FilesystemBlobStore:
    def __init__(self, root: str | Path, *, notify: Notify | None = None, fsync: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.notify = notify
        self.fsync = fsync

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
        target = self.path(key)
        tmp = target.parent / f".{target.name}.{os.getpid()}.{sequencer_now()}.tmp"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    fh.write(data)
                else:
                    while chunk := data.read(_COPY_CHUNK):
                        fh.write(chunk)
                fh.flush()
                if self._durable(key):
                    os.fsync(fh.fileno())
            if if_absent:
                try:
                    os.link(tmp, target)  # atomic, fails when the target exists
                except FileExistsError:
                    raise AlreadyExists(key) from None
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StorageFailure(f"could not store {key}: {exc.strerror or exc}") from exc
        return self._stored(key, target)

    def put_file(
        self, key: str, path: Path, *, content_type: str = "application/dicom", if_absent: bool = False
    ) -> BlobInfo:
        """Hard-link the file into place when it is on the same filesystem (no copy at all),
        else copy it. The link is atomic, so `if_absent` is exact here too."""
        target = self.path(key)
        try:
            if self._durable(key):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            target.parent.mkdir(parents=True, exist_ok=True)
            if if_absent:
                os.link(path, target)
            else:
                tmp = target.parent / f".{target.name}.{os.getpid()}.{sequencer_now()}.tmp"
                os.link(path, tmp)
                os.replace(tmp, target)
        except FileExistsError:
            raise AlreadyExists(key) from None
        except OSError as exc:
            if exc.errno == errno.EXDEV:  # another filesystem: copy instead
                with open(path, "rb") as fh:
                    return self.put(key, fh, content_type=content_type, if_absent=if_absent)
            raise StorageFailure(f"could not store {key}: {exc.strerror or exc}") from exc
        return self._stored(key, target)

    def _stored(self, key: str, target: Path) -> BlobInfo:
        """Make the new name durable, then announce the object."""
        try:
            if self._durable(key):
                dir_fd = os.open(target.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            st = target.stat()
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
