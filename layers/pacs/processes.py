"""Facts about other processes of this machine (gateway workers, spooling processes)."""

from __future__ import annotations

import os


def running(pid: int) -> bool:
    """Whether a process with this id exists (one of another user's counts: it cannot be signalled)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
