"""imagecodecs (BSD-3) as pydicom decoding and encoding plugins, for what pydicom lacks or does slower.

Decoders (pydicom's public `get_decoder(uid).add_plugin`): JPEG Baseline and Extended (libjpeg-turbo 3,
which also reads 12-bit samples: pillow cannot), JPEG Lossless Process 14 and SV1 (pydicom's only decoder
for them is the GPL pylibjpeg-libjpeg, not installed), HTJ2K (OpenJPH, about 2x faster than
pylibjpeg-openjpeg here).

JPEG-LS (CharLS through `jpegls_encode` / `jpegls_decode`, which release the GIL: pyjpegls holds it, so two
threads encode no faster than one) decodes and encodes here first, pyjpegls staying pydicom's fallback.

Encoders: JPEG Baseline 8-bit and Extended 12-bit (`jpeg8_encode`), JPEG Lossless SV1
(`jpeg8_encode(lossless=True, predictor=1)`: SOF3, Ss=1 in the SOS; the same stream is valid Process 14,
.57), HTJ2K lossless, RPCL (`tlm=True`; OpenJPH always writes RPCL) and lossy (`htj2k_encode`). pydicom
3.0.2 has no Encoder object for these syntaxes, so `register()` adds them to its private
`_PIXEL_DATA_ENCODERS` table (pydicom is pinned to 3.0.2 and tests/unit/test_codecs.py checks it).

A plugin function takes one frame (`src`, little-endian samples in the smallest container for Bits Stored,
colour-by-pixel or colour-by-plane as the runner's planar configuration says) and the runner with its options.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from pydicom import uid as u
from pydicom.pixels import get_decoder
from pydicom.pixels.common import PhotometricInterpretation as PI

try:
    import imagecodecs

    HAVE_IMAGECODECS = True
except ImportError:  # a function packaged without it (82 MB, FIELD-NOTES 1d): pydicom's own plugins only
    HAVE_IMAGECODECS = False

#: The label of every plugin this module adds.
PLUGIN = "imagecodecs"

_JPEG = (u.JPEGBaseline8Bit, u.JPEGExtended12Bit, u.JPEGLossless, u.JPEGLosslessSV1)
_HTJ2K = (u.HTJ2KLossless, u.HTJ2KLosslessRPCL, u.HTJ2K)
#: JPEG 2000 through imagecodecs' OpenJPEG with its own threads (pylibjpeg-openjpeg runs one): decoding
#: and reversible encoding. Lossy JPEG 2000 stays with pylibjpeg-openjpeg (its compression-ratio option).
_J2K = (u.JPEG2000Lossless, u.JPEG2000)
_ENCODABLE = (u.JPEGBaseline8Bit, u.JPEGExtended12Bit, u.JPEGLossless, u.JPEGLosslessSV1, *_HTJ2K)
#: JPEG-LS through imagecodecs' CharLS (also images too small for pyjpegls: "destination buffer is too
#: small").
_JLS = (u.JPEGLSLossless, u.JPEGLSNearLossless)
#: RLE Lossless through imagecodecs' PackBits (the same byte code as DICOM RLE, PS3.5 G.3.1): about ten
#: times faster than pylibjpeg-rle, which itself is ten times pydicom's native encoder.
_RLE = (u.RLELossless,)

DECODER_DEPENDENCIES = {t: ("numpy", "imagecodecs") for t in (*_JPEG, *_HTJ2K, *_J2K, *_JLS)}
ENCODER_DEPENDENCIES = {t: ("numpy", "imagecodecs") for t in (*_ENCODABLE, *_JLS, *_RLE, *_J2K)}

#: Threads one JPEG 2000 frame is decoded or encoded with: the cores this process may use (at most 8).
THREADS = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def available() -> bool:
    """Whether imagecodecs is installed (the plugins of this module registered as available)."""
    return HAVE_IMAGECODECS

#: JPEG quality used when none is asked (previews).
DEFAULT_QUALITY = 90


def is_available(tsyntax: str) -> bool:
    if not HAVE_IMAGECODECS:
        return False
    if tsyntax in _HTJ2K:
        return bool(imagecodecs.HTJ2K.available)
    if tsyntax in _J2K:
        return bool(imagecodecs.JPEG2K.available)
    if tsyntax in _JLS:
        return bool(imagecodecs.JPEGLS.available)
    return bool(imagecodecs.JPEG8.available)


# -- decoding ------------------------------------------------------------------------------------------------


def _decode_frame(src: bytes, runner: Any) -> bytes:
    """One JPEG or HTJ2K frame decoded, as pydicom's DecodeRunner expects it."""
    tsyntax = runner.transfer_syntax
    if tsyntax in _JLS:
        # The samples as coded (P bits, unsigned): pydicom sign-extends them from the stream's P afterwards.
        arr = imagecodecs.jpegls_decode(src)  # colour: by pixel, whatever the interleave mode
    elif tsyntax in _HTJ2K or tsyntax in _J2K:
        if tsyntax in _HTJ2K:
            arr = imagecodecs.htj2k_decode(src, planar=False)
        else:
            arr = imagecodecs.jpeg2k_decode(src, numthreads=THREADS)
        # OpenJPH / OpenJPEG undo the multi-component transform: the samples are RGB (PS3.5 8.2.4).
        if runner.photometric_interpretation in (PI.YBR_ICT, PI.YBR_RCT):
            runner.set_option("photometric_interpretation", PI.RGB)
    elif runner.samples_per_pixel == 3 and "YBR" in runner.photometric_interpretation:
        # The YCbCr samples as coded: pydicom converts them to RGB when asked (as it does for pillow's).
        arr = imagecodecs.jpeg8_decode(src, colorspace="YCBCR", outcolorspace="YCBCR")
    else:
        arr = imagecodecs.jpeg8_decode(src)
    if runner.samples_per_pixel > 1:
        runner.set_option("planar_configuration", 0)  # both libraries give colour-by-pixel
    runner.set_option("bits_allocated", arr.dtype.itemsize * 8)
    return arr.tobytes()


