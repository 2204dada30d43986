"""Spool files of data sets that never reached the store: an association aborted, reset, released or
stalled in the middle of a data set, a worker killed while receiving one.

A data set stored (or refused) has its spool file removed by whoever handled it (pynetdicom after
the C-STORE handler, `gateway.store_fast`). What is left is removed here:
- when its association ends (`TRACKER.sweep()`, called by each worker every few tenths of a second):
  every file spooled by an association is recorded with it (`SpoolFile` calls `TRACKER.opened`);
- at a worker's start-up (`remove_orphans`): files named `{pid}-{n}.dcm` (`gateway.ae.SpoolFile`)
  whose process is gone — a killed worker's, found by its replacement or by the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from pacs.processes import running

log = logging.getLogger("gateway")

#: `gateway.ae.SpoolFile` names: the spooling process id, a number.
SPOOL_NAME = re.compile(r"^(\d+)-\d+\.dcm$")
#: Files recorded per association before the ones already removed are forgotten.
PRUNE_AT = 8


def owner_of(thread: threading.Thread) -> Any:
    """The association a spooling thread serves (its DUL thread, or the association's own thread),
    else the thread itself: what must have ended before its files may go."""
    return getattr(thread, "assoc", None) or thread


class SpoolTracker:
    """Spool files by the association (or thread) that spooled them."""

    def __init__(self) -> None:
        self._files: dict[Any, list[str]] = {}
        self._lock = threading.Lock()

    def opened(self, path: str) -> None:
        """A spool file was created by the current thread."""
        owner = owner_of(threading.current_thread())
        with self._lock:
            files = self._files.setdefault(owner, [])
            files.append(path)
            if len(files) > PRUNE_AT:  # a long association: forget what its handlers removed
                files[:] = [f for f in files if os.path.exists(f)]

    def sweep(self) -> int:
        """Remove the files left by associations that have ended; how many there were."""
        with self._lock:
            ended = [(o, files) for o, files in self._files.items() if not o.is_alive()]
            for owner, _ in ended:
                del self._files[owner]
        removed = 0
        for owner, files in ended:
            for path in files:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed += 1
                    log.info("removed %s, the spool file of an interrupted transfer (%s)", path,
                             getattr(owner, "name", owner))
        return removed

    def __len__(self) -> int:
        with self._lock:
            return sum(len(files) for files in self._files.values())


#: The spool files of this process.
TRACKER = SpoolTracker()


def remove_orphans(directory: Path | str) -> int:
    """Remove the spool files in `directory` whose process is gone (see the module docstring)."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            match = SPOOL_NAME.match(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            pid = int(match.group(1))
            if pid != os.getpid() and not running(pid):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    if removed:
        log.warning("removed %d spool file(s) left by stopped or killed gateway processes in %s",
                    removed, directory)
    return removed
