"""The C-STORE SCU (`pacs.dimse.sender`) against an in-process pynetdicom Storage SCP on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pacs.catalog.nodes import RemoteNode
from pacs.dimse.sender import SendError, StoreSender, presentation_of, proposed_contexts
from pacs.storage.filesystem import FilesystemBlobStore
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless, RLELossless
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from tests.unit.aws import fake_aws_credentials

PeerFactory = Callable[[dict[str, list[UID]]], "Peer"]
ALL = [JPEGLSLossless, RLELossless, ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def _testfile(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.fail(f"pydicom test file {name} is not installed (it ships with pydicom)")
    return Path(str(path))


@dataclass
class Peer:
    """A Storage SCP: what it received (transfer syntax, data set), and the status it answers."""

    port: int
    ae_title: str = "PEER"
    received: list[tuple[str, Dataset]] = field(default_factory=list)
    status: int = 0x0000

    @property
    def node(self) -> RemoteNode:
        return RemoteNode(self.ae_title, "127.0.0.1", self.port)


@pytest.fixture
def peer_factory() -> Iterator[PeerFactory]:
    servers: list[tuple[AE, ThreadedAssociationServer]] = []
    lock = threading.Lock()

    def start(syntaxes: dict[str, list[UID]]) -> Peer:
        ae = AE(ae_title="PEER")
        ae.require_called_aet = True
        for sop_class, ts in syntaxes.items():
            ae.add_supported_context(sop_class, ts)
        peer = Peer(port=0)

        def on_store(event: evt.Event) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            with lock:
                peer.received.append((str(event.context.transfer_syntax), ds))
            return peer.status

        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        assert server is not None
        servers.append((ae, server))
        peer.port = server.server_address[1]
        return peer

    yield start
    for ae, server in servers:
        server.shutdown()
        ae.shutdown()


def test_sends_as_stored_when_accepted(peer_factory: PeerFactory, tmp_path: Path) -> None:
    peer = peer_factory({MRImageStorage: ALL, CTImageStorage: ALL})
    jls, ct = _testfile("MR_small_jpeg_ls_lossless.dcm"), _testfile("CT_small.dcm")
    with StoreSender(peer.node, "PACS", presentation_of([jls, ct])) as sender:
        assert sender.send(jls) == 0x0000
        assert sender.send(ct) == 0x0000
        sock = sender.assoc.dul.socket.socket  # type: ignore[union-attr]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    (ts1, ds1), (ts2, ds2) = peer.received
    assert (ts1, ts2) == (JPEGLSLossless, ExplicitVRLittleEndian)
    assert ds1.PixelData == dcmread(jls).PixelData  # the compressed bytes, untouched
    assert ds2.SOPInstanceUID == dcmread(ct).SOPInstanceUID


@pytest.mark.parametrize("accepted", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_transcodes_when_the_stored_syntax_is_refused(peer_factory: PeerFactory, accepted: UID) -> None:
    peer = peer_factory({MRImageStorage: [accepted]})
    jls = _testfile("MR_small_jpeg_ls_lossless.dcm")
    with StoreSender(peer.node, "PACS", presentation_of([jls])) as sender:
        assert sender.send(jls) == 0x0000
    [(ts, ds)] = peer.received
    assert ts == accepted
    assert ds.SOPInstanceUID == dcmread(jls).SOPInstanceUID
    np.testing.assert_array_equal(ds.pixel_array, dcmread(_testfile("MR_small.dcm")).pixel_array)


def test_sends_store_keys(peer_factory: PeerFactory, tmp_path: Path) -> None:
    peer = peer_factory({MRImageStorage: [ExplicitVRLittleEndian]})
    store = FilesystemBlobStore(tmp_path / "objects")
    jls = _testfile("MR_small_jpeg_ls_lossless.dcm")
    key = "default/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5.dcm"
    store.put(key, jls.read_bytes())
    with StoreSender(peer.node, "PACS", [(MRImageStorage, JPEGLSLossless)], store=store) as sender:
        assert sender.send(key) == 0x0000
    assert [ts for ts, _ in peer.received] == [ExplicitVRLittleEndian]


def test_sends_from_a_store_without_local_files(peer_factory: PeerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto import mock_aws
    from pacs.storage.s3 import S3BlobStore

    fake_aws_credentials(monkeypatch)
    peer = peer_factory({MRImageStorage: ALL})
    jls = _testfile("MR_small_jpeg_ls_lossless.dcm")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="originals")
        store = S3BlobStore("originals", region="us-east-1")
        key = "default/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5.dcm"
        store.put(key, jls.read_bytes())
        with StoreSender(peer.node, "PACS", [(MRImageStorage, JPEGLSLossless)], store=store) as sender:
            assert sender.send(key) == 0x0000
    [(ts, ds)] = peer.received
    assert ts == JPEGLSLossless and ds.PixelData == dcmread(jls).PixelData


def test_peer_status_is_returned(peer_factory: PeerFactory) -> None:
    peer = peer_factory({CTImageStorage: ALL})
    peer.status = 0xA700
    ct = _testfile("CT_small.dcm")
    with StoreSender(peer.node, "PACS", presentation_of([ct])) as sender:
        assert sender.send(ct) == 0xA700


def test_refusals(peer_factory: PeerFactory, tmp_path: Path) -> None:
    peer = peer_factory({CTImageStorage: ALL})
    mr, ct = _testfile("MR_small.dcm"), _testfile("CT_small.dcm")
    with StoreSender(peer.node, "PACS", presentation_of([mr, ct])) as sender:
        with pytest.raises(SendError, match="no context for SOP class"):
            sender.send(mr)  # the peer refused MR
        junk = tmp_path / "junk.dcm"
        junk.write_bytes(b"not dicom")
        with pytest.raises(SendError, match="not a DICOM"):
            sender.send(junk)
        assert sender.send(ct) == 0x0000  # the association is still usable
    wrong = RemoteNode("NOT-PEER", "127.0.0.1", peer.port)
    with pytest.raises(SendError, match="rejected"), StoreSender(wrong, "PACS", presentation_of([ct])):
        pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = RemoteNode("GONE", "127.0.0.1", s.getsockname()[1])
    with pytest.raises(SendError), StoreSender(closed, "PACS", presentation_of([ct]), timeout=5):
        pass


def test_proposal_keeps_native_contexts_within_128() -> None:
    pairs = [(f"1.2.3.{n}", JPEGLSLossless) for n in range(100)] + [("1.2.3.0", RLELossless)]
    contexts = proposed_contexts(pairs)
    assert len(contexts) == 128
    assert all(cx.transfer_syntax == [ExplicitVRLittleEndian, ImplicitVRLittleEndian] for cx in contexts[:100])
    with pytest.raises(ValueError, match="at most 128"):
        proposed_contexts((f"1.2.3.{n}", ExplicitVRLittleEndian) for n in range(129))


def test_a_response_taken_by_the_reactor_is_kept_for_the_waiting_call(peer_factory: PeerFactory) -> None:
    """pynetdicom's pause race: the association's reactor may take an SCU call's response off the queue;
    it must be put back, not dropped (the call would wait for the DIMSE timeout, then abort)."""
    from pynetdicom.dimse_primitives import C_STORE

    peer = peer_factory({CTImageStorage: ALL})
    ct = _testfile("CT_small.dcm")
    with StoreSender(peer.node, "PACS", presentation_of([ct]), timeout=30) as sender:
        assoc = sender.assoc
        assert assoc is not None
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = 9
        rsp.AffectedSOPClassUID = CTImageStorage
        rsp.AffectedSOPInstanceUID = "1.2.3.4"
        rsp.Status = 0x0000
        assoc._serve_request(rsp, 1)  # what the reactor does with a message it took
        assert assoc.dimse.get_msg(block=True) == (1, rsp)
        assert sender.send(ct) == 0x0000  # and the association goes on
