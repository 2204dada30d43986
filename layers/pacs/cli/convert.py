"""`pacs convert IN… -o OUT --ts SYNTAX`: DICOM files and trees re-encoded in another transfer syntax
through the codec registry (`pacs.codecs`), like dcmconv / dcmcjpls / dcmcjp2k.

SYNTAX is a UID, a pydicom keyword (`JPEGLSLossless`), or a name with any case and punctuation
(`jpeg-ls-lossless`, `htj2k-lossless`, `explicit-little`); `--list-syntaxes` lists those this
installation can write. Lossless unless `--quality` (JPEG Baseline), `--near-lossless` (JPEG-LS) or
`--ratio` (JPEG 2000 / HTJ2K) asks otherwise. The SOP Instance UID is kept for lossless output; for
lossy output `pacs.codecs.transcode` decides (PS3.5 8.2: a new one). One input file: OUT is the
output file (or an existing directory); several, or a directory: OUT is a directory, and a directory
input's tree is mirrored under it. An input is never overwritten unless OUT names that very file. A
file that cannot be converted fails alone, with its reason (exit 1); an unknown or unwritable syntax
is a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from pacs.cli import files

#: Short names (normalised: lower case, letters and digits only) for pydicom keywords; only those the
#: registry knows are offered.
ALIASES = {
    "implicitlittle": "ImplicitVRLittleEndian", "implicit": "ImplicitVRLittleEndian",
    "explicitlittle": "ExplicitVRLittleEndian", "explicit": "ExplicitVRLittleEndian",
    "explicitbig": "ExplicitVRBigEndian", "deflated": "DeflatedExplicitVRLittleEndian",
    "deflate": "DeflatedExplicitVRLittleEndian", "rle": "RLELossless",
    "jpeg": "JPEGBaseline8Bit", "jpegbaseline": "JPEGBaseline8Bit", "jpegextended": "JPEGExtended12Bit",
    "jpeglosslesssv1": "JPEGLosslessSV1", "jpegls": "JPEGLSLossless", "jls": "JPEGLSLossless",
    "jpeglsnear": "JPEGLSNearLossless", "jlsnear": "JPEGLSNearLossless",
    "j2k": "JPEG2000Lossless", "jpeg2000lossless": "JPEG2000Lossless", "j2klossless": "JPEG2000Lossless",
    "j2klossy": "JPEG2000", "jpeg2000lossy": "JPEG2000",
    "htj2klossless": "HTJ2KLossless", "htj2krpcl": "HTJ2KLosslessRPCL", "htj2klossy": "HTJ2K",
}
#: dcmconv's output syntax flags.
DCMCONV = {"+ti": "ImplicitVRLittleEndian", "+te": "ExplicitVRLittleEndian", "+tb": "ExplicitVRBigEndian",
           "+td": "DeflatedExplicitVRLittleEndian"}


def register(sub: Any) -> None:
    p = sub.add_parser("convert", prefix_chars="-+", help="re-encode DICOM files in another transfer syntax",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", type=Path, metavar="IN", help="DICOM files or directories (walked)")
    p.add_argument("-o", "--output", dest="out", type=Path, default=None,
                   help="output file (one input) or directory")
    p.add_argument("--ts", "--transfer-syntax", dest="ts", default=None, metavar="SYNTAX",
                   help="the target transfer syntax: name, keyword or UID (--list-syntaxes)")
    for flag, keyword in DCMCONV.items():
        p.add_argument(flag, dest="ts", action="store_const", const=keyword, help=f"same as --ts {keyword}")
    lossy = p.add_mutually_exclusive_group()
    lossy.add_argument("--quality", type=int, default=None, metavar="Q", help="JPEG Baseline quality, 1-100")
    lossy.add_argument("--near-lossless", type=int, default=None, metavar="N",
                       help="JPEG-LS near-lossless: the largest error per sample (NEAR)")
    lossy.add_argument("--ratio", type=float, default=None, metavar="R",
                       help="JPEG 2000 / HTJ2K lossy: the compression ratio asked")
    p.add_argument("--list-syntaxes", action="store_true", help="list the transfer syntaxes and exit")
    p.add_argument("+E", "--force", dest="force", action="store_true",
                   help="read files without the DICM prefix or file meta")
    files.add_progress_arguments(p)
    p.set_defaults(fn=cmd_convert)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def names() -> dict[str, str]:
    """Every accepted spelling (normalised) → UID, from the registry's syntaxes."""
    from pydicom.uid import UID

    from pacs.codecs import SYNTAXES

    by_keyword = {UID(uid).keyword: uid for uid in SYNTAXES}
    found: dict[str, str] = {}
    for uid, info in SYNTAXES.items():
        found[_norm(UID(uid).keyword)] = uid
        found[_norm(info.name)] = uid
    for alias, keyword in ALIASES.items():
        if keyword in by_keyword:
            found.setdefault(alias, by_keyword[keyword])
    return found


