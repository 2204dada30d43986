"""Which encoders release the GIL, and which crash when two threads encode at once.

Usage: python bench/codec_threads.py [gil|ticks|crash NAME [ITERATIONS]]

`gil`: per encoder, the wall-clock time of 2*N encodes of a 512x512 12-bit frame in one thread, then in two
threads (N each): a ratio near 0.5 means the encoder runs in parallel (releases the GIL), near 1.0 that it
holds it (needs a second free core). `ticks`: how far a pure-Python counter in another thread gets while one
thread encodes for a second (an encoder that releases the GIL lets it run 2-3 times as far as one that holds
it). `crash NAME`: two threads encoding with NAME many times (run it in a subprocess: a crash kills it). Not a
test: figures for the README.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, "layers")


def frame() -> np.ndarray:
    y, x = np.mgrid[0:512, 0:512]
    rng = np.random.default_rng(1)
    arr = 2048 + 1500 * np.sin(x / 23.0) * np.cos(y / 31.0) + rng.normal(0, 20, (512, 512))
    return arr.clip(0, 4095).astype(np.uint16)


def encoders() -> dict[str, Callable[[np.ndarray], object]]:
    import imagecodecs
    import jpeg_ls
    from openjpeg import encode as encode_array
    from openjpeg import encode_pixel_data

    stream = imagecodecs.jpegls_encode(frame())
    return {
        "pyjpegls": lambda a: jpeg_ls.encode_array(a),
        "imagecodecs-jpegls": lambda a: imagecodecs.jpegls_encode(a),
        "imagecodecs-jpegls-decode": lambda a: imagecodecs.jpegls_decode(stream),
        "imagecodecs-htj2k": lambda a: imagecodecs.htj2k_encode(a, level=0, reversible=True),
        "imagecodecs-jpeg2k-1thread": lambda a: imagecodecs.jpeg2k_encode(
            a, level=0, codecformat="J2K", reversible=True, bitspersample=12, numthreads=1),
        "imagecodecs-jpeg2k-2threads": lambda a: imagecodecs.jpeg2k_encode(
            a, level=0, codecformat="J2K", reversible=True, bitspersample=12, numthreads=2),
        "imagecodecs-jpeg-lossless": lambda a: imagecodecs.jpeg8_encode(
            a, lossless=True, predictor=1, bitspersample=12),
        "imagecodecs-jpeg12": lambda a: imagecodecs.jpeg8_encode(a, level=90, bitspersample=12),
        "imagecodecs-packbits": lambda a: imagecodecs.packbits_encode(a.view(np.uint8)),
        "pylibjpeg-openjpeg-lossy": lambda a: encode_array(a, bits_stored=12, compression_ratios=[10.0]),
        "pylibjpeg-openjpeg-lossy-buffer": lambda a: encode_pixel_data(
            a.tobytes(), rows=512, columns=512, samples_per_pixel=1, bits_allocated=16, bits_stored=12,
            pixel_representation=0, photometric_interpretation=2, compression_ratios=[10.0]),
    }


def timed(fn: Callable[[np.ndarray], object], arr: np.ndarray, n: int, threads: int) -> float:
    def work() -> None:
        for _ in range(n // threads):
            fn(arr)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - start


def ticks(fn: Callable[[np.ndarray], object], arr: np.ndarray) -> tuple[int, int]:
    """(counter ticks in another thread, encodes) during one second of encoding."""
    stop = threading.Event()
    count = [0]

    def counter() -> None:
        while not stop.is_set():
            count[0] += 1

    thread = threading.Thread(target=counter)
    thread.start()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 1.0:
        fn(arr)
        n += 1
    stop.set()
    thread.join()
    return count[0], n


def main() -> int:
    arr = frame()
    if len(sys.argv) > 1 and sys.argv[1] == "ticks":
        for name, fn in encoders().items():
            fn(arr)
            counted, n = ticks(fn, arr)
            print(f"{name:32s} {counted / 1e6:6.2f} M ticks in another thread during {n} encodes (1 s)")
        return 0
    if len(sys.argv) > 2 and sys.argv[1] == "crash":
        fn = encoders()[sys.argv[2]]
        n = int(sys.argv[3]) if len(sys.argv) > 3 else 400
        timed(fn, arr, n, 2)
        print(f"{sys.argv[2]}: {n} encodes from 2 threads, no crash")
        return 0
    for name, fn in encoders().items():
        fn(arr)
        n = 2 * max(2, int(0.5 / max(timed(fn, arr, 1, 1), 1e-4)))
        one, two = timed(fn, arr, n, 1), timed(fn, arr, n, 2)
        print(f"{name:28s} {1000 * one / n:7.2f} ms/frame  2 threads / 1 thread: {two / one:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
