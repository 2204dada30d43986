"""The association policy (gateway.policy) in this process: PDU framing limits on a socket pair, the
allowlist switch, and a gateway served on a free loopback port with the policy bound — unknown
callers, the association limit, per-node operations, the cap on what the gateway sends."""

from __future__ import annotations

import dataclasses
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pacs.catalog.nodes import RemoteNode
from pacs.catalog.nodes_sqlite import SqliteNodeRegistry
from pacs.config import Settings
from pacs.services.ingest import IngestService
from pacs.storage.filesystem import FilesystemBlobStore
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from gateway.ae import GatewayServer, make_ae, start_server
from gateway.context import GatewayContext
from gateway.handlers import handlers
from gateway.policy import (
    NOT_AUTHORIZED,
    AssociationPolicy,
    ConnectionGuard,
    GuardedSocket,
    configure,
    known_callers_required,
)

ABORT_INVALID_PDU = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 6])


# -- PDU framing -------------------------------------------------------------------------------------------

@pytest.fixture
def pair() -> Iterator[tuple[GuardedSocket, socket.socket]]:
    a, b = socket.socketpair()
    guarded = GuardedSocket(a.family, a.type, a.proto, fileno=a.detach())
    guarded.settimeout(10)
    b.settimeout(10)
    yield guarded, b
    guarded.close()
    b.close()


def pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBL", kind, 0, len(body)) + body


def read_all(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "connection closed early"
        out += chunk
    return out


def test_pdus_within_limits_pass_whatever_the_chunking(pair: tuple[GuardedSocket, socket.socket]) -> None:
    guarded, peer = pair
    guarded.guard(max_pdu=100, pdu_seconds=30)
    stream = pdu(0x04, b"x" * 100) + pdu(0x01, b"y" * 5000) + pdu(0x05, b"\0\0\0\0")
    received = b""
    for i in range(0, len(stream), 7):  # header and body bytes split across reads
        peer.sendall(stream[i:i + 7])
        received += read_all(guarded, len(stream[i:i + 7]))
    assert received == stream


def test_an_oversized_p_data_is_aborted_before_its_body(pair: tuple[GuardedSocket, socket.socket]) -> None:
    guarded, peer = pair
    guarded.guard(max_pdu=1000, pdu_seconds=30)
    peer.sendall(struct.pack(">BBL", 0x04, 0, 0xFFFFFFF0))  # announces 4 GB, sends nothing more
    with pytest.raises(ConnectionAbortedError, match="over the limit"):
        guarded.recv(6)
    assert read_all(peer, len(ABORT_INVALID_PDU)) == ABORT_INVALID_PDU


def test_other_pdus_are_capped_at_one_mebibyte(pair: tuple[GuardedSocket, socket.socket]) -> None:
    guarded, peer = pair
    guarded.guard(max_pdu=0, pdu_seconds=30)  # P-DATA unlimited; an A-ASSOCIATE-RQ still is not
    peer.sendall(struct.pack(">BBL", 0x01, 0, (1 << 20) + 1))
    with pytest.raises(ConnectionAbortedError):
        guarded.recv(6)


def test_a_trickled_pdu_times_out(pair: tuple[GuardedSocket, socket.socket]) -> None:
    guarded, peer = pair
    guarded.guard(max_pdu=1000, pdu_seconds=0.3)
    peer.sendall(struct.pack(">BBL", 0x04, 0, 500) + b"a")
    assert len(guarded.recv(7)) == 7
    time.sleep(0.5)  # past the PDU's deadline; the next byte arrives in time for the socket timeout
    peer.sendall(b"b")
    with pytest.raises(TimeoutError):
        guarded.recv(1)


@pytest.mark.parametrize(("value", "backend", "host", "expected"), [
    ("auto", "embedded", "127.0.0.1", False),
    ("auto", "embedded", "::1", False),
    ("auto", "embedded", "localhost", False),
    ("auto", "embedded", "0.0.0.0", True),
    ("auto", "aws", "127.0.0.1", True),
    ("1", "embedded", "127.0.0.1", True),
    ("0", "aws", "10.0.0.1", False),
])
def test_the_allowlist_switch(value: str, backend: str, host: str, expected: bool) -> None:
    settings = Settings(require_known_callers=value, backend=backend, host=host)  # type: ignore[arg-type]
    assert known_callers_required(settings) is expected


def test_a_bad_allowlist_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="auto, 1 or 0"):
        known_callers_required(Settings(require_known_callers="maybe"))


# -- a gateway in this process ---------------------------------------------------------------------------

@dataclass
class Gateway:
    server: GatewayServer
    nodes: SqliteNodeRegistry
    port: int
    settings: Settings


Serve = Callable[..., Gateway]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    started: list[tuple[GatewayServer, SqliteNodeRegistry]] = []

    def start(**changes: object) -> Gateway:
        settings = dataclasses.replace(Settings(data_dir=tmp_path, network_timeout=30), **changes)
        nodes = SqliteNodeRegistry(tmp_path / "catalog.db")
        ae = make_ae("PACS")
        configure(ae, settings)
        ingest = IngestService(FilesystemBlobStore(tmp_path / "objects"))
        policy = AssociationPolicy(settings, nodes)
        bindings = policy.handlers() + policy.guard(handlers(GatewayContext(ingest, None, settings)))
        server = start_server(ae, ("127.0.0.1", 0), bindings, guard=ConnectionGuard(settings))
        started.append((server, nodes))
        return Gateway(server, nodes, server.server_address[1], settings)

    yield start
    for server, _ in started:
        for assoc in server.active_associations:
            assoc.abort()
        server.shutdown()


