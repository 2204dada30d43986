"""gateway.store_fast: plain C-STOREs received and answered in the DUL thread of an in-process gateway
(GatewayServer, event-driven reactors, the hooks installed as `gateway.server.serve_worker` does), stored
exactly as pynetdicom's path stores them, durable before the answer."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pacs.backends import Backend, open_backend
from pacs.config import Settings
from pacs.services.ingest import IngestService
from pydicom.dataset import Dataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway import find_fast, store_fast
from gateway.ae import make_ae, start_server
from gateway.context import GatewayContext
from gateway.handlers import handle_store, handlers
from tests.unit.conftest import build_dataset, to_part10
from tests.unit.test_gateway_syntaxes import free_port


@dataclass
class Gateway:
    port: int
    backend: Backend
    #: SOP Instance UIDs that went through pynetdicom's path (gateway.handlers.handle_store).
    slow: list[str] = field(default_factory=list)


@pytest.fixture(params=["fast", "pynetdicom"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    backend = open_backend(Settings(data_dir=tmp_path / "data"))
    assert backend.spool_dir is not None
    monkeypatch.setattr(tempfile, "tempdir", str(backend.spool_dir))
    ctx = GatewayContext(IngestService(backend.store), backend, Settings())
    gw = Gateway(free_port(), backend)

    def recorded(event: Any, ingest: IngestService) -> Any:
        gw.slow.append(str(event.request.AffectedSOPInstanceUID))
        return handle_store(event, ingest)

    bindings = [(e, recorded, *rest) if e is evt.EVT_C_STORE else (e, h, *rest) for e, h, *rest in handlers(ctx)]
    ae = make_ae("PACS", spool=True)
    server = start_server(ae, ("127.0.0.1", gw.port), bindings)
    if request.param == "fast":
        server.pdata_hook_for = store_fast.combined(
            store_fast.hook_for(ctx), find_fast.hook_for(ctx))
    try:
        yield gw
    finally:
        server.shutdown()
        ae.shutdown()
        _config.STORE_RECV_CHUNKED_DATASET = False
        backend.close()


def _instance(n: int, **attrs: Any) -> Dataset:
    return build_dataset(SOPInstanceUID=f"1.2.826.0.1.3680043.8.498.1.1.{n}", InstanceNumber=n, **attrs)


def _send(port: int, datasets: list[Dataset], *, syntax: str = ExplicitVRLittleEndian, max_pdu: int = 16384,
          echo: bool = False) -> list[Dataset]:
    scu = AE(ae_title="MODALITY")
    scu.maximum_pdu_size = max_pdu
    scu.add_requested_context(CTImageStorage, syntax)
    scu.add_requested_context(MRImageStorage, syntax)
    scu.add_requested_context(Verification)
    assoc = scu.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    out = []
    try:
        for ds in datasets:
            out.append(assoc.send_c_store(pydicom.dcmread(io.BytesIO(to_part10(ds, syntax)))))
            if echo:
                assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()
    return out


def _stored(gw: Gateway, ds: Dataset) -> bytes:
    (path,) = gw.backend.store.root.rglob(f"{ds.SOPInstanceUID}.dcm")  # type: ignore[attr-defined]
    return path.read_bytes()


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_stored_exactly_as_pynetdicoms_path_stores(gateway: Gateway, syntax: str, request: Any) -> None:
    """Several instances on one association, each data set over many PDUs (the peer takes 16 KiB), a
    C-ECHO in between: stored byte for byte as pynetdicom spools them (file meta included), announced,
    nothing left in the spool directory."""
    sent = [_instance(n, PixelData=bytes(range(256)) * 300) for n in range(1, 4)]
    statuses = _send(gateway.port, sent, syntax=syntax, echo=True)
    assert [s.Status for s in statuses] == [0, 0, 0]
    fast = "fast" in request.node.callspec.id
    assert gateway.slow == ([] if fast else [ds.SOPInstanceUID for ds in sent])
    for ds in sent:
        data = _stored(gateway, ds)
        back = pydicom.dcmread(io.BytesIO(data))
        assert back.file_meta.TransferSyntaxUID == syntax
        assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert back.PixelData == ds.PixelData and back.InstanceNumber == ds.InstanceNumber
        part10 = to_part10(ds, syntax)
        start = 144 + int.from_bytes(part10[140:144], "little")  # after the file meta
        assert data.endswith(part10[start:])  # the data set exactly as it was sent
        assert data[:132] == part10[:132]
    assert gateway.backend.queue is not None and gateway.backend.queue.depth() == 3
    assert gateway.backend.spool_dir is not None and not list(gateway.backend.spool_dir.iterdir())


def test_failures_are_answered_with_their_status_and_store_nothing(gateway: Gateway) -> None:
    bad = _instance(7, StudyInstanceUID="1.2/../x")  # not key-safe: refused by ingest
    good = _instance(8)
    statuses = _send(gateway.port, [bad, good])
    assert statuses[0].Status == 0xA900 or statuses[0].Status >> 8 in (0xA9, 0xC0)
    assert "StudyInstanceUID" in str(statuses[0].ErrorComment)
    assert statuses[1].Status == 0
    assert [p.name for p in gateway.backend.store.root.rglob("*.dcm")] == [f"{good.SOPInstanceUID}.dcm"]  # type: ignore[attr-defined]
    assert gateway.backend.spool_dir is not None and not list(gateway.backend.spool_dir.iterdir())


def test_store_rsp_is_pynetdicoms_encoding() -> None:
    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.dimse_primitives import C_STORE

    for code, comment in [(0x0000, None), (0xA900, "dataset does not match SOP class"), (0xC000, "x" * 80)]:
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = 7
        rsp.AffectedSOPClassUID = CTImageStorage
        rsp.AffectedSOPInstanceUID = "1.2.3.4"
        rsp.Status = code
        if comment is not None:
            rsp.ErrorComment = comment[:64]
        msg = C_STORE_RSP()
        msg.primitive_to_message(rsp)
        (pdv,) = [item for pdu in msg.encode_msg(1, 16384) for item in pdu.presentation_data_value_list]
        assert store_fast.store_rsp(CTImageStorage, "1.2.3.4", 7, code, comment and comment[:64]) == pdv[1][1:]


def test_only_the_plain_case_is_taken() -> None:
    """Hooks decline what they do not serve, without side effects; the combined hook keeps a message
    with the hook that began it."""
    calls: list[tuple[str, bytes]] = []

    class Hook:
        def __init__(self, name: str, takes: bytes, spans: int) -> None:
            self.name, self.takes, self.spans, self.request = name, takes, spans, None
            self.left = 0

        def __call__(self, pdu: bytes) -> bool:
            if self.request is None:
                if not pdu.startswith(self.takes):
                    return False
                self.request, self.left = pdu, self.spans
            calls.append((self.name, pdu))
            self.left -= 1
            if self.left == 0:
                self.request = None
            return True

    make = store_fast.combined(lambda a: Hook("store", b"S", 3), lambda a: Hook("find", b"F", 1),
                               lambda a: None)
    hook = make(object())
    assert hook is not None
    # a message's PDUs all go to the hook that began it; between messages each hook is asked in turn
    assert [hook(p) for p in (b"S1", b"F1", b"x2", b"x3", b"F2", b"?")] == [True, True, True, False, True, False]
    assert calls == [("store", b"S1"), ("store", b"F1"), ("store", b"x2"), ("find", b"F2")]
    assert store_fast.combined(lambda a: None)(object()) is None


def test_the_part10_file_is_what_ingest_validates(gateway: Gateway) -> None:
    """A data set cut short (the peer's last fragment missing) is never stored: pynetdicom would not
    hand it over either; here ingest's own check refuses a truncated object."""
    data = to_part10(_instance(11))
    from pacs.errors import InvalidDataset

    with pytest.raises(InvalidDataset):
        IngestService(gateway.backend.store).ingest(data[:-10])


def test_the_answer_waits_for_the_store(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """Success only once the object is durable: a store that fails is answered with its failure."""
    import os

    from pacs.errors import StorageFailure

    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert [s.Status for s in _send(gateway.port, [_instance(21)])] == [0]
    assert len(synced) >= 2  # the file and its directory, before the answer

    def failing(*_a: Any, **_k: Any) -> Any:
        raise StorageFailure("disk full")

    monkeypatch.setattr(gateway.backend.store, "put_file", failing)
    (status,) = _send(gateway.port, [_instance(22)])
    assert status.Status == StorageFailure.dimse_status and "disk full" in str(status.ErrorComment)
    assert not list(gateway.backend.store.root.rglob("*.1.22.dcm"))  # type: ignore[attr-defined]


def test_the_calling_ae_title_is_recorded_in_the_file_meta(gateway: Gateway) -> None:
    """Both paths write who sent the instance as (0002,0016) Source Application Entity Title, the file
    meta byte for byte what pydicom writes for pynetdicom's meta plus that element."""
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom.dsutils import create_file_meta

    ds = _instance(7, PixelData=bytes(range(256)) * 40)
    assert [s.Status for s in _send(gateway.port, [ds])] == [0]
    data = _stored(gateway, ds)
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.file_meta.SourceApplicationEntityTitle == "MODALITY"
    meta = create_file_meta(sop_class_uid=UID(CTImageStorage), sop_instance_uid=UID(ds.SOPInstanceUID),
                            transfer_syntax=UID(ExplicitVRLittleEndian))
    meta.SourceApplicationEntityTitle = "MODALITY"
    buf = io.BytesIO()
    write_file_meta_info(buf, meta)
    assert data[132:132 + len(buf.getvalue())] == buf.getvalue()


def test_storescu_calling_ae_is_recorded(gateway: Gateway, tmp_path: Path) -> None:
    """dcmtk's storescu (`-aet RESEARCH_CT`) on both paths: the stored file names its sender."""
    import subprocess

    from tests.interop.support import dcmtk_tool

    storescu = dcmtk_tool("storescu")
    if storescu is None:
        pytest.skip("dcmtk's storescu is not installed")
    ds = _instance(8, PixelData=bytes(range(256)) * 40)
    path = tmp_path / "ct.dcm"
    path.write_bytes(to_part10(ds))
    done = subprocess.run([storescu, "-aet", "RESEARCH_CT", "-aec", "PACS", "127.0.0.1", str(gateway.port),
                           str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    back = pydicom.dcmread(io.BytesIO(_stored(gateway, ds)))
    assert back.file_meta.SourceApplicationEntityTitle == "RESEARCH_CT"
