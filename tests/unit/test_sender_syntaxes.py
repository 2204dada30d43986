"""Which contexts the C-STORE SCU proposes and which syntax each instance goes in
(`pacs.dimse.proposals`), and `StoreSender` sending in any syntax a codec produces, against an
in-process pynetdicom Storage SCP on loopback accepting only what a test says."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pacs.catalog.nodes import RemoteNode
from pacs.codecs import can_encode
from pacs.dimse.proposals import MAX_CONTEXTS, alternatives, candidates, proposed_contexts
from pacs.dimse.sender import SendError, StoreSender, load_for, presentation_of
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

NATIVE = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
MPEG2 = "1.2.840.10008.1.2.4.100"  # stored as received, decoded by no codec here


def accepted(*pairs: tuple[str, str]) -> list[PresentationContext]:
    """Accepted contexts as an association would hold them (this side the SCU)."""
    found = []
    for n, (sop_class, syntax) in enumerate(pairs):
        cx = build_context(sop_class, [syntax])
        cx.context_id = 2 * n + 1
        cx._as_scu, cx._as_scp = True, False
        found.append(cx)
    return found


# -- the proposal ---------------------------------------------------------------------------------------


def test_a_native_class_is_proposed_with_its_preference_and_the_lossless_alternatives() -> None:
    contexts = proposed_contexts([(CTImageStorage, ExplicitVRLittleEndian)], preferred=JPEGLSLossless)
    assert [cx.transfer_syntax for cx in contexts][:2] == [NATIVE, [JPEGLSLossless]]
    singles = [cx.transfer_syntax[0] for cx in contexts[1:]]
    assert all(len(cx.transfer_syntax) == 1 for cx in contexts[1:])  # one syntax per context: we choose
    assert singles[0] == JPEGLSLossless and RLELossless in singles
    assert singles == [JPEGLSLossless, *[s for s in alternatives() if s != JPEGLSLossless]]
    assert all(can_encode(s) for s in singles)


def test_stored_compressed_syntaxes_come_before_the_alternatives() -> None:
    contexts = proposed_contexts([(CTImageStorage, RLELossless), (MRImageStorage, ExplicitVRLittleEndian)])
    assert [(cx.abstract_syntax, cx.transfer_syntax) for cx in contexts[:3]] == [
        (CTImageStorage, NATIVE), (MRImageStorage, NATIVE), (CTImageStorage, [RLELossless])]
    assert (CTImageStorage, [RLELossless]) not in [(cx.abstract_syntax, cx.transfer_syntax) for cx in contexts[3:]]
    assert not proposed_contexts([(CTImageStorage, ExplicitVRLittleEndian)], transcode=False)[1:]


def test_a_native_preference_gets_a_context_of_its_own() -> None:
    contexts = proposed_contexts([(CTImageStorage, ExplicitVRLittleEndian)], preferred=ImplicitVRLittleEndian)
    assert contexts[0].transfer_syntax == [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
    assert contexts[1].transfer_syntax == [ImplicitVRLittleEndian]


def test_an_undecodable_stored_syntax_gets_no_alternatives() -> None:
    contexts = proposed_contexts([(CTImageStorage, MPEG2)], preferred=JPEGLSLossless)
    assert [cx.transfer_syntax for cx in contexts] == [NATIVE, [MPEG2]]


def test_the_budget_keeps_natives_then_stored_syntaxes_within_128() -> None:
    pairs = [(f"1.2.3.{n}", JPEGLSLossless) for n in range(100)] + [("1.2.3.0", RLELossless)]
    contexts = proposed_contexts(pairs, preferred=RLELossless)
    assert len(contexts) == MAX_CONTEXTS
    assert all(cx.transfer_syntax == NATIVE for cx in contexts[:100])
    # stored syntaxes next (1.2.3.0 has two), then nothing else fits
    assert [cx.transfer_syntax for cx in contexts[100:]] == [[JPEGLSLossless], [RLELossless]] + [[JPEGLSLossless]] * 26
    few = proposed_contexts([(f"1.2.3.{n}", ExplicitVRLittleEndian) for n in range(60)], preferred=RLELossless)
    assert len(few) == MAX_CONTEXTS
    assert [cx.transfer_syntax for cx in few[60:120]] == [[RLELossless]] * 60  # then the preferred one
    with pytest.raises(ValueError, match="at most 128"):
        proposed_contexts((f"1.2.3.{n}", ExplicitVRLittleEndian) for n in range(129))


# -- the choice ------------------------------------------------------------------------------------------


def test_as_stored_when_accepted_unless_the_preference_is_accepted() -> None:
    peer = accepted((CTImageStorage, ExplicitVRLittleEndian), (CTImageStorage, JPEGLSLossless))
    assert candidates(peer, CTImageStorage, ExplicitVRLittleEndian)[0] == ExplicitVRLittleEndian
    assert candidates(peer, CTImageStorage, JPEGLSLossless)[0] == JPEGLSLossless
    assert candidates(peer, CTImageStorage, ExplicitVRLittleEndian, JPEGLSLossless) == [
        JPEGLSLossless, ExplicitVRLittleEndian]
    assert candidates(peer, CTImageStorage, ExplicitVRLittleEndian, RLELossless)[0] == ExplicitVRLittleEndian


def test_the_best_producible_syntax_when_the_stored_one_was_refused() -> None:
    jls_only = accepted((CTImageStorage, JPEGLSLossless))
    assert candidates(jls_only, CTImageStorage, ExplicitVRLittleEndian) == [JPEGLSLossless]
    assert candidates(jls_only, CTImageStorage, RLELossless) == [JPEGLSLossless]
    assert candidates(jls_only, MRImageStorage, ExplicitVRLittleEndian) == []  # no context for the class
    assert candidates(jls_only, CTImageStorage, MPEG2) == []  # nothing decodes it
    both = accepted((CTImageStorage, RLELossless), (CTImageStorage, ImplicitVRLittleEndian))
    assert candidates(both, CTImageStorage, JPEGLSLossless) == [ImplicitVRLittleEndian, RLELossless]


def test_lossy_only_for_a_lossy_source_or_a_lossy_preference() -> None:
    if not can_encode(JPEGBaseline8Bit):
        pytest.skip("no JPEG Baseline encoder here yet")
    lossy_only = accepted((CTImageStorage, JPEGBaseline8Bit))
    assert candidates(lossy_only, CTImageStorage, ExplicitVRLittleEndian) == []
    assert candidates(lossy_only, CTImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit) == [JPEGBaseline8Bit]


def test_c_get_contexts_where_this_side_is_not_the_scu_are_not_used() -> None:
    cx = accepted((CTImageStorage, JPEGLSLossless))[0]
    cx._as_scu, cx._as_scp = False, True
    assert candidates([cx], CTImageStorage, JPEGLSLossless) == []


# -- sending ------------------------------------------------------------------------------------------------


def ct_file(path: Path, syntax: str = ExplicitVRLittleEndian, *, bits: int = 16, seed: int = 1) -> Path:
    """A small CT as a Part 10 file in `syntax` (12-bit noise in 16 bits, or 32-bit samples)."""
    rng = np.random.default_rng(seed)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality = "P1", "CT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 32, 24, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, 12 if bits == 16 else bits, (12 if bits == 16 else bits) - 1
    ds.PixelRepresentation = 0
    ds.PixelData = rng.integers(0, 4096, (32, 24), dtype=f"uint{bits}").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class Peer:
    port: int
    received: list[tuple[str, Dataset]] = field(default_factory=list)

    def node(self, preferred: str = "") -> RemoteNode:
        return RemoteNode("PEER", "127.0.0.1", self.port, preferred_syntax=preferred)


PeerFactory = Callable[[list[str]], Peer]


@pytest.fixture
def peer_factory() -> Iterator[PeerFactory]:
    """Storage SCPs accepting CT Image Storage in the syntaxes given only."""
    servers: list[tuple[AE, ThreadedAssociationServer]] = []
    lock = threading.Lock()

    def start(syntaxes: list[str]) -> Peer:
        ae = AE(ae_title="PEER")
        ae.add_supported_context(CTImageStorage, syntaxes)
        peer = Peer(0)

        def on_store(event: evt.Event) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            with lock:
                peer.received.append((str(event.context.transfer_syntax), ds))
            return 0x0000

        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        peer.port = server.server_address[1]
        servers.append((ae, server))
        return peer

    yield start
    for ae, server in servers:
        server.shutdown()
        ae.shutdown()


def pixels(ds: Dataset) -> np.ndarray:
    return np.asarray(ds.pixel_array)


def test_native_sent_as_jpeg_ls_to_a_jpeg_ls_only_peer(peer_factory: PeerFactory, tmp_path: Path) -> None:
    peer = peer_factory([JPEGLSLossless])
    native = ct_file(tmp_path / "native.dcm")
    with StoreSender(peer.node(), "PACS", presentation_of([native])) as sender:
        assert sender.send(native) == 0x0000
    (syntax, got), = peer.received
    assert syntax == JPEGLSLossless and got.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert np.array_equal(pixels(got), pixels(dcmread(native)))
    assert got.SOPInstanceUID == dcmread(native).SOPInstanceUID  # lossless: the same instance


def test_jpeg_ls_decoded_for_an_explicit_only_peer(peer_factory: PeerFactory, tmp_path: Path) -> None:
    peer = peer_factory([ExplicitVRLittleEndian])
    jls = ct_file(tmp_path / "jls.dcm", JPEGLSLossless)
    with StoreSender(peer.node(), "PACS", presentation_of([jls])) as sender:
        assert sender.send(jls) == 0x0000
    (syntax, got), = peer.received
    assert syntax == ExplicitVRLittleEndian
    assert np.array_equal(pixels(got), pixels(dcmread(jls)))


def test_the_preferred_syntax_wins_when_accepted(peer_factory: PeerFactory, tmp_path: Path) -> None:
    peer = peer_factory([RLELossless, JPEGLSLossless, ExplicitVRLittleEndian])
    files = [ct_file(tmp_path / "a.dcm"), ct_file(tmp_path / "b.dcm", JPEGLSLossless, seed=2)]
    with StoreSender(peer.node(RLELossless), "PACS", presentation_of(files)) as sender:
        assert [sender.send(f) for f in files] == [0, 0]
    assert [s for s, _ in peer.received] == [RLELossless, RLELossless]
    for f, (_, got) in zip(files, peer.received, strict=True):
        assert np.array_equal(pixels(got), pixels(dcmread(f)))
    peer.received.clear()
    with StoreSender(peer.node(), "PACS", presentation_of(files)) as sender:  # no preference: as stored
        assert [sender.send(f) for f in files] == [0, 0]
    assert [s for s, _ in peer.received] == [ExplicitVRLittleEndian, JPEGLSLossless]


def test_an_instance_no_codec_produces_fails_alone(peer_factory: PeerFactory, tmp_path: Path) -> None:
    peer = peer_factory([JPEGLSLossless])
    wide = ct_file(tmp_path / "wide.dcm", bits=32)  # JPEG-LS carries at most 16 bits
    ok = ct_file(tmp_path / "ok.dcm", seed=3)
    with StoreSender(peer.node(), "PACS", presentation_of([wide, ok])) as sender:
        with pytest.raises(SendError, match=r"cannot transcode to JPEGLSLossless \(cannot encode"):
            sender.send(wide)
        assert sender.send(ok) == 0x0000  # the association is still usable
    assert [s for s, _ in peer.received] == [JPEGLSLossless]


def test_a_preference_the_instance_cannot_take_falls_back(peer_factory: PeerFactory, tmp_path: Path) -> None:
    peer = peer_factory([JPEGLSLossless, ImplicitVRLittleEndian])
    wide = ct_file(tmp_path / "wide.dcm", bits=32)
    with StoreSender(peer.node(JPEGLSLossless), "PACS", presentation_of([wide])) as sender:
        assert sender.send(wide) == 0x0000
    (syntax, got), = peer.received
    assert syntax == ImplicitVRLittleEndian
    assert np.array_equal(pixels(got), pixels(dcmread(wide)))


def test_load_for_reads_a_stream_again_for_each_attempt(tmp_path: Path) -> None:
    import io

    wide = ct_file(tmp_path / "wide.dcm", bits=32)
    peer = accepted((CTImageStorage, JPEGLSLossless), (CTImageStorage, ExplicitVRLittleEndian))
    ds = load_for(peer, io.BytesIO(wide.read_bytes()), CTImageStorage, ExplicitVRLittleEndian, JPEGLSLossless)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert UID(ds.file_meta.TransferSyntaxUID).is_little_endian
