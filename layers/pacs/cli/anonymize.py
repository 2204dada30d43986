"""`pacs anonymize IN… -o OUT [--profile P] [--option OPT]… [--project P] [--pixel-rules F] [--crosswalk]`:
DICOM files and trees de-identified (PS3.15 Annex E, `pacs.deid`) into OUT; the inputs are only read.

Profiles: `basic`, `research`, or `basic+OPTION+…`; `--option` adds one (retain-safe-private, retain-uids,
retain-device-identity, retain-institution-identity, retain-patient-characteristics,
retain-longitudinal-full-dates, retain-longitudinal-modified-dates, clean-descriptors,
clean-structured-content, clean-graphics, clean-pixel-data). `--pixel-rules F` (TOML or JSON, see
docs/deid-pixels.md) gives the burned-in regions to blank and implies clean-pixel-data; under that option
an image that may carry burned-in text and that no rule covers is held back (not written) and reported.

Pseudonyms and UIDs come from the project's key (`--project`, default `default`), derived from the master
secret: `--secret-file F`, else PACS_DEID_SECRET, else DATA_DIR/deid/secret.key (made on first use; see
`pacs deid secret`). The same secret and project give the same pseudonyms in every run. `--crosswalk`
records original → pseudonym pairs, encrypted, in the data directory for `pacs deid reidentify`.

Layout: `--layout mirror` (default) keeps each file's path relative to the directory named (a file named
directly keeps its name; one input file and an OUT that is not a directory: OUT is the file) — file and
directory names are copied as they are, so rename inputs whose names identify someone, or use
`--layout uids`: OUT/STUDY/SERIES/SOP.dcm by the new UIDs. Files of a walked tree that are not DICOM
(no DICM prefix) and DICOMDIRs are skipped and counted; an existing output is kept unless
`--overwrite`. OUT may not be an input nor lie inside an input directory.

Exit status: 0 all de-identified; 1 some held back or failed (each listed with its reason); 2 usage.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pacs.cli import deid, files

if TYPE_CHECKING:
    from pacs.deid.engine import Deidentified, Deidentifier
    from pacs.deid.pixels import PixelRules

#: The Media Storage Directory Storage SOP class (DICOMDIR).
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


def register(sub: Any) -> None:
    p = sub.add_parser("anonymize", help="de-identify DICOM files and trees (PS3.15 Annex E)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", type=Path, metavar="IN", help="DICOM files or directories (walked)")
    p.add_argument("-o", "--output", dest="out", type=Path, default=None, help="output file or directory")
    p.add_argument("--profile", default="basic", help="basic, research, or basic+OPTION+… (basic)")
    p.add_argument("--option", action="append", default=[], metavar="OPT", help="add an option (repeatable)")
    p.add_argument("--project", default="default", help="the project whose pseudonyms are made (default)")
    p.add_argument("--pixel-rules", default=None, metavar="F",
                   help="burned-in regions to blank (TOML or JSON); implies --option clean-pixel-data")
    p.add_argument("--crosswalk", action="store_true",
                   help="record original → pseudonym pairs, encrypted, in the data directory")
    p.add_argument("--layout", choices=["mirror", "uids"], default="mirror",
                   help="output paths: the inputs' relative paths (mirror) or STUDY/SERIES/SOP.dcm (uids)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    deid.add_secret_arguments(p)
    files.add_progress_arguments(p)
    p.set_defaults(fn=cmd_anonymize)


@dataclass
class Outcome:
    done: int = 0
    skipped: int = 0
    held: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


class _Skipped(Exception):
    pass


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _check_output(out: Path, paths: list[Path]) -> str | None:
    """Why OUT may not be used with these inputs, or None."""
    target = out.resolve()
    for path in paths:
        source = path.resolve()
        if path.is_dir() and _inside(target, source):
            return f"-o {out} is inside the input directory {path}: choose an output outside it"
        if target == source:
            return f"-o {out} is the input {path}: the originals are never modified"
    return None


def cmd_anonymize(args: argparse.Namespace) -> int:
    from pacs.deid.crosswalk import check_project
    from pacs.deid.options import DeidError, Option, Profile
    from pacs.deid.pixels import PixelRules, load_pixel_rules
    from pacs.deid.project import Deidentifiers, ProjectKeys

    if not args.paths or args.out is None:
        return files.usage("anonymize", "give IN… and -o OUT")
    problem = _check_output(args.out, args.paths)
    if problem:
        return files.usage("anonymize", problem)
    options = list(args.option) + ([Option.CLEAN_PIXEL_DATA.value] if args.pixel_rules else [])
    settings = deid.settings_of(args)
    try:
        profile = Profile.parse(args.profile, options)
        rules = load_pixel_rules(args.pixel_rules) if args.pixel_rules else PixelRules()
        check_project(args.project)
        source = deid.find_secret(args, settings, create=True)
        store = deid.crosswalk_store(settings, create=True) if args.crosswalk else None
        engine = Deidentifiers(ProjectKeys(source), rules, store).make(
            profile, args.project, partition=settings.partition, crosswalk=args.crosswalk)
    except (ValueError, DeidError, deid.Usage) as exc:
        return files.usage("anonymize", str(exc))
    inputs, walked = files.walk(args.paths)
    many = len(inputs) > 1 or walked or args.layout == "uids"
    if many and args.out.exists() and not args.out.is_dir():
        return files.usage("anonymize", f"{args.out} is a file: several inputs need a directory as -o")
    run = _Run(args, engine, rules if Option.CLEAN_PIXEL_DATA in profile else None, many,
               {i.path.resolve() for i in inputs})
    outcome = Outcome()
    for item in files.each(args, inputs, walked, f"anonymize ({profile.describe()})"):
        run.one(item, outcome)
    _summary(outcome, args.out, engine.crosswalk is not None)
    return files.FAILED if outcome.held or outcome.failed else files.OK


@dataclass
class _Run:
    args: argparse.Namespace
    engine: Deidentifier
    #: The pixel rules when the Clean Pixel Data option is on (then uncovered burn-in images are held back).
    rules: PixelRules | None
    many: bool
    originals: set[Path]
    written: set[Path] = field(default_factory=set)

    def one(self, item: files.Input, outcome: Outcome) -> None:
        from pacs.deid.options import DeidError, HeldBack

        try:
            self._deidentify(item)
            outcome.done += 1
        except _Skipped:
            outcome.skipped += 1
        except HeldBack as exc:
            outcome.held.append((item.path, str(exc)))
        except (files.InputError, DeidError) as exc:
            outcome.failed.append((item.path, str(exc)))
        except Exception as exc:  # a value pydicom cannot decode, a codec's own error
            outcome.failed.append((item.path, f"{type(exc).__name__}: {exc}"))

    def _deidentify(self, item: files.Input) -> None:
        from pacs.deid.options import HeldBack
        from pacs.deid.pixels import must_hold_back

        path = item.path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise files.InputError(exc.strerror or str(exc)) from None
        if data[128:132] != b"DICM":
            if item.relative is not None:
                raise _Skipped
            raise files.InputError("not a DICOM file (no DICM prefix)")
        if _is_dicomdir(path):  # a media directory (it lists the original names): not an instance
            if item.relative is not None:
                raise _Skipped
            raise files.InputError("a DICOMDIR, not an instance: de-identify the files it lists")
        if self.rules is not None:  # checked here too: nothing is de-identified that will be held back
            import pydicom

            reason = must_hold_back(pydicom.dcmread(io.BytesIO(data)), self.rules)
            if reason:
                raise HeldBack(reason)
        result = self.engine.part10(data)
        out = self._target(item, result)
        if out.resolve() in self.originals:
            raise files.InputError(f"the output {out} is an input: the originals are never modified")
        if out in self.written:
            raise files.InputError(f"{out} was already written for another input of this run")
        if out.exists() and not self.args.overwrite:
            raise files.InputError(f"{out} exists (--overwrite replaces it)")
        _write(out, result.data)
        self.written.add(out)

    def _target(self, item: files.Input, result: Deidentified) -> Path:
        if self.args.layout == "uids":
            from pacs.dicom.uids import check_uid

            parts = [check_uid(result.study_uid, "StudyInstanceUID"),
                     check_uid(result.series_uid, "SeriesInstanceUID"),
                     check_uid(result.sop_uid, "SOPInstanceUID") + ".dcm"]
            return self.args.out.joinpath(*parts)
        return files.output_path(item, self.args.out, many=self.many)


def _is_dicomdir(path: Path) -> bool:
    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(path)
    except Exception:
        return False  # the de-identifier reports what is wrong with it
    return str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_STORAGE_DIRECTORY


def _write(out: Path, data: bytes) -> None:
    """`data` at `out`, atomically (a temporary file in the same directory renamed over it)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as exc:
        raise files.InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
        os.replace(tmp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise files.InputError(f"cannot write {out}: {exc.strerror or exc}") from None


def _summary(outcome: Outcome, out: Path, crosswalk: bool) -> None:
    recorded = "; pairs recorded in the crosswalk" if crosswalk else ""
    print(f"de-identified {outcome.done}, held back {len(outcome.held)}, failed {len(outcome.failed)}, "
          f"skipped {outcome.skipped} (not DICOM, DICOMDIR) → {out}{recorded}")
    for path, reason in outcome.held:
        print(f"held back  {path}: {' '.join(reason.split())}")
    for path, reason in outcome.failed:
        print(f"failed     {path}: {' '.join(reason.split())}")
