"""A data set re-encoded in another transfer syntax, in place: decode through the registry's
decoders, encode through its encoders, with the attributes the new syntax requires."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
)

from pacs.codecs.registry import NATIVE, can_decode, can_encode
from pacs.codecs.syntaxes import SYNTAXES

_ALWAYS_LOSSY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit})
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


class TranscodeError(Exception):
    """The instance cannot be re-encoded in the syntax asked (no codec, corrupt pixel data...)."""


@dataclass(frozen=True, slots=True)
class EncodeOptions:
    """How lossy an encoding may be; the default is lossless wherever the syntax allows it."""

    #: JPEG Baseline quality (1-100).
    quality: int | None = None
    #: JPEG-LS near-lossless NEAR (maximum absolute error per sample).
    near_lossless: int | None = None
    #: JPEG 2000 / HTJ2K lossy: the compression ratio asked.
    ratio: float | None = None

    @property
    def lossy(self) -> bool:
        return any(v is not None for v in (self.quality, self.near_lossless, self.ratio))


def transcode(ds: Dataset, target: str, options: EncodeOptions | None = None) -> Dataset:
    """`ds` (read from a Part 10 file, with its file meta) re-encoded for `target`, in place.

    Raises TranscodeError when it cannot be done (no decoder for the source, no encoder for the target,
    corrupt pixel data). A lossy encoding of lossless pixels makes a new SOP Instance UID (PS3.5 8.2).
    """
    target = UID(target)
    options = options or EncodeOptions()
    if target not in SYNTAXES:
        raise TranscodeError(f"unknown transfer syntax {target}")
    try:
        source = UID(ds.file_meta.TransferSyntaxUID)
    except AttributeError:
        raise TranscodeError("the data set has no Transfer Syntax UID in its file meta") from None
    if source == target:
        return ds
    if not can_decode(source):
        raise TranscodeError(f"no decoder for {source.name} is installed")
    if not can_encode(target):
        raise TranscodeError(f"no encoder for {target.name} is installed")
    has_pixels = any(t in ds for t in _PIXEL_TAGS)
    if source.is_compressed:
        if not has_pixels:
            raise TranscodeError(f"{source.name} but no pixel data")
        try:
            ds.decompress(as_rgb=True, generate_instance_uid=False)
        except Exception as exc:  # the codecs raise many kinds: all mean "cannot decode this one"
            raise TranscodeError(f"cannot decode the {source.name} pixel data: {exc}") from exc
        if source in _ALWAYS_LOSSY:
            _mark_lossy(ds, "ISO_10918_1")
    else:
        _native_values(ds, big_endian=not source.is_little_endian)
    if target in NATIVE:
        ds.file_meta.TransferSyntaxUID = target
        ds.set_original_encoding(target.is_implicit_VR, target.is_little_endian, ds.original_character_set)
        if target in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian):
            pass  # pydicom writes both from the data set's values
        return ds
    if not has_pixels:
        raise TranscodeError(f"{target.name} needs pixel data and the instance has none")
    kwargs: dict[str, object] = {}
    if target == JPEGLSNearLossless:
        kwargs["jls_error"] = options.near_lossless if options.near_lossless is not None else 0
    if target == JPEG2000 and options.ratio is not None:
        kwargs["j2k_cr"] = [options.ratio]
    try:
        ds.compress(target, generate_instance_uid=False, **kwargs)  # type: ignore[arg-type]
    except Exception as exc:
        raise TranscodeError(f"cannot encode {target.name}: {exc}") from exc
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


def _mark_lossy(ds: Dataset, method: str) -> None:
    """Record that the pixels went through lossy compression (PS3.3 C.7.6.1.1.5)."""
    if ds.get("LossyImageCompression") != "01":
        ds.LossyImageCompression = "01"
    if "LossyImageCompressionMethod" not in ds:
        ds.LossyImageCompressionMethod = method
