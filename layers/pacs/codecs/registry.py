"""What this installation can decode and encode, per transfer syntax, and negotiation.

Every path (WADO-RS, C-MOVE/C-GET, `pacs store`, the transcoder, the file tools) asks here; nothing
else calls pydicom's codec registry directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydicom import uid as u
from pydicom.pixels import get_decoder, get_encoder

from pacs.codecs import plugins
from pacs.codecs.syntaxes import SYNTAXES

plugins.register()

#: Written natively (no pixel codec): the data set is re-encoded, the pixels byte-swapped at most.
NATIVE = frozenset({u.ImplicitVRLittleEndian, u.ExplicitVRLittleEndian, u.DeflatedExplicitVRLittleEndian,
                    u.ExplicitVRBigEndian})

#: The order in which syntaxes are preferred when several would do: lossless before lossy, the
#: cheapest to produce first (native, then the fast codecs).
PREFERENCE: tuple[str, ...] = (
    u.ExplicitVRLittleEndian, u.ImplicitVRLittleEndian, u.HTJ2KLossless, u.HTJ2KLosslessRPCL,
    u.JPEGLSLossless, u.RLELossless, u.JPEGLosslessSV1, u.JPEGLossless, u.JPEG2000Lossless,
    u.DeflatedExplicitVRLittleEndian, u.ExplicitVRBigEndian,
    u.JPEGLSNearLossless, u.HTJ2K, u.JPEG2000, u.JPEGBaseline8Bit, u.JPEGExtended12Bit,
)


#: The plugin used per syntax, the fastest measured here (FIELD-NOTES 1b and the codec benchmark); the
#: others stay registered as pydicom's fallbacks. Native syntaxes need none.
DECODE_PLUGIN: dict[str, str] = {
    u.RLELossless: "pylibjpeg",
    u.JPEGBaseline8Bit: "imagecodecs", u.JPEGExtended12Bit: "imagecodecs",
    u.JPEGLossless: "imagecodecs", u.JPEGLosslessSV1: "imagecodecs",
    u.JPEGLSLossless: "imagecodecs", u.JPEGLSNearLossless: "imagecodecs",
    u.JPEG2000Lossless: "imagecodecs", u.JPEG2000: "imagecodecs",
    u.HTJ2KLossless: "imagecodecs", u.HTJ2KLosslessRPCL: "imagecodecs", u.HTJ2K: "imagecodecs",
}
ENCODE_PLUGIN: dict[str, str] = {
    u.RLELossless: "imagecodecs",
    u.JPEGBaseline8Bit: "imagecodecs", u.JPEGExtended12Bit: "imagecodecs",
    u.JPEGLossless: "imagecodecs", u.JPEGLosslessSV1: "imagecodecs",
    # .91: lossy through pylibjpeg-openjpeg (compression ratio); a reversible .91 is the .90 encoder's stream
    # JPEG-LS: CharLS in imagecodecs releases the GIL (pyjpegls, the fallback, holds it)
    u.JPEGLSLossless: "imagecodecs", u.JPEGLSNearLossless: "imagecodecs",
    u.JPEG2000Lossless: "imagecodecs", u.JPEG2000: "pylibjpeg",
    u.HTJ2KLossless: "imagecodecs", u.HTJ2KLosslessRPCL: "imagecodecs", u.HTJ2K: "imagecodecs",
}


@cache
def decoder_plugin(syntax: str) -> str:
    """The decoding plugin to name for `syntax` ("" for native syntaxes or when the preferred one is missing:
    pydicom then tries every available one)."""
    name = DECODE_PLUGIN.get(syntax, "")
    try:
        return name if name and name in get_decoder(syntax).available_plugins else ""
    except (NotImplementedError, ValueError):
        return ""


@cache
def encoder_plugin(syntax: str) -> str:
    """The encoding plugin to name for `syntax` ("" when none is preferred or it is missing)."""
    name = ENCODE_PLUGIN.get(syntax, "")
    try:
        return name if name and name in get_encoder(syntax).available_plugins else ""
    except (NotImplementedError, ValueError):
        return ""


@dataclass(frozen=True, slots=True)
class CodecInfo:
    """What this installation does with one transfer syntax."""

    uid: str
    name: str
    #: The plugin that decodes / encodes it ("native" for the uncompressed syntaxes), None when nothing can.
    decoder: str | None
    encoder: str | None
    #: Whether the syntax can carry pixels exactly, and lossy.
    lossless: bool
    lossy: bool


def describe() -> list[CodecInfo]:
    """Per known syntax: the decoding and encoding plugins used here, lossless, lossy."""
    out = []
    for uid, info in SYNTAXES.items():
        dec: str | None
        enc: str | None
        if uid in NATIVE:
            dec = enc = "native"
        else:
            dec = _used(decoder_plugin(uid), get_decoder, uid) if can_decode(uid) else None
            enc = _used(encoder_plugin(uid), get_encoder, uid) if can_encode(uid) else None
        out.append(CodecInfo(uid, info.name, dec, enc, info.lossless, info.lossy))
    return out


def _used(preferred: str, get: Callable[[str], Any], uid: str) -> str | None:
    """The plugin pydicom uses: the preferred one, else the first available."""
    return preferred or next(iter(get(uid).available_plugins), None)


@cache
def can_decode(syntax: str) -> bool:
    """True when pixel data stored in `syntax` can be decoded here."""
    if syntax in NATIVE:
        return True
    try:
        return bool(get_decoder(syntax).is_available)
    except (NotImplementedError, ValueError):
        return False


@cache
def can_encode(syntax: str) -> bool:
    """True when pixel data can be encoded in `syntax` here."""
    if syntax in NATIVE:
        return True
    try:
        return bool(get_encoder(syntax).is_available)
    except (NotImplementedError, ValueError):
        return False


def decodable() -> list[str]:
    return [s for s in SYNTAXES if can_decode(s)]


def encodable() -> list[str]:
    return [s for s in SYNTAXES if can_encode(s)]


def can_produce(source: str, target: str) -> bool:
    """True when an instance stored in `source` can be sent in `target` (as stored, or transcoded)."""
    return source == target or (can_decode(source) and can_encode(target))


def negotiate(source: str, accepted: Sequence[str], *, lossy: bool = False) -> str | None:
    """The syntax to send an instance stored in `source` in, among `accepted` (in the peer's order of
    preference, e.g. by q-value): the stored one when accepted, else the first accepted one a codec can
    produce, lossless ones first (lossy ones only when `lossy`, or when the source is already lossy and
    the target is the same kind). None when nothing accepted can be produced."""
    if source in accepted:
        return source
    candidates = [t for t in accepted if can_produce(source, t)]
    lossless = [t for t in candidates if SYNTAXES.get(t) is None or SYNTAXES[t].lossless]
    if lossless:
        return lossless[0]
    if lossy or (SYNTAXES.get(source) and not SYNTAXES[source].lossless):
        return candidates[0] if candidates else None
    return None
