"""Child processes that do not outlive their parent (Linux `PR_SET_PDEATHSIG`)."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (even by SIGKILL).

    Used as `preexec_fn` and right after `fork()`: a killed `pacs up` leaves no worker holding the
    DICOM or HTTP port. A no-op where prctl is unavailable.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return None if name is None else ctypes.CDLL(name, use_errno=True)


#: Found once, at import, in the parent: `find_library` runs a subprocess and imports, which a
#: `preexec_fn` (after `fork()` in a process with threads: the transcoder's, the anonymizer's) must not
#: do: a lock another thread held at the fork (the import lock) would hang the child before its exec.
_LIBC = _libc()