def jpeg_to_rgb(frame: bytes) -> np.ndarray:
    """A YCbCr DCT JPEG frame decoded to RGB by libjpeg-turbo (rows, columns, 3)."""
    return imagecodecs.jpeg8_decode(frame, colorspace="YCBCR", outcolorspace="RGB")


# -- encoding ------------------------------------------------------------------------------------------------


def _frame_array(src: bytes, runner: Any) -> np.ndarray:
    """The frame as an array (rows, columns[, samples]), unsigned for JPEG (which has no sign)."""
    itemsize = 1 if runner.bits_stored <= 8 else 2
    signed = bool(runner.pixel_representation)
    dtype = np.dtype(f"<{'i' if signed else 'u'}{itemsize}")
    arr = np.frombuffer(src, dtype=dtype)
    spp = runner.samples_per_pixel
    if spp == 1:
        return arr.reshape(runner.rows, runner.columns)
    if runner.planar_configuration == 1:
        return arr.reshape(spp, runner.rows, runner.columns).transpose(1, 2, 0)
    return arr.reshape(runner.rows, runner.columns, spp)


def _encode_frame(src: bytes, runner: Any) -> bytes:
    """One frame encoded for the runner's transfer syntax."""
    tsyntax = runner.transfer_syntax
    arr = _frame_array(src, runner)
    if tsyntax in _HTJ2K:
        return _encode_htj2k(arr, runner)
    if tsyntax in _J2K:
        return _encode_j2k(np.ascontiguousarray(arr), runner)
    if tsyntax in _JLS:
        return _encode_jls(arr, runner)
    if tsyntax in _RLE:
        return _encode_rle(arr, runner)
    bits = runner.bits_stored
    if arr.dtype.kind == "i":  # JPEG samples are unsigned: keep the two's complement bits (PS3.5 8.2.1)
        unsigned = arr.view(arr.dtype.str.replace("i", "u"))
        arr = unsigned & np.array((1 << bits) - 1, dtype=unsigned.dtype)
    colour = runner.samples_per_pixel == 3
    if tsyntax in (u.JPEGLossless, u.JPEGLosslessSV1):  # predictor 1 is valid in Process 14 too
        # YBR_FULL samples kept as they are: no colour transform, no JFIF or Adobe marker (component ids 0-2)
        cs = "UNKNOWN" if runner.photometric_interpretation == PI.YBR_FULL else None
        return bytes(imagecodecs.jpeg8_encode(
            arr, lossless=True, predictor=1, bitspersample=bits, colorspace=cs, outcolorspace=cs))
    quality = int(runner.get_option("jpeg_quality", DEFAULT_QUALITY))
    if tsyntax == u.JPEGExtended12Bit and bits > 8:
        return bytes(imagecodecs.jpeg8_encode(np.ascontiguousarray(arr), level=quality, bitspersample=12))
    if arr.dtype.itemsize != 1:
        raise ValueError(f"{tsyntax.name} needs 8-bit samples, not {bits}-bit")
    if colour and runner.photometric_interpretation == PI.YBR_FULL_422:
        return bytes(imagecodecs.jpeg8_encode(np.ascontiguousarray(arr), level=quality, colorspace="RGB",
                                              outcolorspace="YCBCR", subsampling="422"))
    if colour:  # RGB kept RGB (Adobe marker, no colour transform)
        return bytes(imagecodecs.jpeg8_encode(np.ascontiguousarray(arr), level=quality, colorspace="RGB",
                                              outcolorspace="RGB"))
    return bytes(imagecodecs.jpeg8_encode(np.ascontiguousarray(arr), level=quality))


