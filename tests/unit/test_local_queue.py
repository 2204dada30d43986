"""The embedded durable queue: survives a restart, redelivers, dead-letters, redrives."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

from pacs.events.local import LocalQueue
from pacs.events.model import ObjectEvent


def ev(n: int) -> ObjectEvent:
    return ObjectEvent("created", f"default/studies/1/series/2/instances/{n}.dcm", size=n, etag=str(n),
                       event_time="2026-01-02T03:04:05.678Z")


def test_published_events_survive_reopening(tmp_path: Path) -> None:
    q = LocalQueue(tmp_path / "q.db")
    for n in range(3):
        q.publish(ev(n))
    q.close()
    q2 = LocalQueue(tmp_path / "q.db")
    assert [m.event for m in q2.receive(10)] == [ev(0), ev(1), ev(2)]


def _publish_then_die(path: str) -> None:
    q = LocalQueue(path)
    q.publish(ev(42))
    os.kill(os.getpid(), signal.SIGKILL)  # no clean close, no atexit


def test_event_survives_a_killed_publisher(tmp_path: Path) -> None:
    proc = multiprocessing.get_context("fork").Process(target=_publish_then_die, args=(str(tmp_path / "q.db"),))
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    assert [m.event for m in LocalQueue(tmp_path / "q.db").receive(10)] == [ev(42)]


def test_claimed_messages_are_invisible_until_timeout(tmp_path: Path) -> None:
    q = LocalQueue(tmp_path / "q.db", visibility_timeout=2.0)  # wide enough for a busy machine
    q.publish(ev(1))
    (m,) = q.receive(10)
    claimed = time.monotonic()
    assert q.receive(10) == []  # claimed by a consumer that may still be working
    assert time.monotonic() - claimed < 2.0, "the check above ran after the timeout: the machine stalled"
    deadline = claimed + 60
    while not (got := q.receive(10)):  # that consumer died: delivered again once the timeout passed
        assert time.monotonic() < deadline, "not delivered again within 60 s"
        time.sleep(0.05)
    assert time.monotonic() - claimed >= 2.0
    (again,) = got
    assert again.event == m.event and again.attempts == 2
    q.ack(again.id)
    assert q.depth() == 0


def test_failures_dead_letter_and_redrive(tmp_path: Path) -> None:
    q = LocalQueue(tmp_path / "q.db", max_attempts=2)
    q.publish(ev(1))
    for _ in range(2):
        (m,) = q.receive(1)
        q.fail(m, "boom", retry_after=0)
    assert q.receive(1) == [] and q.depth() == 0
    (dead,) = q.dead_letters()
    assert dead.event == ev(1) and dead.error == "boom" and dead.attempts == 2
    assert q.redrive() == 1
    assert q.dead_letters() == []
    assert [m.event for m in q.receive(1)] == [ev(1)]


def test_receive_waits_for_a_message(tmp_path: Path) -> None:
    q = LocalQueue(tmp_path / "q.db")
    start = time.monotonic()
    assert q.receive(1, wait=0.2) == []
    assert time.monotonic() - start >= 0.2
