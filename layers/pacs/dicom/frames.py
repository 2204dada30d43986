"""Frames of a stored Part 10 object, read by seeking: only the header and the requested frames.

`read_layout` parses the header (pydicom, stopping before Pixel Data) and the Pixel Data element
header; `native_frames` and `encapsulated_frames` then read just the byte ranges of the wanted frames
(native frames come back little endian; encapsulated ones as stored, fragments joined).
`frame_fragments` locates every frame of encapsulated pixel data once, so that a caller keeping the
layout and that map (per object version) reads any frame afterwards with `read_fragments` alone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from pacs.errors import InvalidDataset, NotFound, PacsError

NATIVE_SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian})

#: PS3.18 Table 8.7.3-2 (and 8.7.4): the media type of frames encoded in a transfer syntax.
MEDIA_TYPES: dict[str, str] = {
    **dict.fromkeys(NATIVE_SYNTAXES, "application/octet-stream"),
    **dict.fromkeys(
        ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
         "1.2.840.10008.1.2.4.70"), "image/jpeg"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"), "image/jls"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"), "image/jp2"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"), "image/jpx"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"),
                    "image/jphc"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112"),
                    "image/jxl"),
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    **dict.fromkeys(("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101"), "video/mpeg"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.103", "1.2.840.10008.1.2.4.104",
                     "1.2.840.10008.1.2.4.105", "1.2.840.10008.1.2.4.106"), "video/mp4"),
    **dict.fromkeys(("1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108"), "video/H265"),
}

_PIXEL_TAGS = {0x7FE00010: 0, 0x7FE00008: 32, 0x7FE00009: 64}  # tag → fixed bits (0: BitsAllocated)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"UN"}
_UNDEFINED = 0xFFFFFFFF
_ITEM, _SEQ_END = 0xFFFEE000, 0xFFFEE0DD


class FramesUnavailable(PacsError):
    """The object's pixel data cannot be served as frames (HTTP 400 with the reason)."""

    http_status = 400


class NoPixelData(NotFound):
    """The object has no Pixel Data element."""


@dataclass(frozen=True, slots=True)
class PixelLayout:
    """Where the pixel data of an object is, and how big one frame is."""

    transfer_syntax_uid: str
    header: Dataset
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    number_of_frames: int
    vr: str
    value_offset: int  # the first byte of the Pixel Data value
    value_length: int | None  # None: undefined length (encapsulated)
    little_endian: bool

    @property
    def encapsulated(self) -> bool:
        return self.value_length is None

    @property
    def frame_bits(self) -> int:
        return self.rows * self.columns * self.samples_per_frame_pixel * self.bits_allocated

    @property
    def samples_per_frame_pixel(self) -> int:
        """Stored samples a pixel: native YBR_FULL_422 keeps one Cb and one Cr for each two pixels
        (PS3.3 C.7.6.3.1.2), so two, though SamplesPerPixel says 3."""
        if (self.samples_per_pixel == 3 and not self.encapsulated
                and self.header.get("PhotometricInterpretation") == "YBR_FULL_422"):
            return 2
        return self.samples_per_pixel


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        if default is not None:
            return default
        raise FramesUnavailable(f"the object has no {keyword}, needed to locate its frames")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FramesUnavailable(f"the object's {keyword} {value!r} is not a number") from None


