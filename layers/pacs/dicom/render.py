"""Render one frame to JPEG or PNG (PS3.18 8.3.5.1, PS3.4 N.2 grayscale and colour pipelines).

Grayscale: stored values → Modality LUT (Rescale Slope/Intercept or Modality LUT Sequence) → VOI
(the `window` parameter, else the instance's first Window Center/Width with its VOI LUT Function,
else its VOI LUT Sequence, else the frame's min/max) → MONOCHROME1 inverted → 8 bits.
Attributes of Enhanced objects (Shared/Per-frame Functional Groups) are used when the top level
has none. Colour: RGB as is, YBR_* converted to RGB by the decoder, PALETTE COLOR through its
LUTs; more than 8 bits scaled down. `window` applies to grayscale only.

Viewport `vw,vh[,sx,sy,sw,sh]`: the source region (default: the whole frame; a negative sw or sh
flips) is scaled to fit inside vw×vh keeping its aspect ratio, so the image is at most vw×vh and not
padded. Encoding is Pillow's (JPEG quality 1–100, default 90; PNG lossless).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, get_decoder
from pydicom.uid import ExplicitVRLittleEndian

import pacs.codecs  # noqa: F401  (registers the decoders pydicom lacks: JPEG lossless, 12-bit JPEG...)
from pacs.dicom.frames import NATIVE_SYNTAXES, FramesUnavailable, PixelLayout
from pacs.errors import PacsError

JPEG, PNG = "image/jpeg", "image/png"
RENDERED_TYPES = (JPEG, PNG)
WindowFunction = Literal["linear", "linear-exact", "sigmoid"]
DEFAULT_QUALITY = 90
THUMBNAIL_SIZE = 128
MAX_VIEWPORT = 4096  # bounds the memory of one rendering (a 4096² RGB image is 48 MiB)


class BadRenderParameter(PacsError):
    """A `window`, `viewport` or `quality` value that cannot be used (HTTP 400 naming it)."""

    http_status = 400


@dataclass(frozen=True, slots=True)
class Window:
    center: float
    width: float
    function: WindowFunction = "linear"


@dataclass(frozen=True, slots=True)
class Viewport:
    """Output bounds, and an optional source region (sx, sy, sw, sh; None parts: the defaults)."""

    width: int
    height: int
    region: tuple[int | None, int | None, int | None, int | None] | None = None


@dataclass(frozen=True, slots=True)
class RenderOptions:
    media_type: str = JPEG
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = DEFAULT_QUALITY


def _number(text: str, name: str, kind: type[float] | type[int]) -> float:
    try:
        value = kind(text.strip())
    except ValueError:
        raise BadRenderParameter(f"{name}: {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise BadRenderParameter(f"{name}: {text.strip()!r} is not a finite number")
    return value


def parse_window(text: str) -> Window:
    """`center,width[,function]` (function linear, linear-exact or sigmoid; default linear)."""
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise BadRenderParameter(f"window: {text!r} is not center,width[,function]")
    center = _number(parts[0], "window", float)
    width = _number(parts[1], "window", float)
    function = (parts[2].strip().lower() if len(parts) == 3 else "") or "linear"
    if function not in ("linear", "linear-exact", "sigmoid"):
        raise BadRenderParameter(f"window: function {function!r} is not linear, linear-exact or sigmoid")
    if width < 1 if function == "linear" else width <= 0:
        raise BadRenderParameter(f"window: width {width:g} is too small for {function}")
    return Window(center, width, function)  # type: ignore[arg-type]


def parse_viewport(text: str) -> Viewport:
    """`vw,vh` or `vw,vh,sx,sy,sw,sh` (empty source parts take their defaults)."""
    parts = text.split(",")
    if len(parts) not in (2, 6):
        raise BadRenderParameter(f"viewport: {text!r} is not vw,vh[,sx,sy,sw,sh]")
    vw, vh = (int(_number(p, "viewport", int)) for p in parts[:2])
    if not (0 < vw <= MAX_VIEWPORT and 0 < vh <= MAX_VIEWPORT):
        raise BadRenderParameter(f"viewport: vw and vh must be 1 to {MAX_VIEWPORT}")
    if len(parts) == 2:
        return Viewport(vw, vh)
    sx, sy, sw, sh = (int(_number(p, "viewport", int)) if p.strip() else None for p in parts[2:])
    if (sx is not None and sx < 0) or (sy is not None and sy < 0) or sw == 0 or sh == 0:
        raise BadRenderParameter("viewport: sx and sy must be ≥ 0, sw and sh non-zero")
    return Viewport(vw, vh, (sx, sy, sw, sh))


def parse_quality(text: str) -> int:
    quality = int(_number(text, "quality", int))
    if not 1 <= quality <= 100:
        raise BadRenderParameter(f"quality: {quality} is not 1 to 100")
    return quality


def render(layout: PixelLayout, frame: bytes, number: int, options: RenderOptions) -> bytes:
    """Frame `number` (1-based; `frame` its bytes as stored, native ones little endian) as an image."""
    pixels, photometric = decode_frame(layout, frame)
    ds = frame_attributes(layout.header, number)
    if pixels.ndim == 2:
        if photometric == "PALETTE COLOR":
            image = _palette(pixels, ds)
        else:
            image = _grayscale(pixels, ds, photometric, options.window)
    else:
        image = _colour(pixels, int(ds.get("BitsStored", layout.bits_allocated)))
    return encode(_fit(Image.fromarray(image), options.viewport), options)


def decode_frame(layout: PixelLayout, frame: bytes) -> tuple[np.ndarray, str]:
    """One frame as an array (rows, columns[, 3]) with YBR converted to RGB, and its photometric."""
    ds = layout.header
    ts = layout.transfer_syntax_uid
    native = ts in NATIVE_SYNTAXES
    try:
        decoder = get_decoder(ExplicitVRLittleEndian if native else ts)
    except (NotImplementedError, ValueError) as exc:
        raise FramesUnavailable(f"cannot render pixel data stored as {ts}: {exc}") from None
    if not decoder.is_available:
        raise FramesUnavailable(f"cannot render pixel data stored as {ts}: no decoder is installed")
    options: dict[str, Any] = {
        "as_rgb": True,
        "rows": layout.rows,
        "columns": layout.columns,
        "samples_per_pixel": layout.samples_per_pixel,
        "bits_allocated": layout.bits_allocated,
        "bits_stored": int(ds.get("BitsStored", layout.bits_allocated)),
        "pixel_representation": int(ds.get("PixelRepresentation", 0)),
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "MONOCHROME2")),
        "planar_configuration": int(ds.get("PlanarConfiguration", 0)),
        "number_of_frames": 1,
        "pixel_keyword": "PixelData",
    }
    try:
        arr, meta = decoder.as_array(frame if native else encapsulate([frame]), index=0, **options)
    except Exception as exc:  # codec plugins raise many kinds
        raise FramesUnavailable(f"cannot decode the frame: {exc}") from exc
    return arr, str(meta.get("photometric_interpretation", ds.get("PhotometricInterpretation", "")))


def frame_attributes(ds: Dataset, number: int) -> Dataset:
    """The header with the pixel value transformation and VOI of frame `number` at the top level,
    taken from the Per-frame then Shared Functional Groups when the top level lacks them."""
    if "RescaleSlope" in ds or "WindowCenter" in ds or "ModalityLUTSequence" in ds:
        return ds
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and len(per_frame) >= number:
        groups.append(per_frame[number - 1])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    found = Dataset()
    for group in groups:
        for seq in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            if seq in group and group[seq].value:
                for elem in group[seq].value[0]:
                    if elem.keyword not in found:
                        found.add(elem)
    if not len(found):
        return ds
    merged = Dataset()
    merged.update(ds)
    merged.update(found)
    return merged


def _grayscale(pixels: np.ndarray, ds: Dataset, photometric: str, window: Window | None) -> np.ndarray:
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        window = _own_window(ds)
    if window is not None:
        out = apply_window(values, window)
    elif ds.get("VOILUTSequence"):
        lut = ds.VOILUTSequence[0]
        bits = int(lut.LUTDescriptor[2]) or 16
        out = apply_voi(np.rint(values).astype(np.int64), ds) / float((1 << bits) - 1)  # LUTs index integers
    else:
        low, high = float(values.min()), float(values.max())
        out = (values - low) / (high - low) if high > low else np.zeros_like(values)
    out = np.clip(out, 0.0, 1.0)
    if photometric == "MONOCHROME1":
        out = 1.0 - out
    return np.rint(out * 255).astype(np.uint8)


def _own_window(ds: Dataset) -> Window | None:
    def first(value: object) -> float:
        return float(value[0] if isinstance(value, MultiValue | list | tuple) else value)  # type: ignore[arg-type]

    try:
        center, width = first(ds.WindowCenter), first(ds.WindowWidth)
    except (TypeError, ValueError, IndexError):
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR")).strip().lower().replace("_", "-")
    if function not in ("linear", "linear-exact", "sigmoid"):
        function = "linear"
    if width < 1 if function == "linear" else width <= 0:
        return None
    return Window(center, width, function)  # type: ignore[arg-type]


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2-3: values through a VOI window, as fractions 0..1 of the output range."""
    c, w = window.center, window.width
    if window.function == "sigmoid":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    if window.function == "linear-exact":
        return np.clip((values - c) / w + 0.5, 0.0, 1.0)
    # linear: ≤ c - 0.5 - (w-1)/2 → 0, > c - 0.5 + (w-1)/2 → 1, else ((x - (c-0.5)) / (w-1) + 0.5)
    if w == 1:
        return (values > c - 0.5).astype(np.float64)
    return np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)


