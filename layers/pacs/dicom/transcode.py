"""Transcoding a stored instance to a native transfer syntax (Explicit or Implicit VR Little Endian) for a
peer that does not accept the syntax it is stored in (C-MOVE and C-GET sub-operations, routing).

Compressed pixel data is decoded through pydicom's codec plugins (pylibjpeg, openjpeg, RLE, pyjpegls,
pillow): YBR JPEG colour is converted to RGB (PhotometricInterpretation RGB, PlanarConfiguration 0), the
SOP Instance UID is kept (the pixels are the same ones), and the lossy flags are kept (LossyImageCompression
with its method and ratio; set when decoding DCT JPEG, lossy by definition, if they were missing).
Deflated and big-endian objects are re-encoded natively. Nothing else is changed.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
)

#: What a stored instance can be transcoded to.
NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

#: Syntaxes that are lossy whatever their parameters (DCT JPEG): decoding them marks the instance lossy if
#: it was not already. Others (JPEG 2000, JPEG-LS near-lossless) may be lossless: their flags are kept.
_ALWAYS_LOSSY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit})
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


class TranscodeError(Exception):
    """The instance cannot be re-encoded in the syntax asked (no decoder, corrupt pixel data...)."""


def can_decode(syntax: str) -> bool:
    """True when `syntax` is native, or compressed with a decoder available here."""
    uid = UID(syntax)
    if not uid.is_compressed:
        return True
    try:
        return bool(get_decoder(uid).is_available)
    except NotImplementedError:
        return False


def transcode(ds: Dataset, target: str) -> Dataset:
    """`ds` (read from a Part 10 file, with its file meta) re-encoded for `target`, in place.

    `target` must be Explicit or Implicit VR Little Endian. Raises TranscodeError when it cannot be done.
    """
    target = UID(target)
    if target not in NATIVE:
        raise TranscodeError(f"cannot transcode to {target.name}: only to Explicit or Implicit VR LE")
    try:
        source = UID(ds.file_meta.TransferSyntaxUID)
    except AttributeError:
        raise TranscodeError("the data set has no Transfer Syntax UID in its file meta") from None
    if source.is_compressed:
        if not any(t in ds for t in _PIXEL_TAGS):
            raise TranscodeError(f"{source.name} but no pixel data")
        if not can_decode(source):
            raise TranscodeError(f"no decoder for {source.name} is installed")
        try:
            ds.decompress(as_rgb=True, generate_instance_uid=False)
        except Exception as exc:  # the codecs raise many kinds: all mean "cannot decode this one"
            raise TranscodeError(f"cannot decode the {source.name} pixel data: {exc}") from exc
        if source in _ALWAYS_LOSSY:
            _mark_lossy(ds)
    else:
        _native_values(ds, big_endian=not source.is_little_endian)
    ds.file_meta.TransferSyntaxUID = target
    ds.set_original_encoding(target.is_implicit_VR, True, ds.original_character_set)
    return ds


def _native_values(ds: Dataset, *, big_endian: bool) -> None:
    """Decode every element (values and VRs, from the dictionary when read implicit) so that they are
    written in the new encoding, and byte-swap big-endian pixel data (its value is kept as read)."""
    for _ in ds.iterall():
        pass
    if big_endian and "PixelData" in ds and int(ds.get("BitsAllocated", 8)) > 8:
        try:
            arr = ds.pixel_array
        except Exception as exc:
            raise TranscodeError(f"cannot read the big-endian pixel data: {exc}") from exc
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OW"


def _mark_lossy(ds: Dataset) -> None:
    """Record that the pixels went through lossy JPEG compression (PS3.3 C.7.6.1.1.5)."""
    if ds.get("LossyImageCompression") != "01":
        ds.LossyImageCompression = "01"
    if "LossyImageCompressionMethod" not in ds:
        ds.LossyImageCompressionMethod = "ISO_10918_1"
