"""A data set re-encoded in another transfer syntax, in place.

Frame by frame: each frame is decoded by the registry's chosen decoder, converted only where the target
requires it (photometric.py), encoded by the chosen encoder, then encapsulated with a Basic Offset Table (an
Extended Offset Table past 4 GiB of fragments, or when asked). Lossy steps are recorded (lossy.py) and a lossy
encoding makes a new SOP Instance UID unless the caller says otherwise (`new_uid`, see the README's
"Transfer syntaxes" section for what each path does).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames, get_frame
from pydicom.pixels import get_decoder, get_encoder
from pydicom.uid import HTJ2K as HTJ2K_LOSSY
from pydicom.uid import JPEG2000 as J2K_LOSSY
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
)

from pacs.codecs import lossy, photometric, plugins, threads
from pacs.codecs.plugins import PLUGIN
from pacs.codecs.registry import NATIVE, can_decode, can_encode, decoder_plugin, encoder_plugin
from pacs.codecs.streams import jpeg_header
from pacs.codecs.syntaxes import SYNTAXES
from pacs.codecs.threads import guard

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_EOT_TAGS = (0x7FE00001, 0x7FE00002)
#: PS3.5 A.4: a Basic Offset Table holds 32-bit offsets.
_BOT_LIMIT = 2**32 - 1


class TranscodeError(Exception):
    """The instance cannot be re-encoded in the syntax asked (no codec, corrupt pixel data...)."""


@dataclass(frozen=True, slots=True)
class EncodeOptions:
    """How lossy an encoding may be. The default is lossless wherever the syntax allows it: JPEG 2000 (.91),
    HTJ2K (.203) and JPEG-LS near-lossless (.81) are then written reversibly (NEAR=0); only JPEG Baseline and
    Extended are always lossy (quality 90 unless asked)."""

    #: JPEG Baseline / Extended quality (1-100).
    quality: int | None = None
    #: JPEG-LS near-lossless NEAR (maximum absolute error per sample).
    near_lossless: int | None = None
    #: JPEG 2000 / HTJ2K lossy: the compression ratio asked (HTJ2K: the quantization step found for it on the
    #: first frame, so the ratio reached is close, not exact).
    ratio: float | None = None
    #: HTJ2K lossy: the quantization step itself (instead of a ratio).
    qstep: float | None = None
    #: Force an Extended Offset Table (it is always used past 4 GiB of fragments).
    extended_offsets: bool = False

    @property
    def lossy(self) -> bool:
        return any(v is not None for v in (self.quality, self.near_lossless, self.ratio, self.qstep))


def transcode(
    ds: Dataset, target: str, options: EncodeOptions | None = None, *, new_uid: bool | None = None
) -> Dataset:
    """`ds` (read from a Part 10 file, with its file meta) re-encoded for `target`, in place.

    `new_uid`: None (default) makes a new SOP Instance UID exactly when this call applies lossy compression
    (PS3.3 C.7.6.1.1.5: a lossy compressed copy of an image is a new, DERIVED image); True always, False never
    (WADO-RS answering in a lossy syntax, PS3.18 8.7.3). Raises TranscodeError when it cannot be done (no
    decoder for the source, no encoder for the target, corrupt pixel data, pixels the target cannot carry).
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
        return _finish(ds, None, new_uid)
    if not can_decode(source):
        raise TranscodeError(f"no decoder for {source.name} is installed")
    if not can_encode(target):
        raise TranscodeError(f"no encoder for {target.name} is installed")
    has_pixels = any(t in ds for t in _PIXEL_TAGS)
    if source.is_compressed and "PixelData" not in ds:
        raise TranscodeError(f"{source.name} but no pixel data")
    if not has_pixels or "PixelData" not in ds:
        if target.is_compressed:
            raise TranscodeError(f"{target.name} needs pixel data and the instance has none")
        _resolve_elements(ds)
        _set_syntax(ds, target)
        return _finish(ds, None, new_uid)
    if not source.is_compressed and target in NATIVE:
        _native_to_native(ds, source, target)
        return _finish(ds, None, new_uid)
    if target.is_compressed and int(ds.get("BitsAllocated") or 0) not in (8, 16):
        raise TranscodeError(f"cannot encode {target.name}: Bits Allocated {ds.get('BitsAllocated')} "
                             "(the encoders here take 8 or 16)")
    try:
        step = _reencode(ds, source, target, options)
    except TranscodeError:
        raise
    except Exception as exc:  # the codecs raise many kinds: all mean "cannot do this one"
        verb = "decode the " + source.name if isinstance(exc, _DecodeFailed) else "encode " + target.name
        raise TranscodeError(f"cannot {verb} pixel data: {exc.__cause__ or exc}") from exc
    if step is not None:
        method, ratio = step
        lossy.mark(ds, method, ratio)
    return _finish(ds, step, new_uid)


