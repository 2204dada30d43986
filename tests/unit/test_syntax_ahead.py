"""Copies made ahead of the part being streamed (pacs.services.syntax.Ahead), and one copy made once when
several requests ask for it at once (make_copy's per-copy lock)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pacs.codecs import TranscodeError, threads
from pacs.services import syntax
from pacs.services.syntax import Ahead, Choice, make_copy


def _parts(n: int) -> list[tuple[Any, Choice]]:
    kinds = ["transcode", "stored", "transcode", "derived", "transcode", "transcode", "transcode"]
    return [(f"row{i}", Choice("1.2", kinds[i % len(kinds)], f"copy{i}" if kinds[i % len(kinds)] == "derived"
                               else None)) for i in range(n)]


def test_keys_come_in_order_failures_where_they_belong_look_ahead_bounded() -> None:
    made: list[str] = []
    lock = threading.Lock()

    def make(row: str, choice: Choice) -> str:
        if choice.source == "stored":
            return f"{row}-stored"
        if choice.key is not None:
            return choice.key
        with lock:
            made.append(row)
        if row == "row4":
            raise TranscodeError("no codec")
        return f"{row}-made"

    parts = _parts(20)
    ahead = Ahead(make, parts, depth=3)
    for index, (row, choice) in enumerate(parts):
        if row == "row4":
            with pytest.raises(TranscodeError, match="no codec"):
                ahead.key(index)
        else:
            expected = f"{row}-stored" if choice.source == "stored" else choice.key or f"{row}-made"
            assert ahead.key(index) == expected
        assert len(ahead._futures) <= 3  # copies in flight, at most the look-ahead
    ahead.close()
    transcoded = [r for r, c in parts if c.source == "transcode"]
    assert sorted(made) == sorted(transcoded)  # each copy made once


def test_parts_left_out_before_the_answer_and_close_cancels_the_rest() -> None:
    release = threading.Event()

    def make(row: str, choice: Choice) -> str:
        release.wait(30)
        return row

    parts = _parts(40)
    ahead = Ahead(make, parts, depth=2 * threads.WORKERS)
    release.set()
    assert ahead.key(2) == "row2"  # parts 0 and 1 left out (as wado does when they fail)
    ahead.close()
    assert not ahead._futures


class _Copies:
    partition = "default"

    def __init__(self) -> None:
        self.made = 0
        self.entered, self.release = threading.Event(), threading.Event()
        self.exists = False

    def make(self, study: str, series: str, sop: str, ts: str) -> str:
        if self.exists:
            return "key"
        self.entered.set()
        self.release.wait(30)
        self.made += 1
        self.exists = True
        return "key"


def test_a_copy_asked_twice_at_once_is_made_once() -> None:
    copies = _Copies()
    results: list[str] = []
    first = threading.Thread(target=lambda: results.append(make_copy(copies, "1", "2", "3", "1.2")))  # type: ignore[arg-type]
    first.start()
    copies.entered.wait(30)
    second = threading.Thread(target=lambda: results.append(make_copy(copies, "1", "2", "3", "1.2")))  # type: ignore[arg-type]
    second.start()
    key = ("default", "1", "2", "3", "1.2")
    while syntax._MAKING.get(key, [None, 0])[1] < 2:  # the second request waits on the first one's copy
        threading.Event().wait(0.01)
    copies.release.set()
    first.join(30)
    second.join(30)
    assert results == ["key", "key"] and copies.made == 1
    assert key not in syntax._MAKING
