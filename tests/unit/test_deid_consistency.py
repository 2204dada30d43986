"""Consistency across calls and processes: 2 patients × 2 studies × 2 series × 2 instances, each
instance referencing its neighbour and the series' frame of reference, de-identified one call at a
time, by fresh de-identifiers, and in two other processes (each its own order): the same new UIDs,
pseudonyms and dates everywhere; every reference resolves inside the output set; one date shift
per patient; another key gives other outputs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pydicom
from pacs.deid import Deidentifier, DeidSettings, Profile
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

KEY = b"c" * 32
PROFILE = "basic+retain-longitudinal-modified-dates"
CHILD = """
import io, json, sys, pydicom
from pathlib import Path
from pacs.deid import Deidentifier, DeidSettings, Profile
deid = Deidentifier(DeidSettings(Profile.parse(sys.argv[2]), key=bytes.fromhex(sys.argv[3])))
files = sorted(Path(sys.argv[1]).glob("*.dcm"), reverse=sys.argv[4] == "reverse")
print(json.dumps({f.name: deid.part10(f.read_bytes()).data.hex() for f in files}))
"""


def _uid(*parts: int) -> str:
    return "1.2.826.0.1.3680043.9.4242." + ".".join(map(str, parts))


def _instances() -> dict[str, bytes]:
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    out = {}
    for p in range(2):
        for s in range(2):
            for r in range(2):
                for i in range(2):
                    ds = base.copy()
                    ds.PatientID, ds.PatientName = f"PAT{p}", f"DOE^PATIENT{p}"
                    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid(p, s), _uid(p, s, r)
                    ds.SOPInstanceUID = _uid(p, s, r, i)
                    ds.FrameOfReferenceUID = _uid(p, s, r, 99)
                    ds.StudyDate = f"2020{s + 1:02d}1{p}"
                    ref = Dataset()
                    ref.ReferencedSOPClassUID = ds.SOPClassUID
                    ref.ReferencedSOPInstanceUID = _uid(p, s, r, 1 - i)
                    series = Dataset()
                    series.SeriesInstanceUID = ds.SeriesInstanceUID
                    series.ContourImageSequence = Sequence([ref])
                    study = Dataset()
                    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
                    study.ReferencedSOPInstanceUID = ds.StudyInstanceUID
                    study.RTReferencedSeriesSequence = Sequence([series])
                    frame = Dataset()
                    frame.FrameOfReferenceUID = ds.FrameOfReferenceUID
                    frame.RTReferencedStudySequence = Sequence([study])
                    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
                    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                    buf = io.BytesIO()
                    ds.save_as(buf, enforce_file_format=True)
                    out[f"{p}{s}{r}{i}.dcm"] = buf.getvalue()
    return out


def _summary(data: bytes) -> dict[str, object]:
    ds = pydicom.dcmread(io.BytesIO(data))
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    study = frame.RTReferencedStudySequence[0]
    series = study.RTReferencedSeriesSequence[0]
    return {"sop": ds.SOPInstanceUID, "study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID,
            "frame": ds.FrameOfReferenceUID, "pid": ds.PatientID, "name": str(ds.PatientName),
            "date": ds.StudyDate, "ref_frame": frame.FrameOfReferenceUID,
            "ref_study": study.ReferencedSOPInstanceUID, "ref_series": series.SeriesInstanceUID,
            "ref_sop": series.ContourImageSequence[0].ReferencedSOPInstanceUID}


def test_same_outputs_across_calls_and_processes(tmp_path: Path) -> None:
    inputs = _instances()
    for name, data in inputs.items():
        (tmp_path / name).write_bytes(data)
    one = Deidentifier(DeidSettings(Profile.parse(PROFILE), key=KEY))
    shared = {n: one.part10(d).data for n, d in inputs.items()}
    fresh = {n: Deidentifier(DeidSettings(Profile.parse(PROFILE), key=KEY)).part10(d).data
             for n, d in reversed(inputs.items())}
    procs = [subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), PROFILE, KEY.hex(), order],
                            capture_output=True, text=True, check=True, timeout=120)
             for order in ("forward", "reverse")]
    others = [{n: bytes.fromhex(h) for n, h in json.loads(p.stdout).items()} for p in procs]
    assert shared == fresh == others[0] == others[1]  # byte for byte

    out = {n: _summary(d) for n, d in shared.items()}
    sops = {s["sop"] for s in out.values()}
    assert len(sops) == 16 and len({s["series"] for s in out.values()}) == 8
    assert len({s["study"] for s in out.values()}) == 4 and len({s["pid"] for s in out.values()}) == 2
    for name, s in out.items():
        assert s["ref_sop"] in sops and s["ref_sop"] != s["sop"]  # references resolve in the set
        assert s["ref_frame"] == s["frame"] and s["ref_series"] == s["series"]
        assert s["ref_study"] == s["study"] and s["name"] == "ANON^" + s["pid"]
        assert name[0] == "0" or s["pid"] != out["0000.dcm"]["pid"]
    for p in "01":
        shifts = set()
        for name, s in out.items():
            if name[0] == p:
                original = pydicom.dcmread(io.BytesIO(inputs[name])).StudyDate
                shifts.add(_day(original) - _day(str(s["date"])))
        assert len(shifts) == 1 and 1 <= shifts.pop() <= 3650  # one shift per patient

    other_key = Deidentifier(DeidSettings(Profile.parse(PROFILE), key=b"d" * 32))
    changed = _summary(other_key.part10(inputs["0000.dcm"]).data)
    assert all(changed[k] != out["0000.dcm"][k] for k in ("sop", "study", "series", "frame", "pid"))


def _day(text: str) -> int:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8])).toordinal()
