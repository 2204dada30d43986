"""Per-frame costs of the codec paths on one 512x512 int16 CT frame, for the codec engineer.

Usage: python bench/codecs_micro.py [--data bench/out/data/ct300] [--reps 30] [--rounds 3]
Prints ms per frame (or file) and MB/s (uncompressed pixel bytes) per path, the median of --reps calls, for
each of --rounds rounds (the range shows how busy the machine was): pydicom read/write, the registry's RLE
path (`Dataset.compress` and `pacs.codecs.transcode`), pylibjpeg-rle against a PackBits-per-byte-plane RLE
encoder on `imagecodecs.packbits_encode` (checked bit-exact through pylibjpeg-rle's decoder), pylibjpeg-rle
against `imagecodecs.dicomrle_decode`, pyjpegls against imagecodecs' JPEG-LS, pylibjpeg-openjpeg against
imagecodecs' HTJ2K decoder (OpenJPH), and `imagecodecs.htj2k_encode`. Not a peer comparison.
"""

from __future__ import annotations

import argparse
import io
import statistics
import struct
import time
from collections.abc import Callable
from pathlib import Path

import imagecodecs as ic
import numpy as np
import pydicom
from pydicom import uid as u


def packbits_rle(a: np.ndarray) -> bytes:
    """DICOM RLE (PS3.5 G) of one frame: one PackBits segment per byte plane, most significant first, every
    row encoded on its own (imagecodecs.packbits_encode of a 2-D array does that), segments padded to even."""
    b = a.view(np.uint8).reshape(a.shape[0], a.shape[1], a.itemsize)
    segs = []
    for k in range(a.itemsize - 1, -1, -1):
        s = bytes(ic.packbits_encode(np.ascontiguousarray(b[:, :, k])))
        segs.append(s + b"\0" if len(s) % 2 else s)
    offsets, o = [], 64
    for s in segs:
        offsets.append(o)
        o += len(s)
    return struct.pack("<16L", len(segs), *offsets, *[0] * (15 - len(segs))) + b"".join(segs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, default=Path(__file__).parent / "out/data/ct300")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    import jpeg_ls
    import openjpeg
    import rle
    from pacs.codecs import transcode

    src = sorted(a.data.glob("*.dcm"))[150]
    ds = pydicom.dcmread(src)
    arr = ds.pixel_array
    raw = bytes(ds.PixelData)
    rows, cols = arr.shape
    enc_rle = rle.utils.encode_pixel_data(
        raw, rows=rows, columns=cols, samples_per_pixel=1, bits_allocated=16, byteorder="<"
    )
    enc_pb = packbits_rle(arr)
    assert bytes(rle.utils.decode_frame(enc_pb, rows * cols, 16, "<")) == raw, "PackBits RLE not bit-exact"
    enc_jls = bytes(ic.jpegls_encode(arr.view(np.uint16), level=0))
    enc_ht = bytes(ic.htj2k_encode(arr, level=0))

    def compress_rle() -> None:
        d = pydicom.dcmread(src)
        d.compress(u.RLELossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)

    def transcode_rle() -> None:
        transcode(pydicom.dcmread(src), u.RLELossless)

    paths: list[tuple[str, str, Callable[[], object]]] = [
        ("pydicom dcmread (Explicit VR LE file)", "file", lambda: pydicom.dcmread(src)),
        ("pydicom save_as (to memory)", "file", lambda: ds.save_as(io.BytesIO(), enforce_file_format=True)),
        ("dcmread + Dataset.compress(RLE, pylibjpeg)", "file", compress_rle),
        ("dcmread + pacs.codecs.transcode(RLE)", "file", transcode_rle),
        (
            "RLE encode: pylibjpeg-rle",
            "frame",
            lambda: rle.utils.encode_pixel_data(
                raw, rows=rows, columns=cols, samples_per_pixel=1, bits_allocated=16, byteorder="<"
            ),
        ),
        ("RLE encode: imagecodecs.packbits_encode per plane", "frame", lambda: packbits_rle(arr)),
        ("RLE decode: pylibjpeg-rle", "frame", lambda: rle.utils.decode_frame(enc_rle, rows * cols, 16, "<")),
        ("RLE decode: imagecodecs.dicomrle_decode", "frame", lambda: ic.dicomrle_decode(enc_rle, "<i2")),
        (
            "JPEG-LS encode: pyjpegls",
            "frame",
            lambda: jpeg_ls.encode_array(arr.view(np.uint16), lossy_error=0),
        ),
        ("JPEG-LS encode: imagecodecs", "frame", lambda: ic.jpegls_encode(arr.view(np.uint16), level=0)),
        ("JPEG-LS decode: pyjpegls", "frame", lambda: jpeg_ls.decode_buffer(enc_jls)),
        ("JPEG-LS decode: imagecodecs", "frame", lambda: ic.jpegls_decode(enc_jls)),
        ("HTJ2K encode: imagecodecs (OpenJPH)", "frame", lambda: ic.htj2k_encode(arr, level=0)),
        ("HTJ2K decode: pylibjpeg-openjpeg", "frame", lambda: openjpeg.decode(enc_ht)),
        ("HTJ2K decode: imagecodecs (OpenJPH)", "frame", lambda: ic.htj2k_decode(enc_ht)),
    ]
    print(f"PackBits RLE: {len(enc_pb)} bytes, pylibjpeg-rle: {len(enc_rle)} bytes (bit-exact round trip)")
    results: dict[str, list[float]] = {name: [] for name, _, _ in paths}
    for _ in range(a.rounds):
        for name, _, fn in paths:
            fn()
            xs = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                fn()
                xs.append(time.perf_counter() - t0)
            results[name].append(statistics.median(xs) * 1000)
    print("| path | per | ms (median of rounds; range) | MB/s |\n|---|---|---|---|")
    for name, per, _ in paths:
        v = results[name]
        med = statistics.median(v)
        print(f"| {name} | {per} | {med:.2f} ({min(v):.2f}–{max(v):.2f}) | {len(raw) / med / 1e3:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