def associate(port: int, calling: str = "SCU", *, max_pdu: int = 16384,
              contexts: list[str] | None = None) -> Association:
    ae = AE(ae_title=calling)
    for uid in contexts or [Verification]:
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae.associate("127.0.0.1", port, ae_title="PACS", max_pdu=max_pdu)


def rejection(assoc: Association) -> tuple[int | None, int | None, int | None]:
    assert assoc.is_rejected, "the association should have been rejected"
    rj = assoc.acceptor.primitive
    assert rj is not None
    return rj.result, rj.result_source, rj.diagnostic


def release(*assocs: Association) -> None:
    for a in assocs:
        if a.is_established:
            a.release()
        a.ae.shutdown()


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_unknown_calling_ae_rejected_when_the_allowlist_is_on(serve: Serve) -> None:
    gw = serve(require_known_callers="1")
    gw.nodes.put_node(RemoteNode("KNOWN", "127.0.0.1", 104))
    unknown = associate(gw.port, "STRANGER")
    assert rejection(unknown) == (0x01, 0x01, 0x03)  # permanent, service user, calling AE not recognised
    known = associate(gw.port, "KNOWN")
    assert known.is_established
    assert known.send_c_echo().Status == 0
    release(unknown, known)


def test_unknown_calling_ae_accepted_when_the_allowlist_is_off(serve: Serve) -> None:
    gw = serve(require_known_callers="0")
    assoc = associate(gw.port, "STRANGER")
    assert assoc.is_established
    release(assoc)


def test_one_association_over_the_limit_is_rejected(serve: Serve) -> None:
    gw = serve(max_associations=2)
    held = [associate(gw.port), associate(gw.port)]
    assert all(a.is_established for a in held)
    over = associate(gw.port)
    assert rejection(over) == (0x02, 0x03, 0x02)  # transient, service provider (presentation), local limit
    release(over, held[0])

    def admitted() -> bool:
        again = associate(gw.port)
        ok = again.is_established
        release(again)
        return ok

    wait_for(admitted, "an association once one of the two was released")
    release(held[1])


def test_a_peer_announcing_an_unlimited_pdu_gets_capped_fragments(serve: Serve) -> None:
    gw = serve(max_send_pdu=32768)
    assoc = associate(gw.port, max_pdu=0)  # 0: "no limit"
    assert assoc.is_established
    wait_for(lambda: gw.server.active_associations, "the server side of the association")
    (server_side,) = gw.server.active_associations
    assert server_side.dimse.maximum_pdu_size == 32768
    release(assoc)


def test_a_peer_announcing_a_small_pdu_keeps_it(serve: Serve) -> None:
    gw = serve(max_send_pdu=32768)
    assoc = associate(gw.port, max_pdu=8192)
    wait_for(lambda: gw.server.active_associations, "the server side of the association")
    assert gw.server.active_associations[0].dimse.maximum_pdu_size == 8192
    release(assoc)


def ct_instance() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "P1"
    ds.Modality = "CT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_operations_a_node_may_not_use_are_refused(serve: Serve, tmp_path: Path) -> None:
    gw = serve()
    gw.nodes.put_node(RemoteNode("FINDONLY", "127.0.0.1", 104, operations=frozenset({"find"})))
    assoc = associate(gw.port, "FINDONLY", contexts=[CTImageStorage, StudyRootQueryRetrieveInformationModelFind,
                                                     StudyRootQueryRetrieveInformationModelMove])
    assert assoc.is_established
    accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
    assert StudyRootQueryRetrieveInformationModelMove not in accepted  # no move: its contexts refused
    assert StudyRootQueryRetrieveInformationModelFind in accepted
    rsp = assoc.send_c_store(ct_instance())
    assert rsp.Status == NOT_AUTHORIZED
    assert "may not store" in rsp.ErrorComment
    release(assoc)
    assert not list((tmp_path / "objects").rglob("*.dcm")), "nothing is stored for a refused C-STORE"


def test_a_node_without_find_gets_not_authorized(serve: Serve) -> None:
    gw = serve()
    gw.nodes.put_node(RemoteNode("STOREONLY", "127.0.0.1", 104, operations=frozenset({"store"})))
    assoc = associate(gw.port, "STOREONLY", contexts=[StudyRootQueryRetrieveInformationModelFind])
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    responses = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
    assert [int(status.Status) for status, _ in responses] == [NOT_AUTHORIZED]
    release(assoc)


def test_an_unregistered_caller_may_do_everything_when_the_allowlist_is_off(serve: Serve) -> None:
    gw = serve(require_known_callers="0")
    assoc = associate(gw.port, "ANYONE", contexts=[CTImageStorage, StudyRootQueryRetrieveInformationModelMove])
    accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
    assert StudyRootQueryRetrieveInformationModelMove in accepted
    assert assoc.send_c_store(ct_instance()).Status == 0
    release(assoc)


def test_workers_share_connections_so_the_less_busy_one_accepts_next() -> None:
    import copy

    from gateway.policy import AssociationCounter

    first = AssociationCounter(2)
    second = copy.copy(first)  # what the forked worker holds: the same shared arrays, its own index
    second.index = 1
    assert not first.busier() and not second.busier()
    first.connected(+1)
    assert first.busier() and not second.busier()  # the second worker should take the next
    second.connected(+1)
    assert not first.busier() and not second.busier()
    first.connected(+1)
    second.connected(-1)
    assert first.busier() and not second.busier()
    assert not AssociationCounter(1).busier()  # a single worker never defers
