"""WADO-RS frames: chosen frames of one instance, as stored or decoded to native little endian.

The caller says what it accepts as `Wanted` (media type, transfer syntax; "*" for any), best first;
`FrameService.frames` picks the first it can answer: stored frames as they are, big endian frames
swapped to little endian, or compressed frames decoded by pydicom's codec plugins.

Parsing the header is most of the work of a frame request, so each `FrameService` keeps the pixel
layouts it parsed (and, for encapsulated data, where every frame is) in a small LRU keyed by the
object's key and the version the catalog names (ETag, size, version id): another frame of the same
object is then one catalog read, one open and the reads of the frame itself. A replaced object has a
new ETag, so it is never read with an old layout; an object whose size is not the catalogued one
(replaced, its catalog row not yet updated) is parsed afresh and not cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import BinaryIO

from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pacs.catalog.records import InstanceRow
from pacs.codecs import SYNTAXES, TranscodeError, can_decode, syntax_for_media_type
from pacs.codecs.registry import NATIVE
from pacs.dicom.frames import (
    MEDIA_TYPES,
    FrameMap,
    FramesUnavailable,
    PixelLayout,
    frame_fragments,
    native_frames,
    read_fragments,
    read_layout,
)
from pacs.errors import PacsError
from pacs.services.derived import DerivedCopies
from pacs.services.retrieve import RetrieveService
from pacs.services.syntax import ANY, make_copy, why_not

OCTET_STREAM = "application/octet-stream"
_LITTLE_ENDIAN = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


class BadFrameList(PacsError):
    """A frame list that is not 1-based frame numbers of the instance."""

    http_status = 400


class FramesNotAcceptable(PacsError):
    """None of the accepted media types and transfer syntaxes can be produced."""

    http_status = 406


@dataclass(frozen=True, slots=True)
class Wanted:
    """One acceptable form: a part media type and transfer syntax, each "*" for any."""

    media_type: str = "*"
    transfer_syntax: str = "*"
    q: float = 1.0


@dataclass(frozen=True, slots=True)
class Frames:
    """The frames to send, and the media type and transfer syntax of every part."""

    media_type: str
    transfer_syntax: str
    #: The frames, read one by one as they are iterated (once).
    frames: Iterator[bytes]

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"


def parse_frame_list(text: str) -> list[int]:
    """'1,3,5' → [1, 3, 5]; BadFrameList names the first entry that is not a frame number ≥ 1 or
    that repeats an earlier one: a frame is sent once per request, so an answer is never larger than
    the instance's frames (`1,1,1,…` would otherwise multiply one frame into any size)."""
    numbers: list[int] = []
    seen: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise BadFrameList(f"frame {item[:20]!r} is not a frame number (1, 2, …)")
        n = int(item)
        if n in seen:
            raise BadFrameList(f"frame {n} is listed more than once: ask for each frame once")
        seen.add(n)
        numbers.append(n)
    return numbers


LayoutKey = tuple[str, str, int, str | None]


@dataclass(slots=True)
class _Located:
    """A parsed object: its pixel layout and, once needed, where its encapsulated frames are."""

    layout: PixelLayout
    frame_map: FrameMap | None = None


class LayoutCache:
    """A thread-safe LRU of parsed pixel layouts, keyed by object key and version."""

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[LayoutKey, _Located] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: LayoutKey) -> _Located | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: LayoutKey, located: _Located) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._items[key] = located
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)


