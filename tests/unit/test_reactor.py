"""The gateway's event-driven association reactors (gateway/reactor.py): every way an association
ends still ends it, and nothing (threads, wake-up pipes) outlives it."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pacs.dimse.reactor import EventAE, EventAssociation, EventDUL
from pacs.services.ingest import IngestService
from pacs.storage.filesystem import FilesystemBlobStore
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from gateway.ae import GatewayServer, make_ae, start_server
from gateway.context import GatewayContext
from gateway.handlers import handlers


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
    ae = AE(ae_title="SCU")
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
