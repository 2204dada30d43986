"""WADO-RS frames: chosen frames of one instance, as stored or decoded to native little endian.

The caller says what it accepts as `Wanted` (media type, transfer syntax; "*" for any), best first;
`FrameService.frames` picks the first it can answer: stored frames as they are, big endian frames
swapped to little endian, or compressed frames decoded by pydicom's codec plugins.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pacs.dicom.frames import (
    MEDIA_TYPES,
    FramesUnavailable,
    PixelLayout,
    encapsulated_frames,
    native_frames,
    read_layout,
)
from pacs.errors import PacsError
from pacs.services.retrieve import RetrieveService

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


@dataclass(frozen=True, slots=True)
class Frames:
    """The frames to send, and the media type and transfer syntax of every part."""

    media_type: str
    transfer_syntax: str
    frames: list[bytes]

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"


def parse_frame_list(text: str) -> list[int]:
    """'1,3,5' → [1, 3, 5]; BadFrameList names the first entry that is not a frame number ≥ 1."""
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise BadFrameList(f"frame {item!r} is not a frame number (1, 2, …)")
        numbers.append(int(item))
    return numbers


class FrameService:
    def __init__(self, retrieve: RetrieveService) -> None:
        self.retrieve = retrieve

    def frames(
        self, study: str, series: str, sop: str, numbers: list[int], wanted: list[Wanted] | None = None
    ) -> Frames:
        """Frames `numbers` (1-based) of an instance in the first form of `wanted` that can be made
        (None: as stored). Raises NotFound, BadFrameList, FramesNotAcceptable, FramesUnavailable."""
        (row,) = self.retrieve.instances(study, series, sop)
        with self.retrieve.store.open(row.key) as fp:
            layout = read_layout(fp)
            for n in numbers:
                if n > layout.number_of_frames:
                    raise BadFrameList(
                        f"frame {n} is out of range: the instance has {layout.number_of_frames} frame(s)"
                    )
            stored = layout.transfer_syntax_uid
            form = _choose(layout, wanted or [Wanted()])
            if form == "native":
                data = native_frames(fp, layout, numbers)
                ts = stored if stored in _LITTLE_ENDIAN else ExplicitVRLittleEndian
                return Frames(OCTET_STREAM, ts, data)
            if stored not in MEDIA_TYPES or MEDIA_TYPES[stored].startswith("video/"):
                raise FramesUnavailable(
                    f"frames of an instance stored as {stored} are not addressable; retrieve the instance"
                )
            data = encapsulated_frames(fp, layout, numbers)
            if form == "decode":
                return Frames(OCTET_STREAM, ExplicitVRLittleEndian, [_decode(layout, f) for f in data])
            return Frames(MEDIA_TYPES[stored], stored, data)


def _choose(layout: PixelLayout, wanted: list[Wanted]) -> str:
    """'native', 'stored' (encapsulated, as is) or 'decode' for the first acceptable form."""
    stored = layout.transfer_syntax_uid
    media = MEDIA_TYPES.get(stored, OCTET_STREAM)
    for w in wanted:
        if not layout.encapsulated:
            if w.media_type in ("*", OCTET_STREAM) and w.transfer_syntax in ("*", stored, *_LITTLE_ENDIAN):
                return "native"
            continue
        if w.media_type in ("*", media, OCTET_STREAM) and w.transfer_syntax in ("*", stored):
            return "stored"
        if w.media_type == OCTET_STREAM and w.transfer_syntax in _LITTLE_ENDIAN and _decodable(stored):
            return "decode"
    asked = ", ".join(f"{w.media_type} ({w.transfer_syntax})" for w in wanted)
    how = "" if not layout.encapsulated or _decodable(stored) else "; decompression is not available"
    raise FramesNotAcceptable(f"cannot send {asked}: the frames are stored as {media} ({stored}){how}")


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
