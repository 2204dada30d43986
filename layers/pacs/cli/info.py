"""`pacs info FILE…`: a summary of each DICOM file — patient, study, series, SOP class and instance,
geometry, frames, bits, photometric interpretation, transfer syntax, file size, lossy or not.

`--json` prints one object per file (an array for several files) with the same fields, `null` where
the file has no value. Geometry of Enhanced objects (Pixel Measures, Plane Orientation/Position in the
Shared or first Per-frame Functional Groups) is used when the top level has none. "lossy" is true when
Lossy Image Compression is 01 or the transfer syntax is lossy only (JPEG Baseline/Extended).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pacs.cli import files

_GROUPS = {
    "PixelSpacing": "PixelMeasuresSequence",
    "SliceThickness": "PixelMeasuresSequence",
    "ImageOrientationPatient": "PlaneOrientationSequence",
    "ImagePositionPatient": "PlanePositionSequence",
}


def register(sub: Any) -> None:
    p = sub.add_parser("info", prefix_chars="-+", help="summarise DICOM files (patient, study, geometry…)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, metavar="FILE", help="DICOM files or directories (walked)")
    p.add_argument("--json", action="store_true", help="machine-readable: an object per file")
    p.add_argument("+E", "--force", dest="force", action="store_true",
                   help="read files without the DICM prefix or file meta")
    files.add_progress_arguments(p)
    p.set_defaults(fn=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    inputs, walked = files.walk(args.paths)
    failed = 0
    summaries: list[dict[str, Any]] = []
    for item in files.each(args, inputs, walked, "info", prints=True):
        try:
            ds = files.read_dicom(item.path, force=args.force, stop_before_pixels=True)
            summary = summarise(ds, item.path)
        except files.InputError as exc:
            files.error("info", item.path, exc)
            failed += 1
            continue
        except Exception as exc:  # a value pydicom cannot decode
            files.error("info", item.path, f"cannot summarise it: {exc}")
            failed += 1
            continue
        if args.json:
            summaries.append(summary)
        else:
            print(("\n" if item is not inputs[0] else "") + text(summary), flush=True)
    if args.json and summaries:
        print(json.dumps(summaries[0] if len(inputs) == 1 else summaries, indent=1))
    elif args.json and len(inputs) > 1:
        print("[]")
    return files.FAILED if failed else files.OK


def _str(ds: Any, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value)


def _num(ds: Any, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _geometry(ds: Any, keyword: str) -> Any:
    """A geometry attribute: the top level's, else in the Shared or first Per-frame Functional Groups."""
    value = ds.get(keyword)
    if value in (None, ""):
        for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            seq = ds.get(groups)
            macro = seq[0].get(_GROUPS[keyword]) if seq else None
            if macro:
                value = macro[0].get(keyword)
                if value not in (None, ""):
                    break
    if value in (None, ""):
        return None
    try:
        if keyword == "SliceThickness":
            return float(value)
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def summarise(ds: Any, path: Path) -> dict[str, Any]:
    """The summary of a data set read from `path` (pixel data not needed)."""
    from pydicom.uid import UID

    from pacs.codecs import SYNTAXES

    meta = getattr(ds, "file_meta", None)
    syntax = _str(meta, "TransferSyntaxUID") if meta is not None else None
    sop_class = _str(ds, "SOPClassUID")
    if sop_class is None and meta is not None:
        sop_class = _str(meta, "MediaStorageSOPClassUID")
    info = SYNTAXES.get(syntax or "")
    lossy = ds.get("LossyImageCompression") == "01" or (info is not None and not info.lossless)
    return {
        "file": str(path),
        "size": path.stat().st_size,
        "patient": {"name": _str(ds, "PatientName"), "id": _str(ds, "PatientID"),
                    "birth_date": _str(ds, "PatientBirthDate"), "sex": _str(ds, "PatientSex")},
        "study": {"uid": _str(ds, "StudyInstanceUID"), "date": _str(ds, "StudyDate"),
                  "description": _str(ds, "StudyDescription"), "accession": _str(ds, "AccessionNumber")},
        "series": {"uid": _str(ds, "SeriesInstanceUID"), "modality": _str(ds, "Modality"),
                   "number": _num(ds, "SeriesNumber"), "description": _str(ds, "SeriesDescription")},
        "sop_class": {"uid": sop_class, "name": UID(sop_class).name if sop_class else None},
        "sop_instance_uid": _str(ds, "SOPInstanceUID"),
        "geometry": {"rows": _num(ds, "Rows"), "columns": _num(ds, "Columns"),
                     "pixel_spacing": _geometry(ds, "PixelSpacing"),
                     "slice_thickness": _geometry(ds, "SliceThickness"),
                     "orientation": _geometry(ds, "ImageOrientationPatient"),
                     "position": _geometry(ds, "ImagePositionPatient")},
        "frames": _num(ds, "NumberOfFrames") or (1 if "Rows" in ds else None),
        "bits": {"allocated": _num(ds, "BitsAllocated"), "stored": _num(ds, "BitsStored"),
                 "high_bit": _num(ds, "HighBit"), "signed": _num(ds, "PixelRepresentation") == 1
                 if "PixelRepresentation" in ds else None},
        "samples_per_pixel": _num(ds, "SamplesPerPixel"),
        "photometric_interpretation": _str(ds, "PhotometricInterpretation"),
        "transfer_syntax": {"uid": syntax, "name": UID(syntax).name if syntax else None},
        "lossy": lossy,
    }


def _join(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "\\".join(f"{v:g}" for v in value)
    return str(value)


def text(s: dict[str, Any]) -> str:
    """The summary for people: one `Label: value` line per field, `-` where there is none."""
    p, st, se, g, b = s["patient"], s["study"], s["series"], s["geometry"], s["bits"]
    rows = [
        ("File", f"{s['file']} ({s['size']:,} bytes)"),
        ("Patient", f"{p['name'] or '-'}  ID {p['id'] or '-'}  born {p['birth_date'] or '-'}  "
                    f"sex {p['sex'] or '-'}"),
        ("Study", f"{st['uid'] or '-'}  date {st['date'] or '-'}  accession {st['accession'] or '-'}"),
        ("  description", st["description"] or "-"),
        ("Series", f"{se['uid'] or '-'}  {se['modality'] or '-'}  #{_join(se['number'])}"),
        ("  description", se["description"] or "-"),
        ("SOP class", f"{s['sop_class']['name'] or '-'} ({s['sop_class']['uid'] or '-'})"),
        ("SOP instance", s["sop_instance_uid"] or "-"),
        ("Image", f"{_join(g['rows'])} × {_join(g['columns'])}, {_join(s['frames'])} frame(s), "
                  f"{_join(s['samples_per_pixel'])} sample(s)/pixel, "
                  f"{s['photometric_interpretation'] or '-'}"),
        ("Bits", f"allocated {_join(b['allocated'])}, stored {_join(b['stored'])}, "
                 f"high {_join(b['high_bit'])}" + (", signed" if b["signed"] else "")),
        ("Pixel spacing", f"{_join(g['pixel_spacing'])} mm, "
                          f"slice thickness {_join(g['slice_thickness'])} mm"),
        ("Orientation", _join(g["orientation"])),
        ("Position", _join(g["position"])),
        ("Transfer syntax", f"{s['transfer_syntax']['name'] or '-'} ({s['transfer_syntax']['uid'] or '-'})"),
        ("Lossy", "yes" if s["lossy"] else "no"),
    ]
    return "\n".join(f"{label + ':':<17}{value}" for label, value in rows)
