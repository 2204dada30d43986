"""Which codecs may run in several threads at once, and the lock of those that may not.

Measured with bench/codec_threads.py (two threads, hundreds of 512x512 frames each): pylibjpeg-openjpeg's
JPEG 2000 encoder crashes the process (SIGSEGV) when two threads encode at once; imagecodecs' OpenJPEG,
OpenJPH, CharLS, libjpeg-turbo and PackBits do not, and release the GIL while they work. pylibjpeg-openjpeg
codes JPEG 2000 lossy (.91) here, and every JPEG 2000 / HTJ2K syntax when imagecodecs is missing: only those
calls take the lock, decoding as well (the same library), so that transcodes otherwise run side by side.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext

from pydicom import uid as u

from pacs.codecs.plugins import PLUGIN

#: Held while pylibjpeg-openjpeg decodes or encodes.
OPENJPEG = threading.Lock()

_OPENJPEG_SYNTAXES = frozenset(
    {u.JPEG2000Lossless, u.JPEG2000, u.HTJ2KLossless, u.HTJ2KLosslessRPCL, u.HTJ2K})
_NO_LOCK: AbstractContextManager[None] = nullcontext()


def guard(syntax: str, plugin: str) -> AbstractContextManager[object]:
    """What to hold while `plugin` ("" when pydicom picks one) codes a frame of `syntax`: OPENJPEG for
    pylibjpeg-openjpeg's syntaxes unless imagecodecs does the work, else nothing."""
    if syntax in _OPENJPEG_SYNTAXES and plugin != PLUGIN:
        return OPENJPEG
    return _NO_LOCK


#: Threads per pool (one per core this process may use), and how many tasks one caller keeps in flight.
WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
AHEAD = 2 * WORKERS


class LazyPool:
    """A pool of WORKERS threads made on first use. Each purpose has its own (a task running in one pool
    may wait on tasks of another: one shared pool could deadlock)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._guard = threading.Lock()

    def __call__(self) -> ThreadPoolExecutor:
        with self._guard:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix=self.name)
            return self._pool


#: The frames of a multi-frame data set encoded side by side.
pool = LazyPool("codecs")
