"""prometheus-client's multiprocess mode for the process tree of `pacs up`.

The supervisor (which runs the indexer), the gateway's forked workers and the web server each write
their metrics to memory-mapped files (`{type}_{pid}.db`) in one directory under the data directory,
emptied at start-up; the web process merges them all at /metrics (`registry()`). The directory
reaches the children through `PROMETHEUS_MULTIPROC_DIR`, which prometheus-client reads when it is
imported; `prepare` also switches the supervisor, which imported it before it knew the directory.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import values as _values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

log = logging.getLogger("pacs.monitoring")

ENV = "PROMETHEUS_MULTIPROC_DIR"


#: This process's id, kept current across forks: prometheus-client asks for it at every write, and
#: `os.getpid` is a system call each time.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def current_pid() -> int:
    return _pid


def use_files_if_configured() -> None:
    """In multiprocess mode, metrics made from now on write to `{type}_{pid}.db` files, the pid from
    `current_pid`. Called before the first metric is made (`pacs.monitoring.metrics`)."""
    if os.environ.get(ENV) and not getattr(_values.ValueClass, "_pacs", False):
        value_class = _values.MultiProcessValue(process_identifier=current_pid)
        value_class._pacs = True  # type: ignore[attr-defined]
        _values.ValueClass = value_class


def directory_for(data_dir: Path) -> Path:
    return data_dir / "metrics"


def prepare(directory: Path) -> Path:
    """Empty (or create) `directory` and make this process, and the children it starts with its
    environment, record metrics there. Call before the first metric is recorded."""
    from pacs.monitoring import metrics

    if metrics.get.cache_info().currsize:  # this process's own stay in memory: not served
        log.warning("metrics were made before multiprocess mode was chosen")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[ENV] = str(directory)
    use_files_if_configured()
    return directory


def enabled() -> bool:
    path = os.environ.get(ENV)
    return bool(path) and os.path.isdir(str(path))


def registry() -> CollectorRegistry:
    """What /metrics exposes: every process's files merged (multiprocess mode), else this process's."""
    if not enabled():
        return REGISTRY
    merged = CollectorRegistry()
    MultiProcessCollector(merged)
    return merged


def mark_dead(pid: int) -> None:
    """A child that exited: its live gauges (open associations, heartbeat) stop counting."""
    if enabled():
        mark_process_dead(pid)
