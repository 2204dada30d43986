"""`pacs dump FILE…`: every element of DICOM files, as dcmdump prints them.

One line per element: `(gggg,eeee) VR value  # length, VM Keyword`, the file meta first, sequence items
indented by depth, private elements named by their creator (and by pydicom's private dictionary when
it knows the tag), values longer than `--max-length` characters cut (`+L` prints them whole). `--json`
prints DICOM JSON (PS3.18 F.2; no file meta): binary values over 1 KiB are omitted (`{"vr": …}`, with a
note on stderr) unless `--inline-binary`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pacs.cli import files

BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW", "US or OW"})
DEFAULT_MAX_LENGTH = 64


def register(sub: Any) -> None:
    p = sub.add_parser("dump", prefix_chars="-+", help="print every element of DICOM files (like dcmdump)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, metavar="FILE", help="DICOM files or directories (walked)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("-L", "--max-length", dest="max_length", type=int, default=DEFAULT_MAX_LENGTH,
                        metavar="N", help=f"cut values longer than N characters ({DEFAULT_MAX_LENGTH})")
    length.add_argument("+L", "--print-all", dest="max_length", action="store_const", const=0,
                        help="print long values completely")
    p.add_argument("+E", "--force", "--ignore-errors", dest="force", action="store_true",
                   help="read files without the DICM prefix or file meta, and damaged ones, as far as "
                        "possible")
    p.add_argument("--json", action="store_true",
                   help="DICOM JSON (PS3.18 F.2): an object, or an array of them for several files")
    p.add_argument("--inline-binary", action="store_true",
                   help="with --json: every binary value as InlineBinary (else those over 1 KiB are omitted)")
    files.add_progress_arguments(p)
    p.set_defaults(fn=cmd_dump)


def cmd_dump(args: argparse.Namespace) -> int:
    if args.max_length < 0:
        return files.usage("dump", "--max-length must be 0 (no limit) or more")
    inputs, walked = files.walk(args.paths)
    failed = 0
    documents: list[dict[str, Any]] = []
    for n, item in enumerate(files.each(args, inputs, walked, "dump", prints=True)):
        try:
            ds = files.read_dicom(item.path, force=args.force)
            if args.json:
                documents.append(_json(ds, item.path, args.inline_binary))
                continue
            lines = dump_lines(ds, args.max_length)
        except files.InputError as exc:
            files.error("dump", item.path, exc)
            failed += 1
            continue
        except Exception as exc:  # a value pydicom cannot decode, read with --force
            files.error("dump", item.path, f"cannot print it: {exc}")
            failed += 1
            continue
        if len(inputs) > 1:
            print(("\n" if n else "") + f"# {item.path}")
        sys.stdout.write("".join(line + "\n" for line in lines))
    if args.json:
        if len(inputs) == 1 and documents:
            print(json.dumps(documents[0], indent=1))
        elif len(inputs) > 1:
            print(json.dumps(documents, indent=1))
    return files.FAILED if failed else files.OK


def _json(ds: Any, path: Path, inline: bool) -> dict[str, Any]:
    from pacs.dicom.json_model import to_dicom_json

    try:
        doc = to_dicom_json(ds, bulk_data_threshold=None if inline else 1024)
    except Exception as exc:
        raise files.InputError(f"cannot encode it as DICOM JSON: {exc}") from None
    omitted = _omitted(doc)
    if omitted:
        print(f"pacs dump: {path}: {omitted} binary value(s) over 1 KiB omitted (--inline-binary includes "
              "them)", file=sys.stderr)
    return doc


def _omitted(doc: dict[str, Any]) -> int:
    count = 0
    for attr in doc.values():
        if attr.get("vr") in BINARY_VRS and len(attr) == 1:
            count += 1
        for item in attr.get("Value", []) if attr.get("vr") == "SQ" else []:
            count += _omitted(item or {})
    return count


def dump_lines(ds: Any, max_length: int = DEFAULT_MAX_LENGTH) -> list[str]:
    """The dump of a data set read from a file: its file meta, then its elements."""
    lines: list[str] = []
    meta = getattr(ds, "file_meta", None)
    if meta is not None and len(meta):
        lines.append("# Dicom-Meta-Information-Header")
        lines += _elements(meta, 0, max_length)
        lines.append("")
    lines.append("# Dicom-Data-Set")
    lines += _elements(ds, 0, max_length)
    return lines


def _elements(ds: Any, depth: int, max_length: int) -> list[str]:
    lines: list[str] = []
    for tag in sorted(ds.keys()):
        raw = ds.get_item(tag)
        length = getattr(raw, "length", None)
        try:
            elem = ds[tag]
        except Exception as exc:  # a value that does not decode (read with --force)
            lines.append(_line(depth, tag, str(getattr(raw, "VR", "??")), f"(undecodable: {exc})",
                               length, "?", "", max_length))
            continue
        if elem.VR == "SQ":
            items = elem.value or []
            lines.append(_line(depth, tag, "SQ", f"(Sequence with {len(items)} item(s))", length, "1",
                               _name(elem), 0))
            for k, item in enumerate(items, 1):
                lines.append(_line(depth + 1, 0xFFFEE000, "na", f"(Item #{k}, {len(item)} element(s))",
                                   None, "", "Item", 0))
                lines += _elements(item, depth + 2, max_length)
            continue
        value = _value(elem, max_length)
        whole = elem.VR == "UI" or elem.VR in BINARY_VRS  # UIDs are never cut, binary values cut already
        lines.append(_line(depth, tag, str(elem.VR), value, length if length is not None else _length(elem),
                           str(elem.VM), _name(elem), 0 if whole else max_length))
    return lines


def _line(depth: int, tag: int, vr: str, value: str, length: int | None, vm: str, name: str,
          max_length: int) -> str:
    if max_length and len(value) > max_length + 2:
        value = value[:max_length] + "..."
    shown = "u/l" if length == 0xFFFFFFFF else "?" if length is None else str(length)
    head = f"{'  ' * depth}({tag >> 16:04x},{tag & 0xFFFF:04x}) {vr} {value}"
    width = max(len(head) + 1, 56)
    tail = f"# {shown:>3}" + (f", {vm}" if vm else "") + (f" {name}" if name else "")
    return f"{head:<{width}}{tail}"


def _name(elem: Any) -> str:
    """The keyword; for a private element its creator and, when known, its private dictionary name."""
    tag = elem.tag
    if not tag.is_private:
        return str(elem.keyword or elem.name)
    if tag.is_private_creator:
        return "PrivateCreator"
    creator = getattr(elem, "private_creator", None)
    name = str(elem.name).strip("[]")
    known = name and name != "Private tag data"
    if creator:
        return f"({creator}) {name}" if known else f"({creator}) unknown private tag"
    return "private tag without a creator"


def _value(elem: Any, max_length: int) -> str:
    from pydicom.uid import UID

    value = elem.value
    if elem.VR in BINARY_VRS or isinstance(value, bytes | bytearray):
        data = bytes(value or b"")
        if elem.tag == 0x7FE00010 and data[:4] == b"\xfe\xff\x00\xe0":
            return f"(PixelSequence, {len(data)} bytes encapsulated)"
        limit = len(data) if not max_length else max(1, max_length // 3)
        return "\\".join(f"{b:02x}" for b in data[:limit]) + ("\\..." if len(data) > limit else "") \
            if data else "(no value)"
    if value is None or value == "":
        return "(no value available)"
    values = list(value) if elem.VM > 1 and not isinstance(value, str | bytes) else [value]
    text = "\\".join(str(v) for v in values)
    if elem.VR == "UI" and len(values) == 1:
        uid = UID(str(value))
        if uid.is_valid and uid.name != str(uid):
            return f"[{text}] ({uid.name})"
    if elem.VR in ("AT",):
        return "\\".join(f"({int(v) >> 16:04x},{int(v) & 0xFFFF:04x})" for v in values)
    if isinstance(value, str) or elem.VR in ("PN", "DA", "TM", "DT", "AS", "AE", "CS", "LO", "LT", "SH",
                                            "ST", "UC", "UR", "UT", "DS", "IS"):
        return f"[{text}]"
    return text


_SIZES = {"UL": 4, "SL": 4, "US": 2, "SS": 2, "FL": 4, "FD": 8, "AT": 4, "SV": 8, "UV": 8}


def _length(elem: Any) -> int | None:
    """The value length of an element pydicom has already converted (no raw length kept)."""
    value = elem.value
    if elem.VR in _SIZES:
        return _SIZES[elem.VR] * int(elem.VM)
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, str):
        n = len(value.encode("utf-8", "replace"))
        return n + n % 2
    return None
