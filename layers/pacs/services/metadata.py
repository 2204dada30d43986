"""WADO-RS metadata (PS3.18 10.4.1.1.2) precomputed at ingest, and bulk data located in the originals.

Derived objects (DESIGN.md storage layout):

    {partition}/derived/{study}/series/{series}/instances/{sop}.json   one instance's DICOM JSON
    {partition}/derived/{study}/series/{series}/metadata.json.gz       the series' array, gzip'd

The indexer writes the instance JSON and drops the series object whenever an instance changes; the
series object is rebuilt from the instance JSONs listed under the series (at the end of an indexer
batch, or on the first read), so serving a series' metadata is one object-store read.

BulkDataURIs are stored relative to the DICOMweb root (``studies/{s}/series/{se}/instances/{i}/
bulkdata/{path}``); `absolutize` prefixes the base URL the client used with a byte-level replace.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import orjson
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from pacs.catalog.port import Catalog
from pacs.dicom.json_model import DicomJson, to_dicom_json
from pacs.dicom.part10 import read_header
from pacs.dicom.uids import check_uid
from pacs.errors import NotFound
from pacs.storage.keys import InstanceKey, check_partition, parse_instance_key
from pacs.storage.port import BlobStore

BULK_DATA_THRESHOLD = 1024
METADATA_JSON = "application/dicom+json"
_URI_KEY = b'"BulkDataURI":"'
_RELATIVE = b"studies/"
_AVAILABLE_TRANSFER_SYNTAX = "00083002"
_FETCH_THREADS = 16


# --- keys ----------------------------------------------------------------------------------------


def series_prefix(partition: str, study_uid: str, series_uid: str) -> str:
    """The derived prefix of a series (UIDs validated)."""
    return (
        f"{check_partition(partition)}/derived/{check_uid(study_uid, 'StudyInstanceUID')}"
        f"/series/{check_uid(series_uid, 'SeriesInstanceUID')}/"
    )


def instance_json_key(partition: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    prefix = series_prefix(partition, study_uid, series_uid)
    return f"{prefix}instances/{check_uid(sop_uid, 'SOPInstanceUID')}.json"


def series_metadata_key(partition: str, study_uid: str, series_uid: str) -> str:
    return series_prefix(partition, study_uid, series_uid) + "metadata.json.gz"


# --- the JSON ------------------------------------------------------------------------------------


def bulk_data_path(study_uid: str, series_uid: str, sop_uid: str, path: str) -> str:
    """The stored (relative to the DICOMweb root) BulkDataURI of an attribute path."""
    return f"studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulkdata/{path}"


def absolutize(data: bytes, base_url: str) -> bytes:
    """Make the stored relative BulkDataURIs absolute under `base_url` (ends with '/').

    Safe as a byte replace: in orjson output an unescaped `"BulkDataURI":"` is always a key."""
    base = orjson.dumps(base_url)[1:-1]
    return data.replace(_URI_KEY + _RELATIVE, _URI_KEY + base + _RELATIVE)


@dataclass(frozen=True, slots=True)
class PixelElement:
    """The (Float/Double Float) Pixel Data element a header read stopped at."""

    tag: int
    vr: str


def instance_json(ref: InstanceKey, ds: Dataset, pixel: PixelElement | None) -> bytes:
    """The stored metadata of one instance: `ds` (read up to its pixel data) in DICOM JSON, with
    BulkDataURIs for values over 1024 bytes and for the pixel data, and AvailableTransferSyntaxUID."""
    return orjson.dumps(instance_document(ref, ds, pixel), option=orjson.OPT_SORT_KEYS)


def instance_document(ref: InstanceKey, ds: Dataset, pixel: PixelElement | None) -> DicomJson:
    """What `instance_json` stores, before serialisation (the indexer also reads its levels from it)."""

    def uri(path: str) -> str:
        return bulk_data_path(ref.study_uid, ref.series_uid, ref.sop_uid, path)

    obj = to_dicom_json(ds, bulk_data_threshold=BULK_DATA_THRESHOLD, bulk_data_uri=uri)
    if pixel is not None:
        key = f"{pixel.tag:08X}"
        obj[key] = {"vr": pixel.vr, "BulkDataURI": uri(key)}
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts:
        obj[_AVAILABLE_TRANSFER_SYNTAX] = {"vr": "UI", "Value": [str(ts)]}
    return obj


def _pixel_vr(tag: int, vr: bytes | None, length: int, ds: Dataset) -> str:
    if vr is not None:
        return vr.decode("ascii")
    if tag == 0x7FE00008:
        return "OF"
    if tag == 0x7FE00009:
        return "OD"
    if length == _UNDEFINED:
        return "OB"
    bits = ds.get("BitsAllocated")
    return "OW" if isinstance(bits, int) and bits > 8 else "OB"


def pixel_element_at(fp: BinaryIO, ds: Dataset) -> PixelElement | None:
    """The pixel data element at `fp`'s position, where `read_header` stopped (not deflated)."""
    ts = str(ds.file_meta.TransferSyntaxUID)
    try:
        tag, vr, length, _ = _header(fp, fp.tell(), ts != ExplicitVRBigEndian, ts == ImplicitVRLittleEndian)
    except (struct.error, ValueError):
        return None
    if tag not in _PIXEL_TAGS:
        return None
    return PixelElement(tag, _pixel_vr(tag, vr, length, ds))