def _palette(pixels: np.ndarray, ds: Dataset) -> np.ndarray:
    try:
        rgb = apply_color_lut(pixels, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    except Exception as exc:  # missing or malformed LUTs
        raise FramesUnavailable(f"cannot apply the palette colour lookup tables: {exc}") from exc
    return _colour(rgb, bits if bits in (8, 16) else 16)


def _colour(pixels: np.ndarray, bits: int) -> np.ndarray:
    if pixels.dtype == np.uint8 and bits <= 8:
        return pixels
    top = float((1 << max(bits, 1)) - 1)
    return np.rint(np.clip(pixels.astype(np.float64) / top, 0.0, 1.0) * 255).astype(np.uint8)


def _fit(image: Image.Image, viewport: Viewport | None) -> Image.Image:
    if viewport is None:
        return image
    if viewport.region is not None:
        image = _crop(image, viewport.region)
    w, h = image.size
    scale = min(viewport.width / w, viewport.height / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)


def _crop(image: Image.Image, region: tuple[int | None, int | None, int | None, int | None]) -> Image.Image:
    sx, sy, sw, sh = region
    cols, rows = image.size
    x0, y0 = sx or 0, sy or 0
    if x0 >= cols or y0 >= rows:
        raise BadRenderParameter(f"viewport: sx,sy ({x0},{y0}) is outside the {cols}×{rows} image")
    width = cols - x0 if sw is None else abs(sw)
    height = rows - y0 if sh is None else abs(sh)
    image = image.crop((x0, y0, min(cols, x0 + width), min(rows, y0 + height)))
    if sw is not None and sw < 0:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if sh is not None and sh < 0:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return image


def encode(image: Image.Image, options: RenderOptions) -> bytes:
    """The image as JPEG (with `options.quality`) or PNG."""
    buf = io.BytesIO()
    if options.media_type == PNG:
        image.save(buf, format="PNG")
    else:
        image.save(buf, format="JPEG", quality=options.quality)
    return buf.getvalue()
