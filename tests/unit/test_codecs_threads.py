"""Transcodes from several threads at once: pylibjpeg-openjpeg (JPEG 2000 lossy) crashes the process without
its lock (pacs.codecs.threads; `bench/codec_threads.py crash pylibjpeg-openjpeg-lossy` shows the crash, which
needs many encodes to happen), the other codecs run side by side. In a subprocess, so that a segfault fails
the test instead of killing pytest."""

from __future__ import annotations

import subprocess
import sys

from pacs.codecs.threads import OPENJPEG, guard
from pydicom import uid as u

CONCURRENT = """
import sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np
from pydicom import uid as u
from pacs.codecs import EncodeOptions, samples, transcode
from pacs.codecs.proof import part10, pixels

LOSSY_J2K = (u.JPEG2000, EncodeOptions(ratio=10))  # pylibjpeg-openjpeg: one job in two
JOBS = [LOSSY_J2K, (u.JPEG2000Lossless, None), LOSSY_J2K, (u.JPEGLSLossless, None), LOSSY_J2K,
        (u.HTJ2KLossless, None), LOSSY_J2K, (u.RLELossless, None), LOSSY_J2K,
        (u.JPEGExtended12Bit, EncodeOptions(quality=80))]
reference = {ts: pixels(part10(transcode(samples.dataset("mono12", frames=1, rows=512, columns=512), ts, o)), raw=True)
             for ts, o in JOBS}

def one(i):
    ts, options = JOBS[i % len(JOBS)]
    ds = part10(transcode(samples.dataset("mono12", frames=1, rows=512, columns=512), ts, options))
    return ts, pixels(ds, raw=True)

with ThreadPoolExecutor(4) as pool:
    for ts, arr in pool.map(one, range(int(sys.argv[1]))):
        assert np.array_equal(arr, reference[ts]), ts  # deterministic encoders: the same pixels every time
print("ok")
"""


def test_transcodes_from_several_threads_do_not_crash() -> None:
    result = subprocess.run([sys.executable, "-c", CONCURRENT, "60"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode, result.stderr[-2000:])


def test_only_pylibjpeg_openjpeg_takes_the_lock() -> None:
    assert guard(u.JPEG2000, "pylibjpeg") is OPENJPEG
    assert guard(u.HTJ2KLossless, "") is OPENJPEG  # imagecodecs missing: pydicom picks pylibjpeg-openjpeg
    assert guard(u.JPEG2000Lossless, "imagecodecs") is not OPENJPEG
    assert guard(u.JPEGLSLossless, "imagecodecs") is not OPENJPEG
    assert guard(u.JPEGLSLossless, "pyjpegls") is not OPENJPEG


def test_frames_encoded_side_by_side_keep_their_order() -> None:
    """Several frames are encoded by the codec pool (at most AHEAD in flight): the same streams, in order, as
    one frame at a time."""
    import numpy as np
    from pacs.codecs import EncodeOptions, samples, transcode
    from pacs.codecs.proof import part10, pixels
    from pydicom.encaps import generate_frames

    for ts in (u.JPEGLSLossless, u.HTJ2KLossless, u.JPEG2000):
        options = EncodeOptions(ratio=10) if ts == u.JPEG2000 else None
        original = samples.dataset("mono16s", frames=13)
        ds = part10(transcode(samples.dataset("mono16s", frames=13), ts, options, new_uid=False))
        frames = list(generate_frames(ds.PixelData, number_of_frames=13))
        for index in (0, 5, 12):  # each frame alone: the same stream
            single = samples.dataset("mono16s", frames=1)
            single.PixelData = pixels(original, raw=True)[index].tobytes()
            alone = part10(transcode(single, ts, options, new_uid=False))
            assert next(generate_frames(alone.PixelData, number_of_frames=1)) == frames[index], (ts, index)
        if options is None:
            np.testing.assert_array_equal(pixels(ds, raw=True), pixels(original, raw=True))