def _finish(ds: Dataset, step: tuple[str, float] | None, new_uid: bool | None) -> Dataset:
    """A new instance when asked, or (by default) when this call applied lossy compression."""
    if new_uid if new_uid is not None else step is not None:
        lossy.new_instance(ds, method=step[0] if step else None)
    return ds


class _DecodeFailed(Exception):
    pass


def _frames(ds: Dataset, source: UID, as_rgb: bool) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """The frames of `ds` as arrays (rows, columns[, samples]) with their pixel properties."""
    if as_rgb and _ycbcr_jpeg(ds, source):
        yield from _jpeg_rgb_frames(ds)
        return
    decoder = get_decoder(source)
    plugin = decoder_plugin(source) if source.is_compressed else ""
    it = decoder.iter_array(ds, as_rgb=as_rgb, decoding_plugin=plugin or "")
    while True:
        try:
            with guard(source, plugin):
                arr, props = next(it)
        except StopIteration:
            return
        except Exception as exc:
            raise _DecodeFailed(str(exc)) from exc
        yield arr, props


def _ycbcr_jpeg(ds: Dataset, source: UID) -> bool:
    """8-bit YCbCr DCT JPEG colour, whose frames libjpeg-turbo turns into RGB itself (SIMD), rather than
    pydicom converting the YCbCr samples afterwards in numpy (about 10% of the decode time)."""
    if source not in (JPEGBaseline8Bit, JPEGExtended12Bit) or int(ds.get("SamplesPerPixel", 1)) != 3:
        return False
    if str(ds.get("PhotometricInterpretation", "")) not in ("YBR_FULL", "YBR_FULL_422"):
        return False
    if int(ds.get("BitsAllocated", 0)) != 8 or decoder_plugin(source) != PLUGIN:
        return False
    try:
        first = get_frame(ds.PixelData, 0, number_of_frames=int(ds.get("NumberOfFrames") or 1),
                          extended_offsets=_eot(ds))
        ids = jpeg_header(first).component_ids
    except Exception:
        return False
    return ids not in ((82, 71, 66), (114, 103, 98))  # 'RGB' / 'rgb': coded without the YCbCr transform


def _jpeg_rgb_frames(ds: Dataset) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    props: dict[str, Any] = {
        "rows": int(ds.Rows), "columns": int(ds.Columns), "samples_per_pixel": 3,
        "photometric_interpretation": "RGB", "bits_allocated": 8, "bits_stored": int(ds.get("BitsStored", 8)),
        "pixel_representation": 0, "planar_configuration": 0, "number_of_frames": 1,
    }
    frames = int(ds.get("NumberOfFrames") or 1)
    for index, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=frames)):
        if index >= frames:
            return
        try:
            arr = plugins.jpeg_to_rgb(frame)
        except Exception as exc:
            raise _DecodeFailed(str(exc)) from exc
        if arr.shape != (props["rows"], props["columns"], 3):
            raise _DecodeFailed(f"a frame of shape {arr.shape} in a {props['rows']}x{props['columns']} image")
        yield arr, props


