"""Lossy compression: when it applies, how it is recorded (PS3.3 C.7.6.1.1.5), and the new instance it makes.

- Lossy Image Compression "01" once pixels have been through lossy compression, never reset; decoding a lossy
  stream keeps (or adds) it.
- Lossy Image Compression Method and Ratio: one value appended per lossy step, in the same order.
- A lossy compressed copy of an image is a new image: a new SOP Instance UID, Image Type value 1 DERIVED, and
  the predecessor in Source Image Sequence (`new_instance`; transcode() decides when, see its `new_uid`).
"""

from __future__ import annotations

from typing import Any

from pydicom import uid as u
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from pacs.codecs.streams import is_lossy_stream

__all__ = ["METHODS", "applies", "is_lossy_stream", "mark", "new_instance"]

#: PS3.3 C.7.6.1.1.5.1: the Lossy Image Compression Method of each syntax that can be lossy.
METHODS: dict[str, str] = {
    u.JPEGBaseline8Bit: "ISO_10918_1",
    u.JPEGExtended12Bit: "ISO_10918_1",
    u.JPEGLSNearLossless: "ISO_14495_1",
    u.JPEG2000: "ISO_15444_1",
    "1.2.840.10008.1.2.4.93": "ISO_15444_2",
    u.HTJ2K: "ISO_15444_15",
}


def applies(target: str, options: Any) -> bool:
    """Whether encoding `target` with `options` (EncodeOptions) is lossy."""
    if target in (u.JPEGBaseline8Bit, u.JPEGExtended12Bit):
        return True
    if target == u.JPEGLSNearLossless:
        return bool(options.near_lossless)
    if target == u.JPEG2000:
        return options.ratio is not None
    if target == u.HTJ2K:
        return options.ratio is not None or options.qstep is not None
    return False


def _values(ds: Dataset, keyword: str) -> list[Any]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def mark(ds: Dataset, method: str, ratio: float | None, *, decoded: bool = False) -> None:
    """Record a lossy step. `decoded`: pixels found lossy while decoding them — the method (and the ratio of
    the stream decoded) recorded only when no method is; else a lossy encoding done now — method and ratio
    appended to those recorded."""
    ds.LossyImageCompression = "01"
    methods = _values(ds, "LossyImageCompressionMethod")
    ratios = _values(ds, "LossyImageCompressionRatio")
    if decoded:
        if not methods:
            ds.LossyImageCompressionMethod = method
            if not ratios and ratio:
                ds.LossyImageCompressionRatio = _ds(ratio)
        return
    methods.append(method)
    ratios.append(_ds(ratio or 1.0))
    ds.LossyImageCompressionMethod = methods if len(methods) > 1 else methods[0]
    ds.LossyImageCompressionRatio = ratios if len(ratios) > 1 else ratios[0]


def _ds(value: float) -> str:
    """A DS value (at most 16 characters)."""
    return f"{value:.4g}"[:16]


def new_instance(ds: Dataset, method: str | None = None) -> str:
    """Make `ds` a new instance derived from what it was: a new SOP Instance UID (returned), Image Type
    DERIVED, the predecessor referenced in Source Image Sequence."""
    old = str(ds.get("SOPInstanceUID", ""))
    uid = generate_uid()
    ds.SOPInstanceUID = uid
    if hasattr(ds, "file_meta"):
        ds.file_meta.MediaStorageSOPInstanceUID = uid
    if "ImageType" in ds and ds.ImageType:
        values = list(ds.ImageType) if not isinstance(ds.ImageType, str) else [ds.ImageType]
        values[0] = "DERIVED"
        ds.ImageType = values
    if old:
        item = Dataset()
        item.ReferencedSOPClassUID = ds.get("SOPClassUID", "")
        item.ReferencedSOPInstanceUID = old
        seq = ds.get("SourceImageSequence") or Sequence()
        seq.append(item)
        ds.SourceImageSequence = seq
    if method:
        text = f"Lossy compression {method}"
        previous = str(ds.get("DerivationDescription", "") or "")
        ds.DerivationDescription = (f"{previous}; {text}" if previous else text)[:1024]
    return uid