def read_layout(fp: BinaryIO) -> PixelLayout:
    """Parse the header and the Pixel Data element header of a Part 10 object at the start of `fp`."""
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many kinds on garbage
        raise InvalidDataset(f"cannot parse the stored object: {exc}") from exc
    ts = str(ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian))
    if ts == DeflatedExplicitVRLittleEndian:
        raise FramesUnavailable("the object is stored deflated; retrieve the whole instance instead")
    implicit, little = ds.original_encoding[:2]
    if implicit is None or little is None:
        implicit, little = ts == ImplicitVRLittleEndian, ts != ExplicitVRBigEndian
    order = "<" if little else ">"
    start = fp.tell()
    head = fp.read(8)
    if len(head) < 8:
        raise NoPixelData("the instance has no Pixel Data")
    group, elem = struct.unpack(order + "HH", head[:4])
    tag = group << 16 | elem
    if tag not in _PIXEL_TAGS:
        raise NoPixelData("the instance has no Pixel Data")
    if implicit:
        vr = "OW" if tag == 0x7FE00010 else "OF" if tag == 0x7FE00008 else "OD"
        (length,) = struct.unpack(order + "I", head[4:8])
        offset = start + 8
    else:
        vr = head[4:6].decode("ascii", "replace")
        if head[4:6] in _LONG_VRS:
            (length,) = struct.unpack(order + "I", fp.read(4))
            offset = start + 12
        else:
            (length,) = struct.unpack(order + "H", head[6:8])
            offset = start + 8
    bits = _PIXEL_TAGS[tag] or _int(ds, "BitsAllocated")
    return PixelLayout(
        transfer_syntax_uid=ts, header=ds, rows=_int(ds, "Rows"), columns=_int(ds, "Columns"),
        samples_per_pixel=_int(ds, "SamplesPerPixel", 1), bits_allocated=bits,
        number_of_frames=max(_int(ds, "NumberOfFrames", 1), 1), vr=vr, value_offset=offset,
        value_length=None if length == _UNDEFINED else length, little_endian=little,
    )


def native_frames(fp: BinaryIO, layout: PixelLayout, numbers: list[int]) -> list[bytes]:
    """The frames (1-based `numbers`) of native pixel data, little endian, read by seeking."""
    assert layout.value_length is not None
    bits = layout.frame_bits
    if bits == 0:
        raise FramesUnavailable("the object's frames are empty (Rows, Columns or bits are 0)")
    out = []
    for n in numbers:
        first_bit = (n - 1) * bits
        start, end = first_bit // 8, -(-(first_bit + bits) // 8)
        if layout.bits_allocated == 1:
            raw = _read(fp, layout, start, end)
            unpacked = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")
            shift = first_bit % 8
            out.append(np.packbits(unpacked[shift : shift + bits], bitorder="little").tobytes())
        elif layout.little_endian:
            out.append(_read(fp, layout, start, end))
        else:
            out.append(_to_little_endian(fp, layout, start, end))
    return out


def _read(fp: BinaryIO, layout: PixelLayout, start: int, end: int) -> bytes:
    assert layout.value_length is not None
    if end > layout.value_length:
        raise FramesUnavailable(
            f"the Pixel Data ({layout.value_length} bytes) is shorter than its frames need ({end} bytes)"
        )
    fp.seek(layout.value_offset + start)
    data = fp.read(end - start)
    if len(data) != end - start:
        raise InvalidDataset("the stored object is truncated inside its Pixel Data")
    return data


def _to_little_endian(fp: BinaryIO, layout: PixelLayout, start: int, end: int) -> bytes:
    """A frame of big endian pixel data, byte-swapped to little endian."""
    if layout.vr == "OB" or (layout.bits_allocated == 8 and layout.vr not in ("OW", "OF", "OD", "OL")):
        return _read(fp, layout, start, end)
    unit = 2 if layout.bits_allocated == 8 else layout.bits_allocated // 8  # OW swaps 8-bit pairs
    if unit not in (2, 4, 8):
        raise FramesUnavailable(
            f"big endian pixel data with BitsAllocated {layout.bits_allocated} cannot be served as frames"
        )
    lo, hi = start - start % unit, end + (-end) % unit
    swapped = np.frombuffer(_read(fp, layout, lo, hi), f">u{unit}").astype(f"<u{unit}").tobytes()
    return swapped[start - lo : start - lo + end - start]


#: Where each frame of encapsulated pixel data is: (absolute offset, length) of its fragments' values.
FrameMap = list[list[tuple[int, int]]]


def encapsulated_frames(fp: BinaryIO, layout: PixelLayout, numbers: list[int]) -> list[bytes]:
    """The frames (1-based `numbers`) of encapsulated pixel data, as stored, fragments joined.

    Frames are located by the Extended Offset Table, else the Basic Offset Table, else as all
    fragments (one frame), one fragment per frame, or by the codestream start markers."""
    return read_fragments(fp, frame_fragments(fp, layout), numbers)