def _reencode(ds: Dataset, source: UID, target: UID, options: EncodeOptions) -> tuple[str, float] | None:
    """Decode and encode every frame; returns (method, ratio) when this applied lossy compression."""
    lossy_source, source_size = False, 0
    if source.is_compressed:
        try:
            first = get_frame(ds.PixelData, 0, number_of_frames=int(ds.get("NumberOfFrames") or 1),
                              extended_offsets=_eot(ds))
        except Exception as exc:
            raise _DecodeFailed(str(exc)) from exc
        lossy_source = lossy.is_lossy_stream(source, first)
        source_size = len(ds.PixelData)
    bits_stored = int(ds.get("BitsStored") or ds.BitsAllocated)
    as_rgb = photometric.decode_as_rgb(source, target, bits_stored)
    plan: photometric.Plan | None = None
    encoded: list[bytes] = []
    raw_size = 0
    lossy_applied = lossy.applies(target, options)
    enc_kwargs: dict[str, Any] = {}
    native: _NativeFrames | None = None
    encoding: _Encoding | None = None
    clip = _overshoot_range(ds, source, lossy_source)
    for arr, props in _frames(ds, source, as_rgb):
        if clip is not None:
            arr = np.clip(arr, *clip)
        if plan is None:
            plan = photometric.plan(target, props, ds, options)
            enc_kwargs = _encoder_kwargs(target, plan, options, arr)
            if not target.is_compressed and _planar_view(arr):
                plan.planar = 1  # colour-by-plane as decoded (RLE): written without a transposing copy
        arr = photometric.convert(arr, plan)
        raw_size += arr.nbytes
        if target.is_compressed:
            if encoding is None:
                encoding = _Encoding(plan.encoder_syntax, enc_kwargs)
            encoding.add(arr)
            encoded.append(b"")
        else:
            if native is None:
                native = _NativeFrames(ds, arr, plan, big_endian=target == ExplicitVRBigEndian)
            native.add(arr)
            encoded.append(b"")
    if plan is None:
        raise TranscodeError("the pixel data holds no frame")
    if encoding is not None:
        encoded = encoding.frames()
    if lossy_source:  # the ratio of the stream decoded: its samples over its fragments
        lossy.mark(ds, lossy.METHODS[source], raw_size / max(source_size, 1), decoded=True)
    photometric.apply(ds, plan, len(encoded))
    for tag in _EOT_TAGS:
        if tag in ds:
            del ds[tag]
    if target.is_compressed:
        total = sum(len(f) for f in encoded) + 8 * len(encoded)
        if options.extended_offsets or total > _BOT_LIMIT:
            data, offsets, lengths = encapsulate_extended(encoded)
            ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = data, offsets, lengths
        else:
            ds.PixelData = encapsulate(encoded, has_bot=True)
        elem = ds["PixelData"]
        elem.VR, elem.is_undefined_length = "OB", True
        size = total
    else:
        assert native is not None
        ds.PixelData, size = native.value()
        elem = ds["PixelData"]
        elem.VR, elem.is_undefined_length = ("OB" if plan.native_dtype.itemsize == 1 else "OW"), False
    ds._pixel_array = None
    ds._pixel_id = {}
    if (source.is_implicit_VR, source.is_little_endian) != (target.is_implicit_VR, target.is_little_endian):
        _resolve_elements(ds)  # else the elements not parsed are written as read (about a third of the time)
    _set_syntax(ds, target)
    if not lossy_applied:
        return None
    return lossy.METHODS[target], raw_size / max(size, 1)


class _Encoding:
    """The frames of one data set encoded in order: the first here (validated by pydicom), the next ones by
    the codec pool (pacs.codecs.threads: the encoders release the GIL), at most AHEAD frames in flight."""

    def __init__(self, syntax: str, kwargs: dict[str, Any]) -> None:
        self.syntax, self.kwargs = syntax, kwargs
        self.encoder, self.plugin = get_encoder(syntax), encoder_plugin(syntax)
        self.done: list[bytes] = []
        self.pending: deque[Future[bytes]] = deque()

    def _encode(self, arr: np.ndarray, validate: bool) -> bytes:
        with guard(self.syntax, self.plugin):
            frame = self.encoder.encode(arr, encoding_plugin=self.plugin, validate=validate, **self.kwargs)
        return bytes(frame)

    def add(self, arr: np.ndarray) -> None:
        if not self.done and not self.pending:
            self.done.append(self._encode(arr, True))
            return
        self.pending.append(threads.pool().submit(self._encode, arr, False))
        while len(self.pending) > threads.AHEAD:
            self.done.append(self.pending.popleft().result())

    def frames(self) -> list[bytes]:
        while self.pending:
            self.done.append(self.pending.popleft().result())
        return self.done


def _planar_view(arr: np.ndarray) -> bool:
    """A colour frame whose samples lie plane after plane in memory (pydicom's view of RLE output)."""
    return arr.ndim == 3 and arr.shape[2] > 1 and not arr.flags.c_contiguous and arr.transpose(
        2, 0, 1).flags.c_contiguous


class _NativeFrames:
    """Decoded frames written once into the new Pixel Data value (sized from Number of Frames, grown only
    when a stream holds more), in the target's byte order, padded to even length."""

    def __init__(self, ds: Dataset, first: np.ndarray, plan: photometric.Plan, *, big_endian: bool) -> None:
        self.dtype = plan.native_dtype.newbyteorder(">") if big_endian else plan.native_dtype
        self.planar = plan.planar == 1 and first.ndim == 3
        self.shape = first.shape
        self.frame_bytes = first.size * self.dtype.itemsize
        self.expected = max(1, int(ds.get("NumberOfFrames") or 1))
        self.buffer = bytearray(self.frame_bytes * self.expected + (self.frame_bytes * self.expected) % 2)
        self.count = 0

    def add(self, arr: np.ndarray) -> None:
        if arr.shape != self.shape:
            raise TranscodeError(f"a decoded frame of shape {arr.shape}, not {self.shape}")
        if self.count == self.expected:  # more frames than Number of Frames said
            self.expected += 1
            self.buffer[self.count * self.frame_bytes:] = bytes(self.frame_bytes + 1)
        start = self.count * self.frame_bytes
        view = np.frombuffer(self.buffer, self.dtype, count=arr.size, offset=start)
        if self.planar:
            view.reshape(self.shape[2], self.shape[0], self.shape[1])[...] = arr.transpose(2, 0, 1)
        else:
            view.reshape(self.shape)[...] = arr  # byte order and container converted in the same pass
        self.count += 1

    def value(self) -> tuple[bytes, int]:
        size = self.count * self.frame_bytes
        del self.buffer[size + size % 2:]
        if size % 2:
            self.buffer[size] = 0
        return bytes(self.buffer), size


