"""Instances in the transfer syntax a client asked for: as stored, from a derived copy, or transcoded
once (through the codec registry) and cached as a derived copy (`pacs.services.derived`).

`choose` ranks what the client accepts (q-value first; at equal q what costs nothing: the stored
syntax, then an existing derived copy, then a lossless transcode, then a lossy one) and returns the
first that can be produced, or raises `Unproducible` with the reason. `SyntaxService` plans a
retrieve (one choice per instance; instances that cannot be produced are skipped with their
reason) and streams each instance from the store, one at a time, never a whole series in memory;
`Ahead` makes the copies a series needs a few instances ahead of the one being sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian

from pacs.catalog.records import InstanceRow
from pacs.codecs import SYNTAXES, can_decode, can_encode
from pacs.codecs.registry import NATIVE
from pacs.codecs.threads import AHEAD, LazyPool
from pacs.errors import PacsError
from pacs.services.derived import DerivedCopies, derived_key
from pacs.services.retrieve import RetrieveService

#: Any transfer syntax (`transfer-syntax=*`): as stored.
ANY = "*"
#: Copies being made, by key: a request asking for a copy another is making waits for it instead of
#: making it twice (the codecs themselves run side by side; pacs.codecs.threads locks the one that cannot).
_MAKING: dict[tuple[str, ...], list[Any]] = {}  # key -> [lock, users]
_MAKING_GUARD = threading.Lock()
#: Threads making the copies of a series or study ahead of the part being streamed, shared by the
#: requests of the process (one per core: the encoders release the GIL), and how far ahead each request
#: goes (copies made but not yet sent are in the store, not in memory; in flight at most this many).
#: The copies of a series' next instances, made while the current one is streamed.
_pool = LazyPool("copies")
#: The catalog's Rows attribute: an instance with it has pixel data.
ROWS = "00280010"


class Unproducible(PacsError):
    """No accepted transfer syntax can be produced (HTTP 406 with the reason)."""

    http_status = 406


@dataclass(frozen=True, slots=True)
class Acceptable:
    """One acceptable transfer syntax (a UID or ANY) with its q-value. `default` marks the syntax a
    media type implies without a `transfer-syntax=` parameter (Explicit VR LE for application/dicom):
    PS3.18 8.7.3.4 lets lossy pixels go as stored (here: a syntax that may be lossy, e.g. JPEG 2000
    .91, JPEG-LS near-lossless, HTJ2K .203, JPEG baseline), and pixels no codec here decodes too."""

    syntax: str
    q: float = 1.0
    default: bool = False


@dataclass(frozen=True, slots=True)
class Choice:
    """How to send one object: in `syntax`, from the stored object, an existing derived copy (`key`),
    or a copy to make."""

    syntax: str
    source: str  # "stored", "derived" or "transcode"
    key: str | None = None


def _lossy_only(syntax: str) -> bool:
    info = SYNTAXES.get(syntax)
    return info is not None and not info.lossless


def _maybe_lossy(syntax: str) -> bool:
    """A syntax whose pixels may have been compressed lossy (the catalog does not say whether they were)."""
    info = SYNTAXES.get(syntax)
    return info is not None and info.lossy


def why_not(stored: str, target: str, has_pixels: bool) -> str | None:
    """None when an object stored in `stored` can be produced in `target`, else the reason."""
    if target == stored:
        return None
    if target not in SYNTAXES:
        return f"the transfer syntax {target} is not one this server knows"
    if not can_decode(stored):
        return f"no codec here decodes {_name(stored)}, the syntax the instance is stored in"
    if not can_encode(target):
        return f"no codec here encodes {_name(target)}"
    if target not in NATIVE and not has_pixels:
        return f"{_name(target)} needs pixel data and the instance has none"
    return None


def _name(syntax: str) -> str:
    info = SYNTAXES.get(syntax)
    return f"{info.name} ({syntax})" if info else syntax


def choose(
    stored: str,
    accepted: Sequence[Acceptable],
    *,
    has_pixels: bool = True,
    find: Callable[[str], str | None] = lambda syntax: None,
) -> Choice:
    """The syntax to send an object stored in `stored` in. Among the producible syntaxes of the
    highest q: the stored one, else one with a derived copy (`find` gives its key; asked only here),
    else lossless before lossy, in the client's order. Raises Unproducible with every reason."""
    options: list[tuple[float, int, int, str]] = []  # (-q, cost, order, syntax)
    reasons: list[str] = []
    for order, a in enumerate(accepted):
        target = a.syntax
        if target == ANY or (a.default and (_maybe_lossy(stored) or not can_decode(stored))):
            target = stored
        reason = why_not(stored, target, has_pixels)
        if reason is not None:
            reasons.append(reason)
            continue
        cost = 0 if target == stored else 3 if _lossy_only(target) else 2
        options.append((-a.q, cost, order, target))
    if not options:
        raise Unproducible("; ".join(dict.fromkeys(reasons)) or "no transfer syntax is acceptable")
    options.sort()
    best_q = options[0][0]
    top = [o for o in options if o[0] == best_q]
    if top[0][1] == 0:
        return Choice(top[0][3], "stored")
    for _, _, _, target in sorted(top, key=lambda o: o[2]):
        key = find(target)
        if key is not None:
            return Choice(target, "derived", key)
    return Choice(top[0][3], "transcode")


@dataclass(slots=True)
class Plan:
    """The instances to send, each with its choice, and those skipped with the reason."""

    parts: list[tuple[InstanceRow, Choice]] = field(default_factory=list)
    skipped: list[tuple[InstanceRow, str]] = field(default_factory=list)

    @property
    def as_stored(self) -> bool:
        return all(c.source == "stored" for _, c in self.parts)


