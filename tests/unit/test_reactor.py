"""The gateway's event-driven association reactors (gateway/reactor.py): every way an association
ends still ends it, and nothing (threads, wake-up pipes) outlives it."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pacs.dimse.direct import command_set, implicit, pdv_pdu, uid_value
from pacs.dimse.reactor import EventAE, EventAssociation, EventDUL, recv_exactly
from pacs.services.ingest import IngestService
from pacs.storage.filesystem import FilesystemBlobStore
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from gateway.ae import GatewayServer, make_ae, start_server
from gateway.context import GatewayContext
from gateway.handlers import handlers
from tests.unit.conftest import build_dataset


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[int, GatewayServer, list[object]]]:
    seen: list[object] = []

    def on_open(event: evt.Event) -> None:
        seen.append(event.assoc)

    ae = make_ae("PACS")
    port = free_port()
    server = start_server(ae, ("127.0.0.1", port), [*handlers(GatewayContext(IngestService(
        FilesystemBlobStore(tmp_path / "objects")))), (evt.EVT_CONN_OPEN, on_open)])
    yield port, server, seen
    server.shutdown()


def requestor() -> AE:
    """Our requestor (event reactors): pynetdicom's own reactor can take a C-ECHO response off the
    queue before `send_c_echo` does under CPU load (pynetdicom#875); ours re-checks its pause."""
    ae = EventAE(ae_title="SCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(Verification)
    return ae


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_echo_and_release_on_event_reactors(gateway: tuple[int, GatewayServer, list[object]]) -> None:
    port, server, seen = gateway
    fds = open_fds()
    for _ in range(5):
        assoc = requestor().associate("127.0.0.1", port, ae_title="PACS")
        assert assoc.is_established
        for _ in range(20):
            assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        assert assoc.is_released
    assert len(seen) == 5 and all(isinstance(a, EventAssociation) for a in seen)
    assert all(isinstance(a.dul, EventDUL) for a in seen)  # type: ignore[attr-defined]
    assert wait_for(lambda: not server.active_associations)
    assert wait_for(lambda: not any(a.dul.is_alive() for a in seen))  # type: ignore[attr-defined]
    assert wait_for(lambda: open_fds() <= fds)  # the wake-up pipes are closed with their DUL


def test_peer_abort_ends_the_association(gateway: tuple[int, GatewayServer, list[object]]) -> None:
    port, server, seen = gateway
    assoc = requestor().associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    assoc.abort()
    assert wait_for(lambda: not server.active_associations)
    assert seen[0].is_aborted  # type: ignore[attr-defined]


def test_dropped_connection_ends_the_association(gateway: tuple[int, GatewayServer, list[object]]) -> None:
    port, server, _seen = gateway
    assoc = requestor().associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)  # the peer vanishes without a PDU
    assert wait_for(lambda: not server.active_associations)
    assoc.abort()


def test_idle_association_is_dropped_after_the_network_timeout(
    gateway: tuple[int, GatewayServer, list[object]],
) -> None:
    port, server, _seen = gateway
    server.ae.network_timeout = 1.0  # for associations from now on; the requestor's is 30 s
    assoc = requestor().associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    assert wait_for(lambda: assoc.is_aborted)  # the gateway gave up on the silent peer
    assert wait_for(lambda: not server.active_associations)


def test_idle_associations_sleep(gateway: tuple[int, GatewayServer, list[object]]) -> None:
    """An idle association's DUL thread blocks in select() instead of polling every millisecond:
    over 2 s it uses under 30 ms of CPU (pynetdicom's 1 ms loop uses several times that)."""
    port, _server, seen = gateway
    assoc = requestor().associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    try:
        dul = seen[0].dul  # type: ignore[attr-defined]
        tids = {dul.native_id}
        def cpu_ticks() -> int:
            total = 0
            for tid in tids:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
            return total
        before = cpu_ticks()
        time.sleep(2.0)
        spent = (cpu_ticks() - before) / os.sysconf("SC_CLK_TCK")
        assert spent < 0.03
    finally:
        assoc.release()


def test_requestor_associations_run_on_event_reactors(
    gateway: tuple[int, GatewayServer, list[object]],
) -> None:
    port, server, _seen = gateway
    fds = open_fds()
    ae = EventAE(ae_title="SCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(Verification)
    for _ in range(3):
        assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
        assert assoc.is_established and isinstance(assoc, EventAssociation)
        sock = assoc.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        for _ in range(20):
            assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        assert assoc.is_released
        assert wait_for(lambda a=assoc: not a.dul.is_alive())
    assert wait_for(lambda: not server.active_associations)
    assert wait_for(lambda: open_fds() <= fds)


def _echo_rq_pdu(msg_id: int, context_id: int) -> bytes:
    """A C-ECHO-RQ as one P-DATA-TF PDU (command set, Implicit VR Little Endian)."""
    command = command_set([
        implicit(0x00000002, "", uid_value(Verification)), implicit(0x00000100, "<H", 0x0030),
        implicit(0x00000110, "<H", msg_id), implicit(0x00000800, "<H", 0x0101),
    ])
    return pdv_pdu(context_id, 0x03, command)


def test_pdata_hook_sees_each_pdu_and_feed_hands_it_back(
    gateway: tuple[int, GatewayServer, list[object]],
) -> None:
    """The acceptor's hook gets every P-DATA-TF PDU as bytes (and not the association's other PDUs);
    what it takes pynetdicom never sees; what it feeds back is served as if just received."""
    port, server, _seen = gateway
    taken: list[bytes] = []
    held: list[tuple[object, bytes]] = []

    def hook_for(assoc: object) -> object:
        def hook(pdu: bytes) -> bool:
            taken.append(pdu)
            if len(taken) == 1:  # the first echo: held back, then handed to pynetdicom with the second
                held.append((assoc, pdu))
                return True
            assoc.dul.feed(held.pop()[1])  # type: ignore[attr-defined]
            return False
        return hook

    server.pdata_hook_for = hook_for  # type: ignore[assignment]
    assoc = requestor().associate("127.0.0.1", port, ae_title="PACS")
    try:
        assert assoc.is_established
        cx = assoc.accepted_contexts[0].context_id
        sock = assoc.dul.socket.socket
        assoc._reactor_checkpoint.clear()  # this test reads the answers itself
        assert wait_for(lambda: assoc._is_paused)
        time.sleep(0.05)  # pynetdicom's loop may have passed its checkpoint just before: let it finish
        sock.sendall(_echo_rq_pdu(11, cx))
        assert wait_for(lambda: len(taken) == 1) and assoc.dimse.msg_queue.empty()
        time.sleep(0.2)
        assert assoc.dimse.msg_queue.empty()  # held: no answer
        sock.sendall(_echo_rq_pdu(12, cx))
        answers = [assoc.dimse.get_msg(block=True)[1] for _ in range(2)]
        assert [a.MessageIDBeingRespondedTo for a in answers] == [11, 12]  # type: ignore[union-attr]
        assert all(a.Status == 0x0000 for a in answers)  # type: ignore[union-attr]
        assert all(p[0] == 0x04 for p in taken) and len(taken) == 2
    finally:
        assoc._reactor_checkpoint.set()
        assoc.release()


def test_borrowed_socket_is_read_by_the_borrower_alone(
    gateway: tuple[int, GatewayServer, list[object]],
) -> None:
    """While a requestor's socket is borrowed, its DUL reads nothing: the borrower gets the answers
    itself; afterwards the DUL reads again (an echo through pynetdicom works)."""
    port, _server, _seen = gateway
    ae = EventAE(ae_title="SCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    try:
        assert assoc.is_established
        cx = assoc.accepted_contexts[0].context_id
        for round_ in range(3):
            with assoc.dul.borrowed() as sock:  # type: ignore[attr-defined]
                timeout = sock.gettimeout()
                sock.settimeout(30)  # a DUL still reading would leave this test waiting
                for n in range(5):
                    sock.sendall(_echo_rq_pdu(100 + n, cx))
                    head = recv_exactly(sock, 6)
                    body = recv_exactly(sock, int.from_bytes(head[2:6], "big"))
                    assert head[0] == 0x04 and len(body) > 12
                assert assoc.dimse.msg_queue.empty() and assoc.dimse.message is None
                sock.settimeout(timeout)
            assert assoc.send_c_echo(msg_id=200 + round_).Status == 0x0000
    finally:
        assoc.release()


def test_a_large_pdu_is_read_whole(tmp_path: Path) -> None:
    """A 4 MiB C-STORE data set in one P-DATA-TF PDU (read in large pieces) arrives intact."""
    received: list[bytes] = []

    def on_store(event: evt.Event) -> int:
        received.append(bytes(event.request.DataSet.getvalue()))
        return 0x0000

    ae = make_ae("PACS", max_pdu=8 << 20)
    port = free_port()
    server = start_server(ae, ("127.0.0.1", port), [(evt.EVT_C_STORE, on_store)])
    try:
        scu = EventAE(ae_title="SCU")
        scu.maximum_pdu_size = 8 << 20
        scu.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
        assoc = scu.associate("127.0.0.1", port, ae_title="PACS")
        assert assoc.is_established
        ds = build_dataset(SOPClassUID=SecondaryCaptureImageStorage)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Rows, ds.Columns = 1024, 2048
        ds.PixelData = bytes(range(256)) * (1024 * 2048 * 2 // 256)
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        assert len(received) == 1 and bytes(range(256)) * 64 in received[0]
        assert len(received[0]) > 4 << 20
    finally:
        server.shutdown()