def read_instance(store: BlobStore, key: str) -> tuple[Dataset, PixelElement | None]:
    """The header of a stored original and its pixel data element, from one header read."""
    with store.open(key) as fp:
        ds = read_header(fp)
        if str(ds.file_meta.TransferSyntaxUID) != DeflatedExplicitVRLittleEndian:
            return ds, pixel_element_at(fp, ds)
    with store.open(key) as fp:
        walker = _Walker.of(fp)
    for tag in sorted(_PIXEL_TAGS):
        try:
            found = walker.find([tag])
        except NotFound:
            continue
        return ds, PixelElement(tag, _pixel_vr(tag, found.vr, found.undefined, ds))
    return ds, None


def _sort_key(doc: bytes) -> tuple[bool, float, str]:
    obj = orjson.loads(doc)
    number = (obj.get("00200013", {}).get("Value") or [None])[0]
    uid = (obj.get("00080018", {}).get("Value") or [""])[0]
    return number is None, float(number) if number is not None else 0.0, str(uid)


def series_array(docs: Iterable[bytes]) -> bytes:
    """The JSON array of instance documents, by InstanceNumber then SOP Instance UID."""
    ordered: list[bytes] = sorted(docs, key=_sort_key)  # type: ignore[arg-type]
    return b"[" + b",".join(ordered) + b"]"


def strong_etag(stored: bytes) -> str:
    """A strong ETag of a stored object's bytes (the same on every server reading them)."""
    return '"' + hashlib.blake2b(stored, digest_size=16).hexdigest() + '"'


# --- the service ---------------------------------------------------------------------------------