class SyntaxService:
    """Plan and stream a retrieve in the syntaxes a client accepts."""

    def __init__(self, retrieve: RetrieveService) -> None:
        self.retrieve = retrieve
        self.derived = DerivedCopies(retrieve.store, retrieve.partition, retrieve.catalog)

    def find(self, row: InstanceRow, syntax: str) -> str | None:
        """The key of an existing derived copy of `row` in `syntax`, or None."""
        return self.derived.find(row.study_uid, row.series_uid, row.sop_uid, syntax, source_etag=row.etag)

    def plan(self, rows: list[InstanceRow], accepted: Sequence[Acceptable] | None) -> Plan:
        """One choice per instance (None accepted: all as stored). Raises Unproducible when no
        instance can be sent; the reasons of the others are in `Plan.skipped`. For several instances
        the existing copies are listed once per series, not looked up one by one."""
        plan = Plan()
        if accepted is None:
            plan.parts = [(r, Choice(r.transfer_syntax_uid, "stored")) for r in rows]
            return plan
        listed = self._listed(rows) if len(rows) > 1 else None
        for row in rows:
            find = partial(self.find, row) if listed is None else partial(self._in, listed, row)
            try:
                choice = choose(row.transfer_syntax_uid, accepted, has_pixels=ROWS in row.attrs, find=find)
            except Unproducible as exc:
                plan.skipped.append((row, exc.reason))
                continue
            plan.parts.append((row, choice))
        if not plan.parts:
            reasons = "; ".join(dict.fromkeys(reason for _, reason in plan.skipped))
            raise Unproducible(f"cannot send the instance(s) in an accepted transfer syntax: {reasons}")
        return plan

    def _listed(self, rows: list[InstanceRow]) -> set[str]:
        """The keys of every derived object of the series of `rows` (one listing per series)."""
        series = dict.fromkeys((r.study_uid, r.series_uid) for r in rows)
        keys: set[str] = set()
        for study, uid in series:
            prefix = derived_key(self.retrieve.partition, study, uid, "1", "1").split("/instances/")[0] + "/"
            keys.update(info.key for info in self.retrieve.store.list(prefix))
        return keys

    def _in(self, listed: set[str], row: InstanceRow, syntax: str) -> str | None:
        key = derived_key(self.retrieve.partition, row.study_uid, row.series_uid, row.sop_uid, syntax)
        return key if key in listed else None

    def key(self, row: InstanceRow, choice: Choice) -> str:
        """The object key to send for `row`: the stored object, or the derived copy (made now when
        missing: TranscodeError when the codec fails)."""
        if choice.source == "stored":
            return row.key
        if choice.key is not None:
            return choice.key
        return make_copy(self.derived, row.study_uid, row.series_uid, row.sop_uid, choice.syntax)

    def chunks(self, row: InstanceRow, choice: Choice, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The bytes of `row` in its chosen syntax, piece by piece (a transcode happens, and is
        cached, when the first piece is asked for)."""
        if choice.source == "stored":
            yield from self.retrieve.chunks(row, chunk_size)
            return
        yield from self.retrieve.key_chunks(self.key(row, choice), chunk_size)

    def ahead(self, parts: Sequence[tuple[InstanceRow, Choice]]) -> Ahead:
        """The keys of `parts` in order, the copies to make made a few parts ahead (`Ahead`)."""
        return Ahead(self.key, parts)


class Ahead:
    """The objects to send for `parts`, in order: `key(i)` gives part i's key, the copies of the next
    parts (at most AHEAD) being made meanwhile by the shared pool. A part's TranscodeError is raised
    by its `key(i)`, where it would have been raised had it been made then; `close()` cancels the
    copies not started (a client gone)."""

    def __init__(self, make: Callable[[InstanceRow, Choice], str],
                 parts: Sequence[tuple[InstanceRow, Choice]], depth: int | None = None) -> None:
        self._make, self._parts = make, list(parts)
        self._depth = AHEAD if depth is None else depth
        self._futures: dict[int, Future[str]] = {}
        self._next = 0  # the next part to look at for a copy to start

    def key(self, index: int) -> str:
        """The key of part `index` (waits for its copy; TranscodeError, NotFound when it fails)."""
        self._next = max(self._next, index)
        self._fill()
        future = self._futures.pop(index, None)
        self._fill()
        if future is None:
            return self._make(*self._parts[index])
        return future.result()

    def _fill(self) -> None:
        while self._next < len(self._parts) and len(self._futures) < self._depth:
            row, choice = self._parts[self._next]
            if choice.source == "transcode" and self._depth > 0:
                self._futures[self._next] = _pool().submit(self._make, row, choice)
            self._next += 1

    def close(self) -> None:
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()


@contextmanager
def _one_at_a_time(key: tuple[str, ...]) -> Iterator[None]:
    """Hold the lock of one copy (made once even when several requests ask for it at once)."""
    with _MAKING_GUARD:
        entry = _MAKING.setdefault(key, [threading.Lock(), 0])
        entry[1] += 1
    try:
        with entry[0]:
            yield
    finally:
        with _MAKING_GUARD:
            entry[1] -= 1
            if not entry[1]:
                del _MAKING[key]


def make_copy(copies: DerivedCopies, study: str, series: str, sop: str, syntax: str) -> str:
    """The key of the derived copy in `syntax`, made when missing (a copy another request is making
    is waited for, then found, not made again; other copies are made side by side). Raises
    TranscodeError, NotFound."""
    with _one_at_a_time((copies.partition, study, series, sop, syntax)):
        return copies.make(study, series, sop, syntax)


def default_acceptable(q: float = 1.0) -> Acceptable:
    """application/dicom without a transfer-syntax parameter (PS3.18 8.7.3.4)."""
    return Acceptable(ExplicitVRLittleEndian, q, default=True)

