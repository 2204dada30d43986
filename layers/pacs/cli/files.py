"""What the file tools (`pacs dump|info|convert|extract|import-image`) share: walking the inputs (files,
and directory trees recursively, in a stable order), where an output goes, the one-line error of an
input that cannot be used, reading DICOM files, writing Part 10 files, and the progress bar.

The progress bar is drawn on stderr (never on stdout: piped output stays clean) when stderr is a
terminal, or when a directory tree was walked and holds several files (then, on a pipe, rich writes
its final state once, without escape codes); `--progress`/`--no-progress` force it either way.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

#: Exit statuses of the file tools.
OK, FAILED, USAGE = 0, 1, 2


class InputError(Exception):
    """One input (or its output) cannot be processed: the reason, printed on one line."""


@dataclass(frozen=True, slots=True)
class Input:
    """A file to process, and where it was found: `relative` is its path under the directory named on
    the command line (None for a file named directly)."""

    path: Path
    relative: Path | None = None


def add_progress_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_const", const=True, default=None,
                       help="always draw the progress bar (on stderr)")
    group.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                       help="never draw the progress bar")


def walk(paths: list[Path]) -> tuple[list[Input], bool]:
    """The files named and those under the directories named (recursively, sorted); and whether a
    directory was walked. A name that does not exist is kept: it fails alone, with its reason."""
    inputs: list[Input] = []
    walked = False
    for path in paths:
        if path.is_dir():
            walked = True
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            inputs += [Input(p, p.relative_to(path)) for p in found]
        else:
            inputs.append(Input(path))
    return inputs, walked


def quiet() -> None:
    """The log records of pydicom and its codec plugins off (an ERROR with a traceback for each plugin that
    fails): each input's failure is the tool's one line. Kept when PACS_LOG_LEVEL=DEBUG."""
    import logging

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("pydicom", "openjpeg", "pylibjpeg", "libjpeg", "jpeg_ls", "imagecodecs", "PIL"):
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def error(tool: str, path: Path | str, reason: object) -> None:
    """`pacs TOOL: PATH: reason` on stderr, on one line (a traceback some messages embed is left out)."""
    text = str(reason).split("Traceback (most recent call last)")[0]
    text = " ".join(text.split()) or type(reason).__name__
    print(f"pacs {tool}: {path}: {text}", file=sys.stderr, flush=True)


def usage(tool: str, message: str) -> int:
    print(f"pacs {tool}: {message}", file=sys.stderr, flush=True)
    return USAGE


def read_dicom(path: Path, *, force: bool = False, stop_before_pixels: bool = False) -> Dataset:
    """A DICOM file read with pydicom; InputError with a short reason when it cannot be."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    if not path.exists():
        raise InputError("no such file")
    if path.is_dir():
        raise InputError("is a directory")
    try:
        ds = dcmread(path, force=force, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise InputError("not a DICOM file (no DICM prefix; --force reads it anyway)") from None
    except OSError as exc:
        raise InputError(exc.strerror or str(exc)) from None
    except Exception as exc:  # a truncated or corrupt file: pydicom raises many kinds
        raise InputError(f"cannot read it as DICOM: {exc}") from None
    if force and not len(ds) and not len(getattr(ds, "file_meta", ()) or ()):
        raise InputError("not a DICOM file (nothing could be read from it)")
    return ds


def write_part10(ds: Dataset, out: Path) -> None:
    """`ds` written as a Part 10 file (zero preamble) at `out`, atomically: a temporary file in the same
    directory renamed over it, so that an input named as its own output is never half written."""
    from pydicom import dcmwrite

    out.parent.mkdir(parents=True, exist_ok=True)
    ds.preamble = b"\0" * 128
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fp:
            dcmwrite(fp, ds, enforce_file_format=True)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def output_path(item: Input, out: Path, *, many: bool, suffix: str | None = None) -> Path:
    """Where the output of `item` goes: `out` itself for one input file (unless `out` is an existing
    directory), else under `out`, mirroring the tree of a directory input. `suffix` replaces the
    file's own (None: kept)."""
    if not many and not out.is_dir():
        return out
    rel = item.relative if item.relative is not None else Path(item.path.name)
    return out / (rel.with_suffix(suffix) if suffix is not None else rel)


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


class Bar:
    """A rich progress bar on stderr over `total` items (a no-op when not shown)."""

    def __init__(self, label: str, total: int, *, shown: bool) -> None:
        self.progress: Any = None
        if not shown:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, redirect_stdout=False)
        self.task = self.progress.add_task(label, total=total)

    def __enter__(self) -> Bar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)


def progress_shown(args: argparse.Namespace, walked: bool, count: int, *, prints: bool = False) -> bool:
    """Whether to draw the bar: forced by a flag, else on a terminal or for a walked tree of several
    files; never over a report printed to a terminal (`prints`: the tool writes its report to stdout)."""
    if args.progress is not None:
        return bool(args.progress)
    if prints and sys.stdout.isatty():
        return False
    return sys.stderr.isatty() or (walked and count > 1)


def each(args: argparse.Namespace, inputs: list[Input], walked: bool, label: str, *,
         prints: bool = False) -> Iterator[Input]:
    """The inputs, one by one, under the progress bar when it is shown."""
    quiet()
    shown = progress_shown(args, walked, len(inputs), prints=prints)
    with Bar(label, len(inputs), shown=shown) as bar:
        for item in inputs:
            yield item
            bar.advance()


def run_each(tool: str, verb: str, items: Iterable[Input], work: Callable[[Input], object]) -> int:
    """`work` on every input; an input that fails is reported on one line (`cannot VERB it: …`) and the
    others go on. OK, or FAILED when any failed."""
    failed = 0
    for item in items:
        try:
            work(item)
        except InputError as exc:
            error(tool, item.path, exc)
            failed += 1
        except Exception as exc:  # a value pydicom cannot decode, a codec's own error
            error(tool, item.path, f"cannot {verb} it: {exc}")
            failed += 1
    return FAILED if failed else OK
