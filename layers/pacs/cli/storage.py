"""Opening storage for a `pacs` command: the data directory is checked first, and every failure is
one line naming the path (a `SystemExit`, exit status 1), never a traceback.

Only `pacs up` and `pacs nodes add` (with `--data-dir` or `PACS_DATA_DIR`) create a data directory;
the other commands read an existing one, and none of them silently falls back to an empty
`./pacs-data` when it does not exist.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
from pathlib import Path

from pacs.backends import Backend, open_backend
from pacs.config import Settings


def explicit_data_dir(args: argparse.Namespace, environ: dict[str, str] | None = None) -> bool:
    """The data directory was chosen: `--data-dir` or `PACS_DATA_DIR`, not the default ./pacs-data."""
    env = os.environ if environ is None else environ
    return getattr(args, "data_dir", None) is not None or bool(env.get("PACS_DATA_DIR"))


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def check_data_dir(path: Path) -> None:
    """Create `path` if missing and prove a file can be written there; SystemExit naming it if not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".pacs-write-check-"):
            pass
    except OSError as exc:
        raise SystemExit(f"pacs: cannot use the data directory {path.resolve()}: {_reason(exc)}") from None


def describe(settings: Settings) -> str:
    """Where this backend keeps the catalog: the SQLite file, or the DynamoDB table."""
    if settings.backend == "embedded":
        return f"{(settings.data_dir / 'catalog.db').resolve()}"
    return f"the DynamoDB table {settings.table}"


def open_storage(args: argparse.Namespace, settings: Settings, *, create: bool = False) -> Backend:
    """The backend of a command. Embedded: the data directory must exist unless `create` (and then
    only when it was chosen explicitly); a missing default one is refused with a hint."""
    if settings.backend == "embedded":
        path = settings.data_dir
        if not path.is_dir():
            if not explicit_data_dir(args):
                raise SystemExit(
                    f"pacs: no data directory: ./{path} does not exist here and PACS_DATA_DIR is not set; "
                    "pass --data-dir DIR (the directory `pacs up` uses) or run from the directory that "
                    f"holds {path}")
            if not create:
                raise SystemExit(f"pacs: no data directory {path.resolve()} (`pacs up --data-dir {path}` "
                                 "creates one)")
        check_data_dir(path)
    try:
        return open_backend(settings)
    except (OSError, sqlite3.Error) as exc:
        if settings.backend == "embedded":
            raise SystemExit(f"pacs: cannot use the data directory {settings.data_dir.resolve()}: "
                             f"{_reason(exc)}") from None
        raise SystemExit(f"pacs: cannot open the {settings.backend} backend: {_reason(exc)}") from None
    except ValueError as exc:
        raise SystemExit(f"pacs: {exc}") from None