def frame_fragments(fp: BinaryIO, layout: PixelLayout) -> FrameMap:
    """Every frame of encapsulated pixel data, as the positions of its fragments (see FrameMap)."""
    order = "<" if layout.little_endian else ">"
    fp.seek(layout.value_offset)
    tag, length = _item_header(fp, order)
    if tag != _ITEM:
        raise InvalidDataset("the encapsulated Pixel Data does not start with a Basic Offset Table item")
    bot = fp.read(length)
    first = fp.tell()  # offsets count from the first fragment's item tag
    fragments: list[tuple[int, int]] = []  # (offset of the item tag relative to `first`, value length)
    while True:
        pos = fp.tell()
        tag, length = _item_header(fp, order)
        if tag == _SEQ_END:
            break
        if tag != _ITEM or length == _UNDEFINED:
            raise InvalidDataset(f"malformed fragment item in the Pixel Data at byte {pos}")
        fragments.append((pos - first, length))
        fp.seek(length, 1)
    frames = _group(fp, layout, order, bot, first, fragments)
    return [[(first + offset + 8, length) for offset, length in frame] for frame in frames]


def read_fragments(fp: BinaryIO, frame_map: FrameMap, numbers: list[int]) -> list[bytes]:
    """The frames (1-based `numbers`) located by `frame_map`, fragments joined."""
    out = []
    for n in numbers:
        if n > len(frame_map):
            raise FramesUnavailable(f"frame {n} is not in the Pixel Data, which holds {len(frame_map)}")
        parts = []
        for offset, length in frame_map[n - 1]:
            fp.seek(offset)
            part = fp.read(length)
            if len(part) != length:
                raise InvalidDataset("the stored object is truncated inside its Pixel Data")
            parts.append(part)
        out.append(parts[0] if len(parts) == 1 else b"".join(parts))
    return out


def _item_header(fp: BinaryIO, order: str) -> tuple[int, int]:
    head = fp.read(8)
    if len(head) < 8:
        raise InvalidDataset("the stored object is truncated inside its Pixel Data")
    group, elem, length = struct.unpack(order + "HHI", head)
    return group << 16 | elem, length


def _group(
    fp: BinaryIO, layout: PixelLayout, order: str, bot: bytes, first: int, fragments: list[tuple[int, int]]
) -> list[list[tuple[int, int]]]:
    """The fragments of each frame, as (item offset, value length)."""
    count = layout.number_of_frames
    eot, eot_lengths = layout.header.get("ExtendedOffsetTable"), layout.header.get(
        "ExtendedOffsetTableLengths")
    if eot and eot_lengths:
        offsets = struct.unpack(f"{order}{len(eot) // 8}Q", eot)
        lengths = struct.unpack(f"{order}{len(eot_lengths) // 8}Q", eot_lengths)
        return [[(o, n)] for o, n in zip(offsets, lengths, strict=False)]
    if bot:
        starts = list(struct.unpack(f"{order}{len(bot) // 4}I", bot))
        frames: list[list[tuple[int, int]]] = [[] for _ in starts]
        i = -1
        for frag in fragments:
            while i + 1 < len(starts) and frag[0] >= starts[i + 1]:
                i += 1
            if i >= 0:
                frames[i].append(frag)
        return frames
    if count == 1:
        return [fragments]
    if len(fragments) == count:
        return [[f] for f in fragments]
    frames = []
    for offset, length in fragments:  # a new frame where a codestream starts (JPEG, JPEG-LS, J2K)
        fp.seek(first + offset + 8)
        magic = fp.read(2)
        if magic in (b"\xff\xd8", b"\xff\x4f") or not frames:
            frames.append([])
        frames[-1].append((offset, length))
    if len(frames) != count:
        raise FramesUnavailable(
            f"cannot locate {count} frames in {len(fragments)} fragments without an offset table"
        )
    return frames
