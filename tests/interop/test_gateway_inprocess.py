"""The gateway AE in this process, over an object store that fails on purpose.

`make_ae` + `handlers(ingest)` as `gateway.server.serve_worker` wires them, served with
`ae.start_server(..., block=False)` on a free port; shut down at teardown. The IngestService writes to
a FilesystemBlobStore behind a wrapper whose `put` raises: the C-STORE must be answered with a failure
status, never success, and nothing may be left in the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
import pytest
from pacs.errors import StorageFailure
from pacs.services.ingest import IngestService
from pacs.storage.filesystem import FilesystemBlobStore
from pacs.storage.port import BlobInfo
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    MRImageStorage,
)
from pynetdicom import AE
from pynetdicom.association import Association

from gateway import status as dimse_status
from gateway.ae import make_ae
from gateway.context import GatewayContext
from gateway.handlers import handlers

from .dicomgen import DataSet, new_study, write_extra_instance
from .support import free_port, run_tool

pytestmark = pytest.mark.interop

#: Fail every put, or only the puts whose key matches.
FailWhen = Callable[[str], bool]


@dataclass
class FailingStore:
    """A BlobStore whose `put` raises `error` for the keys `fail_when` selects; the rest is `inner`."""

    inner: FilesystemBlobStore
    fail_when: FailWhen = lambda key: True
    error: Exception = field(default_factory=lambda: StorageFailure("disk full (injected by the test)"))
    attempts: list[str] = field(default_factory=list)

    def put(self, key: str, data: bytes | BinaryIO, **kw: Any) -> BlobInfo:
        self.attempts.append(key)
        if self.fail_when(key):
            raise self.error
        return self.inner.put(key, data, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class Server:
    port: int
    store: FailingStore
    root: Path

    def files(self) -> list[Path]:
        """Every file in the store, temporary ones included."""
        return sorted(p for p in self.root.rglob("*") if p.is_file())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "objects"
    store = FailingStore(FilesystemBlobStore(root))
    ingest = IngestService(store)  # type: ignore[arg-type]
    ae = make_ae("PACS")
    port = free_port()
    scp = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers(GatewayContext(ingest)))
    assert scp is not None
    try:
        yield Server(port, store, root)
    finally:
        scp.shutdown()
        ae.shutdown()


def associate(port: int, contexts: dict[str, list[str]] | None = None) -> Association:
    ae = AE(ae_title="INTEROP")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class, syntaxes in (contexts or {CTImageStorage: [ExplicitVRLittleEndian],
                                             MRImageStorage: [ExplicitVRLittleEndian]}).items():
        ae.add_requested_context(sop_class, syntaxes)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    return assoc


def c_store(port: int, path: Path) -> pydicom.Dataset:
    assoc = associate(port)
    try:
        return assoc.send_c_store(pydicom.dcmread(path))
    finally:
        assoc.release()


def an_instance(tmp_path: Path, key: str = "inprocess", name: str | None = None, **changes: Any) -> Path:
    """Instance 1 of the one series of a study of its own (its UIDs derive from `key`)."""
    study, series = new_study(key)
    return write_extra_instance(series, study, 1, tmp_path / f"{name or key}.dcm", **changes).path


def test_storage_failure_is_refused_out_of_resources(server: Server, tmp_path: Path) -> None:
    status = c_store(server.port, an_instance(tmp_path))
    assert int(status.Status) == dimse_status.OUT_OF_RESOURCES == 0xA700
    assert "injected" in status.ErrorComment
    assert len(server.store.attempts) == 1  # the write was attempted, and failed
    assert server.files() == []


def test_storescu_sees_the_storage_failure(server: Server, dataset: DataSet,
                                           dcmtk: Callable[[str], str]) -> None:
    run = run_tool([dcmtk("storescu"), "-v", "-aec", "PACS", "127.0.0.1", str(server.port),
                    str(dataset.instances[0].path)])
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "Received Store Response (Refused: OutOfResources)" in output, output
    assert server.files() == []


def test_unexpected_store_error_is_a_failure_not_success(server: Server, tmp_path: Path) -> None:
    server.store.error = RuntimeError("unexpected")
    status = c_store(server.port, an_instance(tmp_path))
    code = int(status.Status)
    assert code != 0 and not 0xB000 <= code <= 0xBFFF, f"0x{code:04X}"
    assert str(status.get("ErrorComment", "")).strip()
    assert server.files() == []


def test_failed_history_write_keeps_the_stored_version(server: Server, tmp_path: Path) -> None:
    """A replacement whose history copy cannot be written is refused; the first version stays."""
    server.store.fail_when = lambda key: "/history/" in key
    first = an_instance(tmp_path, "replace")
    assert int(c_store(server.port, first).Status) == 0
    (stored,) = server.files()
    original = stored.read_bytes()
    sop = pydicom.dcmread(first).SOPInstanceUID
    second = an_instance(tmp_path, "replace", "revised", SOPInstanceUID=sop, ImageComments="revised")
    status = c_store(server.port, second)
    assert int(status.Status) == 0xA700
    assert server.files() == [stored]
    assert stored.read_bytes() == original


def test_the_server_keeps_serving_after_failures(server: Server, tmp_path: Path) -> None:
    assert int(c_store(server.port, an_instance(tmp_path, "a")).Status) == 0xA700
    server.store.fail_when = lambda key: False
    assert int(c_store(server.port, an_instance(tmp_path, "b")).Status) == 0
    assert len(server.files()) == 1


def test_negotiation_keeps_the_senders_preferred_lossless_syntax(server: Server) -> None:
    """One presentation context per SOP class listing several syntaxes, as many modalities (and
    `storescu +C`, or the uncompressed group dcmtk proposes beside `-xt`/`-xr`) do. pynetdicom accepts
    the first of the *acceptor's* syntaxes that was proposed, so the gateway's order decides: a lossless
    compressed syntax must win over native ones (or the sender decompresses: not stored as the modality
    had it) and Explicit VR Little Endian over Implicit (or the sender converts and drops the VRs); a
    lossy syntax never wins over a lossless one."""
    assoc = associate(server.port, {
        CTImageStorage: [JPEGLSLossless, ExplicitVRLittleEndian, ImplicitVRLittleEndian],
        MRImageStorage: [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
        "1.2.840.10008.5.1.4.1.1.7": [ExplicitVRLittleEndian, JPEGBaseline8Bit],  # Secondary Capture
    })
    try:
        accepted = {str(cx.abstract_syntax): cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
    finally:
        assoc.release()
    assert accepted["1.2.840.10008.5.1.4.1.1.7"] == ExplicitVRLittleEndian
    assert accepted[MRImageStorage] == ExplicitVRLittleEndian
    assert accepted[CTImageStorage] == JPEGLSLossless
