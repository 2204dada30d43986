"""`pacs extract FILE… -o OUT --format png|jpeg|tiff|raw [--frame N|all] [--window C,W]`: pixel data out
as images, like dcmj2pnm, through the rendered route's pipeline (`pacs.dicom.render`).

Grey: stored values → Modality LUT → VOI (`--window`, else the file's first window with its VOI LUT
Function, else its VOI LUT Sequence, else the frame's min/max) → MONOCHROME1 inverted → 8 bits.
Colour stays colour (YBR converted to RGB, palette colour through its LUTs, more than 8 bits scaled to 8).
`--raw` (png, tiff): the stored grey values themselves, no LUT or window: 16-bit when Bits Allocated is
more than 8, signed values shifted by +32768 (PNG and TIFF samples here are unsigned). `--format raw`:
each frame's decoded values as they are (little endian, no header), like dcmdump +W.

Frames: `--frame N` (1-based; default 1), `--frame all` (`+Fa`). OUT with a suffix is a file for one
input (several frames: numbered names, `out.png` → `out-0001.png`…); OUT without a suffix, or an
existing directory, is a directory: OUT/<name>.png, or OUT/<name>-0001.png… for several frames (a
directory input's tree mirrored). The format defaults to OUT's suffix, else png.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pacs.cli import files

SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff", ".raw": "raw"}
EXTENSION = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "raw": ".raw"}


def register(sub: Any) -> None:
    p = sub.add_parser("extract", prefix_chars="-+", help="write the pixel data of DICOM files as images",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, metavar="FILE", help="DICOM files or directories (walked)")
    p.add_argument("-o", "--output", dest="out", type=Path, required=True, help="output file or directory")
    p.add_argument("--format", choices=sorted(EXTENSION), default=None,
                   help="image format (default: from OUT's suffix, else png)")
    p.add_argument("--frame", "+F", dest="frame", default="1", metavar="N|all",
                   help="the frame to write (1-based), or all (default 1)")
    p.add_argument("+Fa", "--all-frames", dest="frame", action="store_const", const="all",
                   help="write every frame")
    p.add_argument("--window", default=None, metavar="C,W[,FUNCTION]",
                   help="VOI window centre and width (function linear, linear-exact or sigmoid)")
    p.add_argument("+Ww", "--set-window", dest="set_window", nargs=2, default=None, metavar=("C", "W"),
                   help="dcmj2pnm's spelling of --window C,W")
    p.add_argument("--raw", action="store_true",
                   help="png/tiff: the stored grey values, 16-bit when needed, no LUT or window")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality, 1-100 (90)")
    p.add_argument("+E", "--force", dest="force", action="store_true",
                   help="read files without the DICM prefix or file meta")
    files.add_progress_arguments(p)
    p.set_defaults(fn=cmd_extract)


def cmd_extract(args: argparse.Namespace) -> int:
    from pacs.dicom.render import BadRenderParameter, parse_window

    fmt = args.format or SUFFIXES.get(args.out.suffix.lower(), "png")
    window = None
    text = ",".join(args.set_window) if args.set_window else args.window
    try:
        window = parse_window(text) if text else None
    except BadRenderParameter as exc:
        return files.usage("extract", str(exc))
    if args.frame != "all" and (not args.frame.isdigit() or int(args.frame) < 1):
        return files.usage("extract", f"--frame {args.frame}: a frame number (1, 2…) or all")
    if args.raw and fmt not in ("png", "tiff"):
        return files.usage("extract", "--raw is for png and tiff (--format raw writes the values as "
                                      "they are)")
    if not 1 <= args.quality <= 100:
        return files.usage("extract", "--quality must be 1 to 100")
    inputs, walked = files.walk(args.paths)
    many = len(inputs) > 1 or walked
    if many and args.out.exists() and not args.out.is_dir():
        return files.usage("extract", f"{args.out} is a file: several inputs need a directory as -o")
    return files.run_each("extract", "extract", files.each(args, inputs, walked, "extract"),
                          lambda item: extract_one(item, args, fmt, window, many))


def _targets(item: files.Input, out: Path, many: bool, fmt: str, numbers: list[int]) -> list[Path]:
    """The output path of each frame number."""
    ext = EXTENSION[fmt]
    if not many and out.suffix and not out.is_dir():
        base = out
    else:
        base = files.output_path(item, out, many=True, suffix=ext)
    if len(numbers) == 1:
        return [base]
    return [base.with_name(f"{base.stem}-{n:04d}{base.suffix}") for n in numbers]


def extract_one(item: files.Input, args: argparse.Namespace, fmt: str, window: Any, many: bool) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    ds = files.read_dicom(item.path, force=args.force)
    if "PixelData" not in ds:
        raise files.InputError("no Pixel Data (7FE0,0010) to extract")
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        raise files.InputError(f"Number of Frames {ds['NumberOfFrames'].value!r} is not a number") from None
    numbers = list(range(1, frames + 1)) if args.frame == "all" else [int(args.frame)]
    if numbers[-1] > frames:
        raise files.InputError(f"frame {numbers[-1]} asked, it has {frames}")
    meta = getattr(ds, "file_meta", None)
    syntax = UID(meta.get("TransferSyntaxUID") if meta is not None and "TransferSyntaxUID" in meta
                 else "1.2.840.10008.1.2")
    try:
        decoder = get_decoder(syntax)
    except (NotImplementedError, ValueError):
        raise files.InputError(f"no decoder for {syntax.name}") from None
    if not decoder.is_available:
        raise files.InputError(f"no decoder for {syntax.name} is installed")
    for n, target in zip(numbers, _targets(item, args.out, many, fmt, numbers), strict=True):
        try:
            arr, info = decoder.as_array(ds, index=n - 1, as_rgb=True)  # type: ignore[arg-type]
        except Exception as exc:  # codec plugins raise many kinds
            raise files.InputError(f"cannot decode frame {n}: {exc}") from None
        photometric = str(info.get("photometric_interpretation", ds.get("PhotometricInterpretation", "")))
        try:
            _write(arr, ds, n, photometric, target, fmt, args, window)
        except OSError as exc:
            raise files.InputError(f"cannot write {target}: {exc.strerror or exc}") from None
        except Exception as exc:  # bad LUTs, an image Pillow cannot write
            raise files.InputError(f"cannot render frame {n}: {exc}") from None


def _write(arr: Any, ds: Any, number: int, photometric: str, target: Path, fmt: str,
           args: argparse.Namespace, window: Any) -> None:
    import numpy as np
    from PIL import Image

    from pacs.dicom.render import _colour, _grayscale, _palette, frame_attributes

    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "raw":
        target.write_bytes(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())
        return
    if arr.ndim == 2 and args.raw and photometric != "PALETTE COLOR":
        image = Image.fromarray(_unsigned(arr, int(ds.get("BitsAllocated", 8))))
    elif arr.ndim == 2 and photometric == "PALETTE COLOR":
        image = Image.fromarray(_palette(arr, ds))
    elif arr.ndim == 2:
        image = Image.fromarray(_grayscale(arr, frame_attributes(ds, number), photometric, window))
    else:
        image = Image.fromarray(_colour(arr, int(ds.get("BitsStored", 8))))
    if fmt == "jpeg":
        image.save(target, format="JPEG", quality=args.quality)
    else:
        image.save(target, format="PNG" if fmt == "png" else "TIFF")


def _unsigned(arr: Any, bits_allocated: int) -> Any:
    """Stored grey values as unsigned 8 or 16-bit samples (signed ones shifted by +32768 or +128)."""
    import numpy as np

    if bits_allocated <= 8:
        return (arr.astype(np.int16) + 128).astype(np.uint8) if arr.dtype.kind == "i" \
            else arr.astype(np.uint8)
    if arr.dtype.kind == "i":
        return (arr.astype(np.int32) + 32768).astype(np.uint16)
    return arr.astype(np.uint16)