def resolve(text: str) -> str | None:
    """The UID of a syntax given by UID, keyword or name; None when the registry does not know it."""
    from pacs.codecs import SYNTAXES

    text = text.strip()
    if text in SYNTAXES:
        return text
    return names().get(_norm(text))


def list_syntaxes() -> None:
    from pydicom.uid import UID

    from pacs.codecs import SYNTAXES, can_decode, can_encode

    aliases: dict[str, list[str]] = {}
    for alias, uid in names().items():
        aliases.setdefault(uid, []).append(alias)
    print(f"{'UID':<24} {'keyword':<32} {'encode':<6} {'decode':<6} kind  names")
    for uid, info in SYNTAXES.items():
        kind = "lossless+lossy" if info.lossless and info.lossy else "lossless" if info.lossless else "lossy"
        short = ", ".join(sorted(a for a in aliases.get(uid, []) if len(a) <= 20))
        print(f"{uid:<24} {UID(uid).keyword:<32} {'yes' if can_encode(uid) else 'no':<6} "
              f"{'yes' if can_decode(uid) else 'no':<6} {kind}  {short}")


def cmd_convert(args: argparse.Namespace) -> int:
    if args.list_syntaxes:
        list_syntaxes()
        return files.OK
    if not args.paths or args.out is None or args.ts is None:
        return files.usage("convert", "give IN…, -o OUT and --ts SYNTAX (or --list-syntaxes)")
    target = resolve(args.ts)
    if target is None:
        return files.usage("convert", f"unknown transfer syntax {args.ts!r} (--list-syntaxes lists them)")
    from pydicom.uid import UID

    from pacs.codecs import EncodeOptions, can_encode

    if not can_encode(target):
        return files.usage("convert", f"no encoder for {UID(target).name} is installed here "
                                      "(--list-syntaxes lists those that are)")
    if args.quality is not None and not 1 <= args.quality <= 100:
        return files.usage("convert", "--quality must be 1 to 100")
    if args.near_lossless is not None and args.near_lossless < 0:
        return files.usage("convert", "--near-lossless must be 0 or more")
    if args.ratio is not None and args.ratio <= 1:
        return files.usage("convert", "--ratio must be more than 1")
    options = EncodeOptions(quality=args.quality, near_lossless=args.near_lossless, ratio=args.ratio)
    inputs, walked = files.walk(args.paths)
    many = len(inputs) > 1 or walked
    if many and args.out.exists() and not args.out.is_dir():
        return files.usage("convert", f"{args.out} is a file: several inputs need a directory as -o")
    def one(item: files.Input) -> None:
        out = files.output_path(item, args.out, many=many)
        convert_one(item.path, out, target, options, explicit=not many and out == args.out, force=args.force)

    label = f"convert to {UID(target).name}"
    return files.run_each("convert", "convert", files.each(args, inputs, walked, label), one)


def convert_one(path: Path, out: Path, target: str, options: Any, *, explicit: bool, force: bool) -> None:
    """`path` re-encoded in `target` into `out`; InputError with the reason when it cannot be.
    `explicit`: OUT was named on the command line as this very file (then it may be the input)."""
    from pacs.codecs import TranscodeError, transcode

    if files.same_file(path, out) and not explicit:
        raise files.InputError(f"the output {out} is the input: name it with -o to replace it")
    ds = files.read_dicom(path, force=force)
    if getattr(ds, "file_meta", None) is None or "TransferSyntaxUID" not in ds.file_meta:
        raise files.InputError("no Transfer Syntax UID in its file meta (not a Part 10 file)")
    try:
        transcode(ds, target, options)
    except TranscodeError as exc:
        raise files.InputError(f"cannot convert it: {exc}") from None
    except Exception as exc:  # a codec plugin's own error
        raise files.InputError(f"cannot convert it: {exc}") from None
    try:
        files.write_part10(ds, out)
    except OSError as exc:
        raise files.InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    except Exception as exc:  # pydicom refuses to write a value
        raise files.InputError(f"cannot write {out}: {exc}") from None
