"""Photometric Interpretation and Planar Configuration as PS3.5 8.2 requires them per transfer syntax.

- Decoding: DCT JPEG (YBR_FULL_422 / YBR_FULL) becomes RGB; JPEG 2000 / HTJ2K YBR_RCT / YBR_ICT becomes RGB
  (the decoder undoes the transform); YBR_FULL from a lossless syntax stays YBR_FULL where the target can
  carry it (the conversion to RGB rounds, so it would not be lossless).
- Encoding: JPEG Baseline colour is written YBR_FULL_422 (libjpeg-turbo converts and subsamples); JPEG 2000
  and HTJ2K colour RGB is written with the multi-component transform, YBR_RCT when reversible and YBR_ICT when
  irreversible (8.2.4, and pydicom's table of 8.2.4-1, which allows no YBR_RCT in .91: a reversible .91 is
  written RGB without MCT); every other syntax keeps RGB or YBR_FULL as decoded.
- Planar Configuration: 1 for RLE colour (PS3.5 G.2, each colour plane is its own segment), else 0; native
  output of RLE colour stays colour-by-plane (1), as decoded, rather than paying for a transposing copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom import uid as u
from pydicom.dataset import Dataset

_DCT = (u.JPEGBaseline8Bit, u.JPEGExtended12Bit)
_J2K_REVERSIBLE_MCT = (u.JPEG2000Lossless, u.HTJ2KLossless, u.HTJ2KLosslessRPCL)
#: Syntaxes that carry YBR_FULL only with 8-bit samples (PS3.5 Tables 8.2.2-1, 8.2.3-1).
_YBR_8BIT_ONLY = (u.RLELossless, u.JPEGLSLossless, u.JPEGLSNearLossless)


@dataclass(slots=True)
class Plan:
    """What the frames become: the encoder that writes them, their Photometric Interpretation and layout."""

    encoder_syntax: str
    photometric: str
    samples: int
    planar: int
    mct: bool
    native_dtype: np.dtype
    #: The image pixel description passed to pydicom's Encoder for one frame.
    pixel_options: dict[str, Any] = field(default_factory=dict)


def decode_as_rgb(source: str, target: str, bits_stored: int) -> bool:
    """Whether YBR frames are converted to RGB while decoding for `target`."""
    if source in _DCT or target in _DCT:
        return True
    return target in _YBR_8BIT_ONLY and bits_stored > 8


def plan(target: str, props: dict[str, Any], ds: Dataset, options: Any) -> Plan:
    """The plan for `target`, from the first decoded frame's properties and the data set."""
    samples = int(props["samples_per_pixel"])
    pi = str(props["photometric_interpretation"])
    signed = int(ds.get("PixelRepresentation", 0))
    bits_allocated = int(ds.BitsAllocated)
    bits_stored = int(ds.get("BitsStored") or bits_allocated)
    encoder_syntax, mct = target, False
    if samples == 3:
        if target == u.JPEGBaseline8Bit:
            pi = "YBR_FULL_422" if pi in ("RGB", "YBR_FULL_422") else pi
        elif target in _J2K_REVERSIBLE_MCT and pi == "RGB":
            pi, mct = "YBR_RCT", True
        elif target in (u.JPEG2000, u.HTJ2K) and pi == "RGB" and options.lossy:
            pi, mct = "YBR_ICT", True
    if target == u.JPEG2000 and options.ratio is None:
        encoder_syntax = u.JPEG2000Lossless  # the same codestream, reversible: no lossy option asked
    planar = 1 if samples > 1 and target == u.RLELossless else 0
    native_dtype = np.dtype(f"<{'i' if signed else 'u'}{max(bits_allocated // 8, 1)}")
    pixel_options = {
        "rows": int(props["rows"]),
        "columns": int(props["columns"]),
        "samples_per_pixel": samples,
        "bits_allocated": bits_allocated,
        "bits_stored": bits_stored,
        "pixel_representation": signed,
        "photometric_interpretation": pi,
        "number_of_frames": 1,
        "planar_configuration": 0,
    }
    return Plan(encoder_syntax, pi, samples, planar, mct, native_dtype, pixel_options)


def convert(arr: np.ndarray, plan: Plan) -> np.ndarray:
    """The decoded frame in the container the target's Bits Allocated says (decoders may return 8-bit
    samples for a 16-bit container, e.g. JPEG 2000 with 8-bit precision)."""
    if arr.dtype != plan.native_dtype:
        arr = arr.astype(plan.native_dtype)
    return arr


def apply(ds: Dataset, plan: Plan, frames: int) -> None:
    """Write the image pixel attributes the re-encoded pixel data needs."""
    ds.PhotometricInterpretation = plan.photometric
    if plan.samples > 1:
        ds.PlanarConfiguration = plan.planar
    elif "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    if "NumberOfFrames" in ds or frames > 1:
        ds.NumberOfFrames = frames
