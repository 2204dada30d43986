"""What each transfer syntax is: its name, the media type of its frames (PS3.18 Table 8.7.3-2), the
default syntax of each media type (PS3.18 Table 8.7.3-5), and whether it can be lossless or lossy."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import uid as u

from pacs.dicom.frames import MEDIA_TYPES


@dataclass(frozen=True, slots=True)
class SyntaxInfo:
    uid: str
    name: str
    #: The media type of one frame in this syntax (`application/octet-stream` for native ones).
    media_type: str
    #: Whether the syntax can carry pixels exactly, and whether it can carry them lossy.
    lossless: bool
    lossy: bool
    #: Encapsulated (compressed) pixel data.
    encapsulated: bool


_LOSSY_ONLY = {u.JPEGBaseline8Bit, u.JPEGExtended12Bit}
_LOSSY_TOO = {u.JPEGLSNearLossless, u.JPEG2000, u.HTJ2K, "1.2.840.10008.1.2.4.93"}

#: The syntaxes the archive knows (stores, and may decode or encode), keyed by UID.
SYNTAXES: dict[str, SyntaxInfo] = {
    str(t): SyntaxInfo(
        uid=str(t),
        name=t.name,
        media_type=MEDIA_TYPES.get(t, "application/octet-stream"),
        lossless=t not in _LOSSY_ONLY,
        lossy=t in _LOSSY_ONLY or t in _LOSSY_TOO,
        encapsulated=t.is_encapsulated,
    )
    for t in (
        u.ImplicitVRLittleEndian, u.ExplicitVRLittleEndian, u.DeflatedExplicitVRLittleEndian,
        u.ExplicitVRBigEndian, u.RLELossless, u.JPEGBaseline8Bit, u.JPEGExtended12Bit, u.JPEGLossless,
        u.JPEGLosslessSV1, u.JPEGLSLossless, u.JPEGLSNearLossless, u.JPEG2000Lossless, u.JPEG2000,
        u.HTJ2KLossless, u.HTJ2KLosslessRPCL, u.HTJ2K,
    )
}

#: PS3.18 Table 8.7.3-5: the transfer syntax of a frames media type asked without `transfer-syntax=`.
DEFAULT_SYNTAX: dict[str, str] = {
    "application/octet-stream": u.ExplicitVRLittleEndian,
    "image/jpeg": u.JPEGLosslessSV1,  # "D" in Table 8.7.3-5; Baseline (.50) only when asked
    "image/jls": u.JPEGLSLossless,
    "image/jp2": u.JPEG2000Lossless,
    "image/jphc": u.HTJ2KLossless,
    "image/dicom-rle": u.RLELossless,
}


def frames_media_type(syntax: str) -> str:
    """The media type of a frame encoded in `syntax`."""
    return MEDIA_TYPES.get(syntax, "application/octet-stream")


def syntax_for_media_type(media_type: str, syntax: str | None = None) -> str | None:
    """The syntax a frames media type (with an optional `transfer-syntax=` parameter) asks for, or None
    when the pair is not one the standard defines."""
    media_type = media_type.strip().lower()
    if syntax in (None, "", "*"):
        return DEFAULT_SYNTAX.get(media_type)
    assert syntax is not None
    return syntax if frames_media_type(syntax) == media_type else None