class MetadataService:
    """Writes the derived metadata at index time and reads it (building what is missing) to serve."""

    def __init__(self, store: BlobStore, catalog: Catalog, partition: str = "default") -> None:
        self.store = store
        self.catalog = catalog
        self.partition = partition

    # writes (indexer)

    def write_instance(self, ref: InstanceKey, ds: Dataset, pixel: PixelElement | None) -> None:
        self.write_document(ref, instance_document(ref, ds, pixel))

    def write_document(self, ref: InstanceKey, doc: DicomJson) -> None:
        """Store an `instance_document` as the instance's metadata JSON."""
        key = instance_json_key(ref.partition, ref.study_uid, ref.series_uid, ref.sop_uid)
        self.store.put(key, orjson.dumps(doc, option=orjson.OPT_SORT_KEYS), content_type=METADATA_JSON)

    def remove_instance(self, ref: InstanceKey) -> None:
        self.store.delete(instance_json_key(ref.partition, ref.study_uid, ref.series_uid, ref.sop_uid))

    def invalidate_series(self, partition: str, study_uid: str, series_uid: str) -> None:
        """Drop the series object; the next rebuild or read makes it again."""
        self.store.delete(series_metadata_key(partition, study_uid, series_uid))

    def rebuild_series(self, partition: str, study_uid: str, series_uid: str) -> bytes | None:
        """Rebuild the series object from the instance JSONs listed under it (None when there are
        none: the object is removed). A listing that changed meanwhile (a concurrent writer) makes
        it try again, so the last writer always stores what the store holds."""
        prefix = series_prefix(partition, study_uid, series_uid) + "instances/"
        key = series_metadata_key(partition, study_uid, series_uid)
        listed = self._listing(prefix)
        body: bytes | None = None
        for _ in range(5):
            docs = self._fetch([k for k, _ in listed])
            if docs:
                body = gzip.compress(series_array(docs), compresslevel=6, mtime=0)
                self.store.put(key, body, content_type=METADATA_JSON)
            else:
                body = None
                self.store.delete(key)
            again = self._listing(prefix)
            if again == listed:
                break
            listed = again
        return body

    def _listing(self, prefix: str) -> list[tuple[str, str]]:
        return sorted((b.key, b.etag) for b in self.store.list(prefix) if b.key.endswith(".json"))

    def _fetch(self, keys: list[str]) -> list[bytes]:
        def get(key: str) -> bytes | None:
            try:
                return self.store.get(key)
            except NotFound:
                return None

        if len(keys) <= 4 or getattr(self.store, "local", False):  # threads only hide network latency
            found = [get(k) for k in keys]
        else:
            with ThreadPoolExecutor(min(_FETCH_THREADS, len(keys))) as pool:
                found = list(pool.map(get, keys))
        return [d for d in found if d is not None]

    # reads (DICOMweb)

    def series_metadata(self, study_uid: str, series_uid: str) -> bytes:
        """The stored gzip'd array of a series, built (and stored) when missing; NotFound."""
        try:
            return self.store.get(series_metadata_key(self.partition, study_uid, series_uid))
        except NotFound:
            pass
        self._backfill(study_uid, series_uid)
        body = self.rebuild_series(self.partition, study_uid, series_uid)
        if body is None:
            raise NotFound("no such series")
        return body

    def study_series(self, study_uid: str) -> list[str]:
        rows = self.catalog.query_series(self.partition, study_uid, ()).rows
        if not rows:
            raise NotFound("no such study")
        return [r.series_uid for r in rows]

    def instance_metadata(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """One instance's JSON object, built from the original (and stored) when missing; NotFound."""
        key = instance_json_key(self.partition, study_uid, series_uid, sop_uid)
        try:
            return self.store.get(key)
        except NotFound:
            pass
        row = self.catalog.get_instance(self.partition, study_uid, series_uid, sop_uid)
        if row is None:
            raise NotFound("no such instance")
        return self._build_instance(row.key)

    def _build_instance(self, original_key: str) -> bytes:
        ref = _ref_of(original_key)
        ds, pixel = read_instance(self.store, original_key)
        doc = instance_json(ref, ds, pixel)
        key = instance_json_key(ref.partition, ref.study_uid, ref.series_uid, ref.sop_uid)
        self.store.put(key, doc, content_type=METADATA_JSON)
        return doc

    def _backfill(self, study_uid: str, series_uid: str) -> None:
        """Write the instance JSONs missing for catalogued instances (data indexed before them)."""
        prefix = series_prefix(self.partition, study_uid, series_uid) + "instances/"
        have = {k for k, _ in self._listing(prefix)}
        rows = self.catalog.query_instances(self.partition, study_uid, series_uid, ()).rows
        for row in rows:
            if instance_json_key(self.partition, study_uid, series_uid, row.sop_uid) not in have:
                try:
                    self._build_instance(row.key)
                except NotFound:
                    continue  # removed meanwhile

    def locate_bulk(self, study_uid: str, series_uid: str, sop_uid: str, path: str) -> BulkValue:
        """Where the value of the attribute at `path` lies in the stored original; NotFound."""
        parts = parse_path(path)
        row = self.catalog.get_instance(self.partition, study_uid, series_uid, sop_uid)
        if row is None:
            raise NotFound("no such instance")
        try:
            with self.store.open(row.key) as fp:
                return _Walker.of(fp).find(parts).at(row.key)
        except (struct.error, ValueError, EOFError) as exc:
            raise NotFound(f"attribute {path} not found: {exc}") from None

    def bulk_chunks(self, value: BulkValue, start: int, end: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        """Bytes [start, end) of a located value, in pieces."""
        if value.data is not None:
            yield value.data[start:end]
            return
        with self.store.open(value.key) as fp:
            fp.seek(value.offset + start)
            left = end - start
            while left > 0:
                piece = fp.read(min(chunk, left))
                if not piece:
                    break
                left -= len(piece)
                yield piece


def _ref_of(original_key: str) -> InstanceKey:
    ref = parse_instance_key(original_key)
    if ref is None:
        raise NotFound(f"{original_key} is not an instance key")
    return ref


# --- locating bulk data in a stored original, by its element headers ----------------------------

_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UR", b"UT", b"UN", b"UV"}


@dataclass(frozen=True, slots=True)
class BulkValue:
    """A value in a stored object (`key`, `offset`, `length`), or in memory (`data`, deflated)."""

    key: str
    offset: int
    length: int
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class _Found:
    offset: int
    length: int
    vr: bytes | None
    undefined: int  # the header's length field (_UNDEFINED for encapsulated data)
    data: bytes | None = None

    def at(self, key: str) -> BulkValue:
        return BulkValue(key, self.offset, self.length, self.data)


def parse_path(path: str) -> list[int]:
    """An attribute path "7FE00010" or "00400275/0/00081032" as [tag, index, tag, ...]; NotFound."""
    parts = path.strip("/").split("/")
    out: list[int] = []
    for i, part in enumerate(parts):
        if i % 2 == 0 and len(part) == 8:
            try:
                out.append(int(part, 16))
                continue
            except ValueError:
                pass
        elif i % 2 == 1 and part.isdigit() and len(part) < 7:
            out.append(int(part))
            continue
        raise NotFound(f"{path!r} is not an attribute path")
    if len(out) % 2 == 0:
        raise NotFound(f"{path!r} is not an attribute path")
    return out


def _header(fp: BinaryIO, pos: int, little: bool, implicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None, length, value position) of the element or item header at `pos`."""
    fp.seek(pos)
    raw = fp.read(12)
    order = "<" if little else ">"
    group, elem = struct.unpack_from(order + "HH", raw)
    tag = group << 16 | elem
    if implicit or group == 0xFFFE:
        return tag, None, struct.unpack_from(order + "I", raw, 4)[0], pos + 8
    vr = raw[4:6]
    if vr in _LONG_VRS:
        return tag, vr, struct.unpack_from(order + "I", raw, 8)[0], pos + 12
    return tag, vr, struct.unpack_from(order + "H", raw, 6)[0], pos + 8


class _Walker:
    """Walks element headers of a Part 10 object (a file-like) without decoding values."""

    def __init__(self, fp: BinaryIO, start: int, little: bool, implicit: bool, data: bytes | None) -> None:
        self.fp, self.start, self.little, self.implicit, self.data = fp, start, little, implicit, data

    @classmethod
    def of(cls, fp: BinaryIO) -> _Walker:
        fp.seek(128)
        if fp.read(4) != b"DICM":
            raise NotFound("not a Part 10 object")
        pos, ts = 132, ""
        while True:
            fp.seek(pos)
            head = fp.read(8)
            if len(head) < 8 or struct.unpack_from("<H", head)[0] != 0x0002:
                break
            tag, _, length, vpos = _header(fp, pos, True, False)
            if tag == 0x00020010:
                fp.seek(vpos)
                ts = fp.read(length).decode("ascii", "replace").rstrip("\x00 ")
            pos = vpos + length
        if ts == DeflatedExplicitVRLittleEndian:
            fp.seek(pos)
            data = zlib.decompress(fp.read(), -zlib.MAX_WBITS)
            return cls(io.BytesIO(data), 0, True, False, data)
        implicit = ts == ImplicitVRLittleEndian
        return cls(fp, pos, ts != ExplicitVRBigEndian, implicit, None)

    def find(self, path: list[int]) -> _Found:
        found = self._find(self.start, None, self.little, self.implicit, path)
        if self.data is not None:
            return _Found(0, found.length, found.vr, found.undefined,
                          self.data[found.offset : found.offset + found.length])
        return found

    def _find(self, pos: int, end: int | None, little: bool, implicit: bool, path: list[int]) -> _Found:
        target = path[0]
        while end is None or pos < end:
            try:
                tag, vr, length, vpos = _header(self.fp, pos, little, implicit)
            except struct.error:
                break  # end of the object
            if tag == _ITEM_END or tag > target:
                break
            if tag == target:
                if len(path) == 1:
                    if length == _UNDEFINED:
                        after = self._skip_items(vpos, little, implicit)
                        return _Found(vpos, after - 8 - vpos, vr, length)
                    return _Found(vpos, length, vr, length)
                if vr == b"UN":
                    little, implicit = True, True
                return self._find_item(vpos, length, little, implicit, path[1], path[2:])
            pos = self._skip(vpos, vr, length, little, implicit)
        raise NotFound("no such attribute")

    def _find_item(
        self, pos: int, length: int, little: bool, implicit: bool, index: int, rest: list[int]
    ) -> _Found:
        end = None if length == _UNDEFINED else pos + length
        i = 0
        while end is None or pos < end:
            tag, _, item_length, vpos = _header(self.fp, pos, little, implicit)
            if tag != _ITEM:
                break
            item_end = None if item_length == _UNDEFINED else vpos + item_length
            if i == index:
                return self._find(vpos, item_end, little, implicit, rest)
            pos = item_end if item_end is not None else self._skip_dataset(vpos, little, implicit)
            i += 1
        raise NotFound("no such item")

    def _skip(self, vpos: int, vr: bytes | None, length: int, little: bool, implicit: bool) -> int:
        if length != _UNDEFINED:
            return vpos + length
        if vr == b"UN":
            little, implicit = True, True
        return self._skip_items(vpos, little, implicit)

    def _skip_items(self, pos: int, little: bool, implicit: bool) -> int:
        """Past the sequence delimiter of an undefined-length value starting at `pos`."""
        while True:
            tag, _, length, vpos = _header(self.fp, pos, little, implicit)
            if tag == _SEQ_END:
                return vpos
            if tag != _ITEM:
                raise NotFound(f"malformed sequence at byte {pos}")
            pos = vpos + length if length != _UNDEFINED else self._skip_dataset(vpos, little, implicit)

    def _skip_dataset(self, pos: int, little: bool, implicit: bool) -> int:
        """Past the item delimiter of an undefined-length item starting at `pos`."""
        while True:
            tag, vr, length, vpos = _header(self.fp, pos, little, implicit)
            if tag == _ITEM_END:
                return vpos
            pos = self._skip(vpos, vr, length, little, implicit)