class FrameService:
    def __init__(self, retrieve: RetrieveService, cache: LayoutCache | None = None) -> None:
        self.retrieve = retrieve
        self.layouts = cache if cache is not None else LayoutCache()
        self.derived = DerivedCopies(retrieve.store, retrieve.partition, retrieve.catalog)

    def frames(
        self, study: str, series: str, sop: str, numbers: list[int] | None, wanted: list[Wanted] | None = None
    ) -> Frames:
        """Frames `numbers` (1-based, each at most once) of an instance in the best form of `wanted`
        that can be made (None: as stored): see `_choose`. Raises NotFound, BadFrameList,
        FramesNotAcceptable, FramesUnavailable before anything is read; the first frame is read at
        once (its errors too), the others one by one as `Frames.frames` is iterated, which holds the
        object open till then; `numbers` None means every frame (Pixel Data bulk data). A form in
        another syntax than the stored one is read from the derived copy in that syntax, made
        (transcoded once, and kept) when missing."""
        (row,) = self.retrieve.instances(study, series, sop)
        if row.transfer_syntax_uid == DeflatedExplicitVRLittleEndian:  # no seeking in it: a native copy
            copy = _Form("derived", ExplicitVRLittleEndian, self._find(row, ExplicitVRLittleEndian))
            row, fp = self._derived(row, copy)
        else:
            fp = self.retrieve.store.open(row.key)
        try:
            located = self._locate(row, fp)
            if numbers is None:
                numbers = list(range(1, located.layout.number_of_frames + 1))
            _check_numbers(located.layout, numbers)
            form = _choose(located.layout, wanted or [Wanted()], lambda ts: self._find(row, ts))
            if form.kind == "derived":
                fp.close()
                row, fp = self._derived(row, form)
                located = self._locate(row, fp)
                _check_numbers(located.layout, numbers)
                form = _Form("native" if not located.layout.encapsulated else "stored",
                             form.syntax)
            media_type, ts, read = self._reader(located, fp, numbers, form)
            first = read(numbers[0])
        except BaseException:
            fp.close()
            raise
        return Frames(media_type, ts, _stream(fp, first, numbers[1:], read))

    def _find(self, row: InstanceRow, syntax: str) -> str | None:
        return self.derived.find(row.study_uid, row.series_uid, row.sop_uid, syntax, source_etag=row.etag)

    def _derived(self, row: InstanceRow, form: _Form) -> tuple[InstanceRow, BinaryIO]:
        """The catalog-like row of the derived copy of `row` in `form.syntax` (made when missing),
        and the copy open for reading."""
        key = form.key
        if key is None:
            try:
                key = make_copy(self.derived, row.study_uid, row.series_uid, row.sop_uid, form.syntax)
            except TranscodeError as exc:
                raise FramesNotAcceptable(f"cannot make the frames in {form.syntax}: {exc}") from exc
        info = self.retrieve.store.head(key)
        if info is None:
            raise FramesUnavailable(f"the derived copy {key} vanished; ask again")
        copy = replace(row, key=key, etag=info.etag, size=info.size, version_id=info.version_id,
                       transfer_syntax_uid=form.syntax)
        return copy, self.retrieve.store.open(key)

    def _reader(
        self, located: _Located, fp: BinaryIO, numbers: list[int], form: _Form
    ) -> tuple[str, str, Callable[[int], bytes]]:
        """(part media type, transfer syntax, a reader of one frame) for the frames asked."""
        layout = located.layout
        stored = layout.transfer_syntax_uid
        if form.kind == "native":
            need = -(-max(numbers) * layout.frame_bits // 8)  # bytes up to the end of the last frame
            if layout.value_length is not None and need > layout.value_length:  # known before streaming
                raise FramesUnavailable(f"the Pixel Data ({layout.value_length} bytes) is shorter than "
                                        f"its frames need ({need} bytes)")
            ts = stored if stored in _LITTLE_ENDIAN else ExplicitVRLittleEndian
            return OCTET_STREAM, ts, lambda n: native_frames(fp, layout, [n])[0]
        if stored not in MEDIA_TYPES or MEDIA_TYPES[stored].startswith("video/"):
            raise FramesUnavailable(
                f"frames of an instance stored as {stored} are not addressable; retrieve the instance"
            )
        if located.frame_map is None:
            located.frame_map = frame_fragments(fp, layout)
        frame_map = located.frame_map
        if max(numbers) > len(frame_map):
            raise FramesUnavailable(
                f"frame {max(numbers)} is not in the Pixel Data, which holds {len(frame_map)}")
        if form.kind == "decode":
            return OCTET_STREAM, ExplicitVRLittleEndian, \
                lambda n: _decode(layout, read_fragments(fp, frame_map, [n])[0])
        return MEDIA_TYPES[stored], stored, lambda n: read_fragments(fp, frame_map, [n])[0]

    def _locate(self, row: InstanceRow, fp: BinaryIO) -> _Located:
        """The layout of the object open in `fp`: cached for this version when the stored object is
        the size the catalog says, else parsed afresh (and not kept)."""
        actual_size = fp.seek(0, 2)
        fp.seek(0)
        if actual_size != row.size:
            return _Located(read_layout(fp))
        key: LayoutKey = (row.key, row.etag, row.size, row.version_id)
        located = self.layouts.get(key)
        if located is None:
            located = _Located(read_layout(fp))
            self.layouts.put(key, located)
        return located


def _stream(fp: BinaryIO, first: bytes, rest: list[int], read: Callable[[int], bytes]) -> Iterator[bytes]:
    """The first frame, then each of `rest` as it is read; the object is closed at the end."""
    with fp:
        yield first
        for n in rest:
            yield read(n)


@dataclass(frozen=True, slots=True)
class _Form:
    """How to answer: 'native' (stored native frames), 'stored' (encapsulated, as is), 'decode'
    (stored compressed frames decoded one by one to native little endian) or 'derived' (frames of
    the derived copy in `syntax`, at `key` when it exists)."""

    kind: str
    syntax: str
    key: str | None = None


def _check_numbers(layout: PixelLayout, numbers: list[int]) -> None:
    for n in numbers:
        if n > layout.number_of_frames:
            raise BadFrameList(
                f"frame {n} is out of range: the instance has {layout.number_of_frames} frame(s)"
            )


def _target(w: Wanted, stored: str, stored_media: str) -> str | None:
    """The transfer syntax a form asks for (ANY: as stored), None when the pair is not valid."""
    if w.transfer_syntax == "*":
        if w.media_type in ("*", stored_media):
            return ANY
        return syntax_for_media_type(w.media_type)
    if w.media_type == "*":
        return w.transfer_syntax
    return syntax_for_media_type(w.media_type, w.transfer_syntax)


def _choose(layout: PixelLayout, wanted: list[Wanted], find: Callable[[str], str | None]) -> _Form:
    """The form of the highest q that can be made; at equal q what costs nothing (the stored frames),
    then an existing derived copy, then a per-frame decode to native, then a lossless transcode,
    then a lossy one. `find` (a derived copy's key) is asked only for the forms that need it."""
    stored = layout.transfer_syntax_uid
    media = MEDIA_TYPES.get(stored, OCTET_STREAM)
    native_stored = not layout.encapsulated
    options: list[tuple[float, int, int, _Form]] = []  # (-q, cost, order, form)
    reasons: list[str] = []
    for order, w in enumerate(wanted):
        # octet-stream with `transfer-syntax=*` is as stored: what OHIF asks, decoding by each part's type
        target = ANY if w.media_type == OCTET_STREAM and w.transfer_syntax == "*" else \
            _target(w, stored, media)
        if target is None:
            reasons.append(f"{w.media_type} in {w.transfer_syntax} is not a media type and transfer "
                           "syntax pair of PS3.18 Table 8.7.3-5")
            continue
        if target in (ANY, stored) or (native_stored and target in _LITTLE_ENDIAN):
            options.append((-w.q, 0, order, _Form("native" if native_stored else "stored", stored)))
            continue
        if target in _LITTLE_ENDIAN and can_decode(stored):
            options.append((-w.q, 2, order, _Form("decode", target)))
            continue
        reason = why_not(stored, target, has_pixels=True)
        if reason is None and target in NATIVE:
            reason = f"frames are not sent in {target}"
        if reason is not None:
            reasons.append(reason)
            continue
        lossy = not SYNTAXES[target].lossless
        options.append((-w.q, 3 if lossy else 2, order, _Form("derived", target)))
    if not options:
        asked = ", ".join(f"{w.media_type} ({w.transfer_syntax})" for w in wanted)
        why = "; ".join(dict.fromkeys(reasons))
        raise FramesNotAcceptable(
            f"cannot send {asked}: the frames are stored as {media} ({stored})" + (f": {why}" if why else ""))
    options.sort(key=lambda o: (o[0], o[1], o[2]))
    best_q = options[0][0]
    top = [o for o in options if o[0] == best_q]
    if top[0][1] == 0:
        return top[0][3]
    for *_, form in sorted(top, key=lambda o: o[2]):  # an existing derived copy, in the client's order
        key = find(form.syntax) if form.kind in ("derived", "decode") else None
        if key is not None:
            return _Form("derived", form.syntax, key)
    return top[0][3]


def _decodable(ts: str) -> bool:
    try:
        return get_decoder(ts).is_available
    except (NotImplementedError, ValueError):
        return False


def _decode(layout: PixelLayout, frame: bytes) -> bytes:
    """One compressed frame decoded to native little endian bytes (colour as the codec returns it)."""
    ds = layout.header
    try:
        buffer, _ = get_decoder(layout.transfer_syntax_uid).as_buffer(
            encapsulate([frame]),
            index=0,
            rows=layout.rows,
            columns=layout.columns,
            samples_per_pixel=layout.samples_per_pixel,
            bits_allocated=layout.bits_allocated,
            bits_stored=int(ds.get("BitsStored", layout.bits_allocated)),
            pixel_representation=int(ds.get("PixelRepresentation", 0)),
            photometric_interpretation=str(ds.get("PhotometricInterpretation", "MONOCHROME2")),
            planar_configuration=int(ds.get("PlanarConfiguration", 0)),
            number_of_frames=1,
            pixel_keyword="PixelData",
        )
    except Exception as exc:  # codec plugins raise many kinds
        raise FramesUnavailable(f"cannot decode the frame: {exc}") from exc
    return bytes(buffer)