def _encode_htj2k(arr: np.ndarray, runner: Any) -> bytes:
    """HTJ2K: reversible 5-3 unless a quantization step is asked (lossy, .203 only); the multi-component
    transform when the target Photometric Interpretation says YBR_RCT / YBR_ICT."""
    tsyntax = runner.transfer_syntax
    qstep = runner.get_option("htj2k_qstep", None)
    if qstep is not None and tsyntax != u.HTJ2K:
        raise ValueError(f"a lossy quantization step cannot be used with {tsyntax.name}")
    mct = runner.photometric_interpretation in (PI.YBR_RCT, PI.YBR_ICT)
    kwargs: dict[str, Any] = {"tlm": tsyntax == u.HTJ2KLosslessRPCL}
    if runner.samples_per_pixel == 3:
        kwargs["rgb"] = mct
    arr = np.ascontiguousarray(arr)
    if qstep is None:
        return bytes(imagecodecs.htj2k_encode(arr, level=0, reversible=True, **kwargs))
    return bytes(imagecodecs.htj2k_encode(arr, level=float(qstep), reversible=False, **kwargs))


def _encode_rle(arr: np.ndarray, runner: Any) -> bytes:
    """PS3.5 Annex G: one segment per byte of each sample, most significant byte first, each row PackBits
    encoded on its own (packbits_encode of a 2-D array codes row by row), segments padded to even length,
    behind a 64-byte header of the segment count and offsets."""
    itemsize = max(1, runner.bits_allocated // 8)
    if arr.dtype.itemsize != itemsize:
        arr = arr.astype(f"<u{itemsize}")
    planes = arr.reshape(runner.rows, runner.columns, -1)
    as_bytes = planes.view(np.uint8).reshape(runner.rows, runner.columns, planes.shape[2], itemsize)
    segments = []
    for sample in range(planes.shape[2]):
        for byte in range(itemsize - 1, -1, -1):  # little-endian container: the last byte is the MSB
            segment = imagecodecs.packbits_encode(np.ascontiguousarray(as_bytes[:, :, sample, byte]))
            segments.append(segment + b"\0" * (len(segment) % 2))
    if len(segments) > 15:
        raise ValueError(f"RLE holds at most 15 segments, not {len(segments)}")
    offsets, position = [], 64
    for segment in segments:
        offsets.append(position)
        position += len(segment)
    header = np.zeros(16, "<u4")
    header[0], header[1:1 + len(offsets)] = len(segments), offsets
    return header.tobytes() + b"".join(segments)


def _encode_j2k(arr: np.ndarray, runner: Any) -> bytes:
    """Reversible JPEG 2000 (5-3 wavelet; 6 resolutions, fewer for an image under 32 pixels a side), the
    reversible colour transform only when the target is YBR_RCT."""
    if runner.get_option("j2k_cr") or runner.get_option("j2k_psnr"):
        raise ValueError("lossy JPEG 2000 is encoded by pylibjpeg-openjpeg")
    levels = min(6, int(np.log2(max(1, min(runner.rows, runner.columns)))) + 1)
    mct = runner.samples_per_pixel == 3 and runner.photometric_interpretation == PI.YBR_RCT
    return bytes(imagecodecs.jpeg2k_encode(
        arr, level=0, codecformat="J2K", reversible=True, resolutions=levels,
        bitspersample=runner.bits_stored, mct=mct, numthreads=THREADS))


def _encode_jls(arr: np.ndarray, runner: Any) -> bytes:
    """JPEG-LS, NEAR = the `jls_error` option (0: lossless). CharLS here codes P = the container's bits (8 or
    16), not Bits Stored: signed samples are coded as their two's complement bits in the container, which
    every decoder gives back as they were (pydicom sign-extends from P, i.e. nothing to do; dcmtk and gdcm
    return the bits). pyjpegls masks them to Bits Stored and codes P = Bits Stored, which this API cannot set.
    Colour is coded sample-interleaved (ILV 2) whatever the planar configuration of the source."""
    near = int(runner.get_option("jls_error", 0) or 0)
    if near and runner.transfer_syntax == u.JPEGLSLossless:
        raise ValueError(f"a 'jls_error' of {near} with JPEG-LS Lossless: use JPEG-LS Near Lossless")
    if arr.dtype.kind == "i":
        arr = arr.view(arr.dtype.str.replace("i", "u"))
    maximum = (1 << (8 * arr.dtype.itemsize)) - 1
    if not 0 <= near <= maximum // 2:
        raise ValueError(f"a 'jls_error' of {near} for {8 * arr.dtype.itemsize}-bit samples")
    return _without_spiff(imagecodecs.jpegls_encode(np.ascontiguousarray(arr), level=near))


def _without_spiff(stream: bytes | bytearray) -> bytes:
    """The JPEG-LS stream without the SPIFF header CharLS writes behind the SOI (APP8 segments: the header,
    then the end-of-directory entry, whose 8 bytes end with the SOI of the stream proper)."""
    pos = 2
    while stream[pos:pos + 2] == b"\xff\xe8":
        pos += 2 + int.from_bytes(stream[pos + 2:pos + 4], "big")
    if pos == 2:
        return bytes(stream)
    if stream[pos - 2:pos] != b"\xff\xd8":
        raise ValueError("unexpected SPIFF directory in the JPEG-LS stream")
    return b"".join((b"\xff\xd8", memoryview(stream)[pos:]))  # one copy


# -- registration --------------------------------------------------------------------------------------------

_registered = False


def register() -> None:
    """Add the plugins to pydicom's decoders and encoders, first in line (idempotent; not thread-safe, so the
    registry calls it once at import)."""
    global _registered
    if _registered:
        return
    from pydicom.pixels.encoders.base import _PIXEL_DATA_ENCODERS, ENCODING_PROFILES, Encoder

    # PS3.5 8.2.4 / 8.2.14: HTJ2K carries what JPEG 2000 carries (lossless-only ones as .90, .203 as .91).
    ENCODING_PROFILES.setdefault(u.HTJ2KLossless, ENCODING_PROFILES[u.JPEG2000Lossless])
    ENCODING_PROFILES.setdefault(u.HTJ2KLosslessRPCL, ENCODING_PROFILES[u.JPEG2000Lossless])
    ENCODING_PROFILES.setdefault(u.HTJ2K, ENCODING_PROFILES[u.JPEG2000])

    for tsyntax in (*_JPEG, *_HTJ2K, *_J2K, *_JLS):
        decoder = get_decoder(tsyntax)
        if PLUGIN not in decoder.available_plugins:
            decoder.add_plugin(PLUGIN, (__name__, "_decode_frame"))
        _first(decoder._available, PLUGIN)
    for tsyntax in (*_ENCODABLE, *_JLS, *_RLE, *_J2K):
        if tsyntax not in _PIXEL_DATA_ENCODERS:
            _PIXEL_DATA_ENCODERS[tsyntax] = (Encoder(tsyntax), "pacs")
        encoder = _PIXEL_DATA_ENCODERS[tsyntax][0]
        if PLUGIN not in encoder.available_plugins:
            encoder.add_plugin(PLUGIN, (__name__, "_encode_frame"))
    _registered = True


def _first(plugins: dict[str, Any], name: str) -> None:
    """Move `name` to the front of a plugin table (tried first when no plugin is named)."""
    if name in plugins:
        value = plugins.pop(name)
        rest = dict(plugins)
        plugins.clear()
        plugins[name] = value
        plugins.update(rest)
