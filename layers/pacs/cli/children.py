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
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
