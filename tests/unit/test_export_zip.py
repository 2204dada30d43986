"""The export ZIP is streamed: pieces about a store chunk each, never the archive whole."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from pacs.services.export_zip import write_stream, zip_stream
from pacs.storage.filesystem import FilesystemBlobStore


def test_zip_is_built_a_chunk_at_a_time(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "objects")
    blobs = {f"default/export/j/files/1.2/1.2.3/{n}.dcm": os.urandom(3 << 20) for n in range(3)}
    for key, data in blobs.items():
        store.put(key, data)
    entries = [(k, k.split("/files/")[1], len(v)) for k, v in blobs.items()]
    pieces = list(zip_stream(store, entries))
    assert len(pieces) >= 9 and max(len(p) for p in pieces) < (3 << 20) // 2  # 1 MB reads, never a whole file
    with zipfile.ZipFile(io.BytesIO(b"".join(pieces))) as zf:
        assert zf.testzip() is None
        assert {n: zf.read(n) for n in zf.namelist()} == {k.split("/files/")[1]: v for k, v in blobs.items()}
    size = write_stream(store, "default/export/j/out.zip", iter(pieces), spool_dir=tmp_path / "spool")
    assert size == sum(map(len, pieces)) == store.head("default/export/j/out.zip").size  # type: ignore[union-attr]
    assert list((tmp_path / "spool").iterdir()) == []  # the spool file is gone, its content linked into place
