"""Child processes that do not outlive their parent (Linux `PR_SET_PDEATHSIG`)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

_PR_SET_PDEATHSIG = 1
#: Set by `pacs up` in its children's environment: the supervisor's pid (`follow_parent`).
PARENT_PID = "PACS_PARENT_PID"


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (even by SIGKILL).

    Called first thing in a child (`follow_parent`, pool initialisers) and right after `fork()` (the
    gateway's workers): a killed `pacs up` leaves no worker holding the DICOM or HTTP port. A no-op
    where prctl is unavailable.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def follow_parent() -> None:
    """In a child `pacs up` started (PACS_PARENT_PID in its environment): die with it, and exit at once
    when it is already gone. Done by the child itself, first thing, rather than in a `preexec_fn`: code
    run between `fork()` and `exec()` in a process with threads (the workers' supervisors) can hang on
    a lock another thread held at the fork."""
    parent = os.environ.get(PARENT_PID, "")
    if not parent.isdigit():
        return
    die_with_parent()
    if os.getppid() != int(parent):  # the parent died before prctl: nobody would signal this one
        raise SystemExit(f"the parent {parent} is gone")


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return None if name is None else ctypes.CDLL(name, use_errno=True)


#: Found once, at import: `find_library` runs a subprocess, which the gateway's freshly forked workers
#: should not have to do.
_LIBC = _libc()
