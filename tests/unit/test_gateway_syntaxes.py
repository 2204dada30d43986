"""The gateway stores every transfer syntax a modality may send, exactly as received.

A real association on a free loopback port per syntax, pynetdicom as the modality.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pacs.services.ingest import IngestService
from pacs.storage.filesystem import FilesystemBlobStore
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, _config

from gateway.ae import make_ae, start_server
from gateway.context import GatewayContext
from gateway.handlers import handlers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["spooled", "in-memory"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, FilesystemBlobStore]]:
    """The gateway AE in-process, receiving to spool files (linked into place) or in memory."""
    store = FilesystemBlobStore(tmp_path / "objects")
    port = free_port()
    spool = request.param == "spooled"
    server = start_server(make_ae("PACS", spool=spool), ("127.0.0.1", port), handlers(GatewayContext(IngestService(store))))
    yield port, store
    server.shutdown()
    _config.STORE_RECV_CHUNKED_DATASET = False


def encoded(ts: UID) -> Dataset:
    """CT_small in `ts`, as a modality would hold it."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    ds.SOPInstanceUID = generate_uid()
    if ts.is_compressed:
        ds.compress(ts, **({"encoding_plugin": "pylibjpeg"} if ts == RLELossless else {}))
        return ds
    ds.file_meta.TransferSyntaxUID = ts
    buf = io.BytesIO()
    dcmwrite(buf, ds, implicit_vr=ts.is_implicit_VR, little_endian=ts.is_little_endian, force_encoding=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize(
    "ts",
    [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian,
     RLELossless, JPEG2000Lossless, JPEGLSLossless],
    ids=lambda ts: ts.name,
)
def test_stored_as_received(gateway: tuple[int, FilesystemBlobStore], ts: UID) -> None:
    port, store = gateway
    ds = encoded(ts)
    scu = AE(ae_title="MODALITY")
    scu.add_requested_context(CTImageStorage, ts)
    assoc = scu.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert status.Status == 0x0000
    (path,) = store.root.rglob(f"{ds.SOPInstanceUID}.dcm")
    back = pydicom.dcmread(path)
    assert back.file_meta.TransferSyntaxUID == ts
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.PixelData == ds.PixelData  # the pixel data (or compressed fragments) as sent
    assert back.PatientName == ds.PatientName and back.StudyInstanceUID == ds.StudyInstanceUID
    assert not list(store.root.rglob("*.tmp"))
    if ts != ExplicitVRBigEndian:  # pydicom's forced re-encoding does not byte-swap OW pixel data
        reference = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
        assert (back.pixel_array == reference.pixel_array).all()


def test_unknown_called_ae_is_rejected(gateway: tuple[int, FilesystemBlobStore]) -> None:
    port, _ = gateway
    scu = AE(ae_title="MODALITY")
    scu.add_requested_context(CTImageStorage)
    assoc = scu.associate("127.0.0.1", port, ae_title="SOMEONE")
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.result_source == 1  # service user
    assert assoc.acceptor.primitive.diagnostic == 7  # called AE title not recognised


@pytest.mark.parametrize("sop_uid", ["1.2.3.4", "1.2.3.45", "1.2.826.0.1.3680043.8.498.10676492700166066141788904745687692565"])
@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, JPEGLSLossless, "1.2.840.10008.1.2.4.201"])
def test_spooled_file_meta_is_pynetdicoms_byte_for_byte(sop_uid: str, ts: str) -> None:
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom.dsutils import create_file_meta

    from gateway.ae import file_meta_bytes

    buf = io.BytesIO()
    write_file_meta_info(buf, create_file_meta(sop_class_uid=UID(CTImageStorage), sop_instance_uid=UID(sop_uid),
                                               transfer_syntax=UID(ts)))
    assert file_meta_bytes(CTImageStorage, sop_uid, ts) == buf.getvalue()


@pytest.mark.parametrize("calling", ["MODALITY", "CT1", "RESEARCH_CT", "A" * 16])
def test_file_meta_with_the_calling_ae_is_pydicoms_byte_for_byte(calling: str) -> None:
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom.dsutils import create_file_meta

    from gateway.ae import file_meta_bytes

    meta = create_file_meta(sop_class_uid=UID(CTImageStorage), sop_instance_uid=UID("1.2.3.45"),
                            transfer_syntax=UID(ExplicitVRLittleEndian))
    meta.SourceApplicationEntityTitle = calling
    buf = io.BytesIO()
    write_file_meta_info(buf, meta)
    assert file_meta_bytes(CTImageStorage, "1.2.3.45", ExplicitVRLittleEndian, calling) == buf.getvalue()
    assert file_meta_bytes(CTImageStorage, "1.2.3.45", ExplicitVRLittleEndian, "") == \
        file_meta_bytes(CTImageStorage, "1.2.3.45", ExplicitVRLittleEndian)


def test_the_calling_ae_is_recorded_on_pynetdicoms_paths(gateway: tuple[int, FilesystemBlobStore]) -> None:
    """Spooled by pynetdicom (TLS associations take this path) or received in memory: the stored file's
    meta names the sender in (0002,0016) Source Application Entity Title."""
    port, store = gateway
    ds = encoded(ExplicitVRLittleEndian)
    scu = AE(ae_title="RESEARCH_CT")
    scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = scu.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    (path,) = store.root.rglob(f"{ds.SOPInstanceUID}.dcm")
    back = pydicom.dcmread(path)
    assert back.file_meta.SourceApplicationEntityTitle == "RESEARCH_CT"
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_spooling_uses_its_own_files_and_leaves_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's spool files: in the spool directory, exclusive, unique per process, and removed
    by pynetdicom after the handler (the stored object is a link to the same inode)."""
    import tempfile

    from pynetdicom import dimse_messages

    from gateway.ae import SpoolFile

    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    store = FilesystemBlobStore(tmp_path / "objects")
    port = free_port()
    server = start_server(make_ae("PACS", spool=True), ("127.0.0.1", port),
                          handlers(GatewayContext(IngestService(store))))
    try:
        assert dimse_messages.NamedTemporaryFile is SpoolFile  # type: ignore[attr-defined]
        scu = AE(ae_title="MODALITY")
        scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = scu.associate("127.0.0.1", port, ae_title="PACS")
        sent = [encoded(ExplicitVRLittleEndian) for _ in range(3)]
        try:
            assert [assoc.send_c_store(ds).Status for ds in sent] == [0, 0, 0]
        finally:
            assoc.release()
    finally:
        server.shutdown()
        _config.STORE_RECV_CHUNKED_DATASET = False
    assert not list(spool.iterdir())
    for ds in sent:
        (path,) = store.root.rglob(f"{ds.SOPInstanceUID}.dcm")
        back = pydicom.dcmread(path)
        assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert back.PixelData == ds.PixelData
    a, b = SpoolFile(), SpoolFile()
    assert a.name != b.name and a.name.startswith(str(spool))
    a.close()
    b.close()