def _encoder_kwargs(
    target: UID, plan: photometric.Plan, options: EncodeOptions, arr: np.ndarray
) -> dict[str, Any]:
    """The image pixel description and the plugin options of one encoded frame."""
    kwargs: dict[str, Any] = dict(plan.pixel_options)
    if target in (JPEGBaseline8Bit, JPEGExtended12Bit):
        kwargs["jpeg_quality"] = options.quality if options.quality is not None else 90
    elif target == JPEGLSNearLossless:
        kwargs["jls_error"] = int(options.near_lossless or 0)
    elif plan.encoder_syntax == J2K_LOSSY:
        kwargs["j2k_cr"] = [float(options.ratio)] if options.ratio is not None else None
        kwargs["use_mct"] = plan.mct
    elif plan.encoder_syntax == JPEG2000Lossless:
        kwargs["use_mct"] = plan.mct
    elif target == HTJ2K_LOSSY and (options.qstep is not None or options.ratio is not None):
        qstep = options.qstep if options.qstep is not None else _qstep_for(arr, plan, options.ratio)
        kwargs["htj2k_qstep"] = qstep
    return kwargs


def _qstep_for(arr: np.ndarray, plan: photometric.Plan, ratio: float | None) -> float:
    """The HTJ2K quantization step that gives about `ratio` on this frame (bisection on a log scale)."""
    encoder = get_encoder(HTJ2K_LOSSY)
    kwargs = dict(plan.pixel_options)
    lo, hi = 1e-6, 0.5
    for _ in range(12):
        mid = (lo * hi) ** 0.5
        size = len(encoder.encode(arr, encoding_plugin=PLUGIN, validate=False, htj2k_qstep=mid, **kwargs))
        if arr.nbytes / size < float(ratio or 10):
            lo = mid
        else:
            hi = mid
    return hi


def _overshoot_range(ds: Dataset, source: UID, lossy_stream: bool) -> tuple[int, int] | None:
    """The range of Bits Stored, when lossy JPEG 2000 / HTJ2K may reconstruct samples beyond it (a codestream
    whose precision is larger than Bits Stored, as gdcm writes): clipped, rather than wrapped by pydicom's
    masking of the unused bits (a white pixel turned black)."""
    lossy_pixels = lossy_stream or ds.get("LossyImageCompression") == "01"
    if source not in (J2K_LOSSY, HTJ2K_LOSSY) or not lossy_pixels:
        return None
    bits = int(ds.get("BitsStored") or ds.BitsAllocated)
    if bits >= int(ds.BitsAllocated):
        return None
    if int(ds.get("PixelRepresentation", 0)):
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _eot(ds: Dataset) -> tuple[list[int], list[int]] | None:
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        off = np.frombuffer(ds.ExtendedOffsetTable, "<u8").tolist()
        lengths = np.frombuffer(ds.ExtendedOffsetTableLengths, "<u8").tolist()
        return off, lengths
    return None


def _native_to_native(ds: Dataset, source: UID, target: UID) -> None:
    """Re-encode the data set only; big-endian pixel data swapped to or from little endian."""
    swap = source.is_little_endian != target.is_little_endian and int(ds.get("BitsAllocated", 8)) > 8
    _resolve_elements(ds)
    if swap and "PixelData" in ds:
        itemsize = int(ds.BitsAllocated) // 8
        data = ds.PixelData
        words = np.frombuffer(data[:len(data) - len(data) % itemsize], f"u{itemsize}")
        ds.PixelData = words.byteswap().tobytes()
        ds["PixelData"].VR = "OW"
        ds._pixel_array = None
        ds._pixel_id = {}
    _set_syntax(ds, target)


def _resolve_elements(ds: Dataset) -> None:
    """Parse every element (values and VRs, from the dictionary when read implicit) so that pydicom writes
    them in the new encoding."""
    for _ in ds.iterall():
        pass


def _set_syntax(ds: Dataset, target: UID) -> None:
    ds.file_meta.TransferSyntaxUID = target
    ds.set_original_encoding(target.is_implicit_VR, target.is_little_endian, ds.original_character_set)
