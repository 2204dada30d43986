"""What this installation can decode and encode, per transfer syntax, and negotiation.

Every path (WADO-RS, C-MOVE/C-GET, `pacs store`, the transcoder, the file tools) asks here; nothing
else calls pydicom's codec registry directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from pydicom import uid as u
from pydicom.pixels import get_decoder, get_encoder

from pacs.codecs.syntaxes import SYNTAXES

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
