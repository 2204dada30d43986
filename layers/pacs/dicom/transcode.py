"""Compatibility wrapper: the old native-only transcoder's names over `pacs.codecs`, the one codec registry.

C-MOVE / C-GET sub-operations and routing send an instance in a native syntax (Explicit or Implicit VR Little
Endian) when the peer does not accept the one it is stored in. New code calls `pacs.codecs.transcode`, which
produces any syntax the registry can encode. Decoding keeps the SOP Instance UID (the pixels are the same
ones) and the lossy flags (added when the stream itself is lossy: DCT JPEG, JPEG-LS NEAR > 0, JPEG 2000 9-7);
DCT JPEG colour becomes RGB, colour-by-pixel.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pacs.codecs import TranscodeError
from pacs.codecs import can_decode as _can_decode
from pacs.codecs import transcode as _transcode

__all__ = ["NATIVE", "TranscodeError", "can_decode", "transcode"]

#: What this wrapper transcodes to.
NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def can_decode(syntax: str) -> bool:
    """True when `syntax` is native, or compressed with a decoder available here."""
    return _can_decode(str(UID(syntax)))


def transcode(ds: Dataset, target: str) -> Dataset:
    """`ds` (read from a Part 10 file, with its file meta) re-encoded for `target`, in place.

    `target` must be Explicit or Implicit VR LE. Raises TranscodeError when it cannot be done.
    """
    target = UID(target)
    if target not in NATIVE:
        raise TranscodeError(f"cannot transcode to {target.name}: only to Explicit or Implicit VR LE")
    return _transcode(ds, target, new_uid=False)
