"""Connections that never become associations (gateway.lobby, the acceptor's wait in
pacs.dimse.reactor): a burst of bare connects (a port scan, health checks) locks nobody out,
silent connections hold no thread and are bounded per source address, a peer that goes away in
the middle of its A-ASSOCIATE-RQ frees its slot at once, and every refusal is counted."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pacs.config import Settings
from pacs.services.ingest import IngestService
from pacs.storage.filesystem import FilesystemBlobStore
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway.ae import GatewayServer, make_ae, start_server
from gateway.context import GatewayContext
from gateway.counters import COUNTERS
from gateway.handlers import handlers
from gateway.policy import AssociationPolicy, ConnectionGuard, configure

DEADLINE = 60.0


@dataclass
class Gateway:
    server: GatewayServer
    port: int


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[GatewayServer] = []

    def start(**changes: object) -> Gateway:
        settings = dataclasses.replace(Settings(data_dir=tmp_path, require_known_callers="0"), **changes)
        ae = make_ae("PACS")
        configure(ae, settings)
        policy = AssociationPolicy(settings, None)
        ingest = IngestService(FilesystemBlobStore(tmp_path / "objects"))
        bindings = policy.handlers() + policy.guard(handlers(GatewayContext(ingest, None, settings)))
        server = start_server(ae, ("127.0.0.1", 0), bindings, guard=ConnectionGuard(settings))
        started.append(server)
        return Gateway(server, server.server_address[1])

    yield start
    for server in started:
        for assoc in server.active_associations:
            assoc.abort()
        server.shutdown()


def rejected(reason: str) -> int:
    return int(COUNTERS.snapshot()["rejected"][reason])


def bare_refusals() -> int:
    """Connections closed before an A-ASSOCIATE-RQ: seen closed, closed mid-request, or (on a busy
    machine, when more than `max_silent_per_source` of them wait in the lobby before their close is
    seen) closed as the oldest of their source."""
    return sum(rejected(r) for r in ("closed-before-request", "incomplete-request", "source-limit"))


def wait_for(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def echo(port: int) -> Association:
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae.associate("127.0.0.1", port, ae_title="PACS")


def release(assoc: Association) -> None:
    if assoc.is_established:
        assoc.release()
    assoc.ae.shutdown()


def bare_connects(port: int, n: int) -> None:
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=30):
            pass


@pytest.mark.parametrize("bursts", [2])
def test_a_burst_of_bare_connects_locks_no_association_out(serve: Callable[..., Gateway], bursts: int) -> None:
    # pynetdicom alone kept each of them waiting out the ACSE timeout (here 120 s) in a thread of its
    # own, counted against `maximum_associations` (2 x 64 + 16): the next associations were refused.
    gw = serve(acse_timeout=120)
    before = bare_refusals()
    for burst in range(bursts):
        bare_connects(gw.port, 400)
        assoc = echo(gw.port)
        assert assoc.is_established, f"burst {burst}: the association after 400 bare connects was refused"
        assert assoc.send_c_echo().Status == 0
        release(assoc)
    wait_for(lambda: bare_refusals() - before >= 800, "every bare connection counted")
    wait_for(lambda: not gw.server.active_associations, "no association left over")


def test_silent_connections_hold_no_thread_and_are_bounded_per_source(serve: Callable[..., Gateway]) -> None:
    gw = serve(acse_timeout=120, max_silent_per_source=8)
    assert gw.server.lobby is not None
    threads = threading.active_count()
    evicted = rejected("source-limit")
    silent = [socket.create_connection(("127.0.0.1", gw.port), timeout=30) for _ in range(20)]
    try:
        wait_for(lambda: rejected("source-limit") - evicted == 12, "the 12 oldest closed")
        assert len(gw.server.lobby) == 8
        assert threading.active_count() == threads, "silent connections got threads"
        for sock in silent[:12]:  # the oldest were closed by the gateway
            assert sock.recv(1) == b""
        assoc = echo(gw.port)
        assert assoc.is_established
        release(assoc)
    finally:
        for sock in silent:
            sock.close()
    wait_for(lambda: len(gw.server.lobby) == 0, "the lobby emptied once the peers closed")  # type: ignore[arg-type]


def test_a_silent_connection_is_closed_after_the_acse_timeout(serve: Callable[..., Gateway]) -> None:
    gw = serve(acse_timeout=1)
    before = rejected("silent")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=DEADLINE) as sock:
        assert sock.recv(1) == b""  # closed by the gateway (a timeout here would fail the test)
    wait_for(lambda: rejected("silent") == before + 1, "the refusal counted")  # counted after the close


def test_a_peer_gone_in_the_middle_of_its_request_frees_its_slot_at_once(serve: Callable[..., Gateway]) -> None:
    gw = serve(acse_timeout=600)
    before = rejected("incomplete-request")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
        sock.sendall(bytes([0x01, 0, 0, 0, 0x01, 0x00]))  # an A-ASSOCIATE-RQ header, no body
        wait_for(lambda: gw.server.active_associations, "the association thread")
    # pynetdicom waited out the ACSE timeout (600 s) here, holding the slot and its thread
    wait_for(lambda: not gw.server.active_associations, "the slot freed", timeout=DEADLINE)
    wait_for(lambda: rejected("incomplete-request") == before + 1, "the refusal counted")
