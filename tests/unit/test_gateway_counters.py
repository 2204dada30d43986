"""The gateway's shared counts across worker processes: refusals counted by reason and logged
(bare connections once per address and window), a dead worker's association slots released even
when it died holding the counters' lock, orphaned spool files found by their process id."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from gateway import counters, policy
from gateway.counters import GatewayCounters
from gateway.policy import AssociationCounter
from gateway.spool import remove_orphans


def test_refusals_are_counted_in_every_process_and_bare_ones_logged_once_per_window(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = GatewayCounters()
    pid = os.fork()
    if pid == 0:  # a worker: counts into the same shared memory
        shared.reject("unknown-caller", ("10.0.0.9", 1234), "association from {peer} rejected")
        os._exit(0)
    os.waitpid(pid, 0)
    with caplog.at_level(logging.WARNING, logger="gateway"):
        for port in range(100, 150):
            shared.reject("closed-before-request", ("10.0.0.7", port), "connection from {peer} closed")
        shared.reject("tls-handshake", ("10.0.0.8", 9), "TLS handshake with {peer} refused: no certificate")
    snapshot = shared.snapshot()
    assert snapshot["rejected"]["closed-before-request"] == 50
    assert snapshot["rejected"]["unknown-caller"] == 1  # counted in the forked process
    assert snapshot["rejected"]["tls-handshake"] == 1
    assert snapshot["worker_restarts"] == 0
    lines = [r.getMessage() for r in caplog.records]
    assert [m for m in lines if "10.0.0.7" in m] == ["connection from 10.0.0.7:100 closed [closed-before-request]"]
    assert "TLS handshake with 10.0.0.8:9 refused: no certificate [tls-handshake]" in lines
    caplog.clear()
    monkeypatch.setattr(counters, "LOG_WINDOW", 0.0)  # the window is over: the 49 held back are logged
    with caplog.at_level(logging.WARNING, logger="gateway"):
        shared.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "refused 49 more connection(s) from 10.0.0.7 [closed-before-request] in the last 0 s"]


def test_a_dead_workers_slots_are_released_even_if_it_held_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "LOCK_TIMEOUT", 0.5)
    counter = AssociationCounter(2)
    pid = os.fork()
    if pid == 0:  # worker 1: three associations, then killed inside the counter's lock
        counter.index = 1
        counter.publish(3)
        counter.connected(+3)
        counter.lock.acquire()
        os._exit(0)
    os.waitpid(pid, 0)
    assert counter.total() == 3
    counter.release(1)
    assert counter.total() == 0
    assert not counter.busier()
    with counter.lock:  # usable again
        counter.publish(1)
    assert counter.total() == 1


def test_orphaned_spool_files_are_those_of_processes_gone(tmp_path: Path) -> None:
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)
    orphan = tmp_path / f"{gone}-7.dcm"
    mine = tmp_path / f"{os.getpid()}-1.dcm"
    parent = tmp_path / f"{os.getppid()}-1.dcm"  # a live process
    stow = tmp_path / "stow-abc.dcm"  # not the gateway's
    for p in (orphan, mine, parent, stow):
        p.write_bytes(b"x")
    assert remove_orphans(tmp_path) == 1
    assert not orphan.exists() and mine.exists() and parent.exists() and stow.exists()
