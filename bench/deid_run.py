"""De-identification speed of `pacs.deid` beside dicognito and deid (`make bench-deid`, bench/run_deid.sh).

Usage:
  python bench/deid_run.py gen --src bench/out/data/ct300 --out bench/out/data/ct300-deid
      the CT series of bench/gen_data.py with the header a real CT carries (cached like gen_data.py): patient
      address, phone, other IDs (a sequence), birth date, weight; the requesting, performing, reading
      physicians and operators; the institution's address and department; device serial number, software,
      calibration date; the request (Request Attributes Sequence: accession, requested procedure and step
      IDs), the referenced study and performed procedure step, a procedure code; a Referenced Image
      Sequence to the previous slice and a Source Image Sequence to the next (references inside the series);
      contributing equipment with its own institution and date-time (two levels of nesting); instance
      creation date, acquisition date-time, comments; two private blocks (a vendor's scan parameters, and a
      private sequence whose item holds a physician's name and the patient's ID).
  python bench/deid_run.py bench --data DIR --work DIR --results OUT.json [--runs 3]
         [--tools ours,dicognito,deid] [--keep]
      One worker process per tool (`worker`), each started once and warmed up with one untimed run over the
      files; then RUNS passes, tool order rotated per pass, each tool de-identifying every file of DATA
      (file in, file out into WORK/<tool>/) in its own process while the others wait. Per run: wall
      seconds, the worker's CPU seconds, the machine's CPU seconds (for "other load"). After the last pass,
      untimed checks of each tool's output (see `check`).
  python bench/deid_run.py export --data DIR --work DIR --results OUT.json [--runs 3] [--pacs-cmd CMD]
      `pacs up` on free ports and a new data dir under WORK; the files sent with dcmtk storescu; waited until
      QIDO-RS lists them; then 1 + RUNS export jobs (`POST /exports`, basic profile + Retain Longitudinal
      Temporal Information with Modified Dates, destination files), each polled (`GET /exports/{id}`) until
      `status` is done: instances/s from the POST to done; the first job is the warm-up. A POST answered
      404 (no export API in this build) records the step as skipped.

What each tool runs (per file, the same I/O: read a file, write a file):
- ours: `Deidentifier(DeidSettings(profile=Profile.parse('basic', ['retain-longitudinal-modified-dates']),
  key=KEY)).part10(file bytes)`, the result's bytes written.
- dicognito: one `dicognito.anonymizer.Anonymizer(seed=...)` for the run (consistent UIDs and one date shift
  across the series): `pydicom.dcmread`, `anonymize`, `remove_private_tags` (dicognito keeps private tags; the
  basic profile removes them), `save_as`.
- deid: `deid.dicom.replace_identifiers(files, deid=recipe, save=True, remove_private=True)`, the recipe
  generated from the same PS3.15 Table E.1-1 as ours (pacs/deid/data/ps315-annex-e.json: X → REMOVE,
  Z → BLANK, D → REPLACE with a dummy of the VR, U → REPLACE deid_func:pydicom_uuid (stable remapping),
  compound codes → the least removing, dates of the Modified Dates column → JITTER by a fixed number of days),
  written to WORK/deid.recipe.
Requires the project venv (pydicom, numpy, pacs, dicognito, deid).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu import box_cpu, own_cpu

GEN_VERSION = 2
TOOLS = ("ours", "dicognito", "deid")
KEY = hashlib.sha256(b"pacs bench-deid project key").digest()
JITTER_DAYS = -137
PROFILE_OPTIONS = ["retain-longitudinal-modified-dates"]
#: Values planted by `gen` that identify the patient, staff or site: none may be left in an output.
PLANTED = (
    "SMITH^JOHN", "BENCH00001", "HOSP-MRN-4471", "12 Elm Street", "+1-555-0100", "REF^DOCTOR",
    "JONES^ALICE^^DR", "BROWN^CAROL", "WHITE^DAVID", "TECH^TOM", "BENCH GENERAL HOSPITAL", "42 Hospital Road",
    "SN-77812", "REQ-889", "SPS-889-1", "ACC000001", "PRIVATE^PHYSICIAN", "OUTSIDE IMAGING CENTER",
)


# ------------------------------------------------------------------------------------------------ data
def gen(src: Path, out: Path) -> int:
    """Copy the series with a realistic CT header (see the module docstring); cached by a stamp."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    files = sorted(src.glob("*.dcm"))
    if not files:
        print(f"[gen] no files in {src}", file=sys.stderr)
        return 1
    src_manifest = (src / "manifest.json").read_text() if (src / "manifest.json").exists() else ""
    params = [GEN_VERSION, src_manifest, [f.name for f in files]]
    stamp = hashlib.sha256(json.dumps(params).encode()).hexdigest()
    mpath = out / "manifest.json"
    if mpath.exists() and json.loads(mpath.read_text()).get("stamp") == stamp:
        print(f"[gen] cached: {out} ({len(files)} files)", file=sys.stderr)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.dcm"):
        old.unlink()
    sops = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    ct = "1.2.840.10008.5.1.4.1.1.2"

    def ref(sop_class: str, sop: str, **extra: Any) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop
        for k, v in extra.items():
            setattr(item, k, v)
        return item

    def code(value: str, scheme: str, meaning: str) -> Dataset:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
        return item

    study_uid = series_uid = ""
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        study_uid, series_uid = ds.StudyInstanceUID, ds.SeriesInstanceUID
        ds.InstanceCreationDate, ds.InstanceCreationTime = "20230110", f"0816{i * 60 // len(files):02d}.123"
        ds.InstanceCreatorUID = "1.2.826.0.1.3680043.8.498.999.1"
        ds.AcquisitionDateTime = f"20230110081{i * 60 // len(files) // 10}00.000000"
        ds.TimezoneOffsetFromUTC = "+0100"
        ds.InstitutionAddress = "42 Hospital Road, Springfield"
        ds.InstitutionalDepartmentName = "RADIOLOGY"
        ds.ReferringPhysicianAddress = "7 Clinic Way, Springfield"
        ds.PhysiciansOfRecord = "JONES^ALICE^^DR"
        ds.PerformingPhysicianName = "BROWN^CAROL"
        ds.NameOfPhysiciansReadingStudy = "WHITE^DAVID"
        ds.OperatorsName = "TECH^TOM"
        ds.RequestingPhysician = "JONES^ALICE^^DR"
        ds.RequestingService = "EMERGENCY"
        ds.AdmittingDiagnosesDescription = "CHEST PAIN"
        ds.IssuerOfPatientID = "BENCH GENERAL HOSPITAL"
        ds.OtherPatientIDsSequence = Sequence([Dataset()])
        ds.OtherPatientIDsSequence[0].PatientID = "HOSP-MRN-4471"
        ds.OtherPatientIDsSequence[0].IssuerOfPatientID = "BENCH REGIONAL MPI"
        ds.OtherPatientIDsSequence[0].TypeOfPatientID = "TEXT"
        ds.PatientAddress = "12 Elm Street, Springfield"
        ds.PatientTelephoneNumbers = "+1-555-0100"
        ds.PatientBirthTime = "063000"
        ds.PatientSize = "1.78"
        ds.PatientWeight = "81"
        ds.EthnicGroup = "UNKNOWN"
        ds.AdditionalPatientHistory = "prior CT 2021 at OUTSIDE IMAGING CENTER"
        ds.DeviceSerialNumber = "SN-77812"
        ds.SoftwareVersions = ["SYNTH 9.1.2", "RECON 4.0"]
        ds.DateOfLastCalibration, ds.TimeOfLastCalibration = "20230101", "070000"
        ds.ProtocolName = "CHEST ROUTINE"
        ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20230110", "081400"
        ds.PerformedProcedureStepID = "PPS-889"
        ds.PerformedProcedureStepDescription = "CT CHEST W/O CONTRAST"
        ds.ImageComments = f"slice {i + 1} of {len(files)}"
        ds.IrradiationEventUID = generate_uid(entropy_srcs=["bench-deid-irradiation", series_uid, str(i)])
        ds.ProcedureCodeSequence = Sequence([code("71250", "CPT", "CT thorax w/o contrast")])
        req = Dataset()
        req.AccessionNumber = "ACC000001"
        req.RequestedProcedureID = "REQ-889"
        req.ScheduledProcedureStepID = "SPS-889-1"
        req.ScheduledProcedureStepDescription = "CT CHEST"
        req.RequestedProcedureDescription = "CT CHEST W/O CONTRAST"
        req.ReferencedStudySequence = Sequence([ref("1.2.840.10008.3.1.2.3.1", study_uid)])
        ds.RequestAttributesSequence = Sequence([req])
        ds.ReferencedStudySequence = Sequence([ref("1.2.840.10008.3.1.2.3.1", study_uid)])
        ds.ReferencedPerformedProcedureStepSequence = Sequence(
            [ref("1.2.840.10008.3.1.2.3.3", generate_uid(entropy_srcs=["bench-deid-pps", study_uid]))])
        ds.ReferencedImageSequence = Sequence([ref(ct, sops[max(i - 1, 0)])])
        ds.SourceImageSequence = Sequence([ref(ct, sops[min(i + 1, len(sops) - 1)])])
        equip = Dataset()
        equip.Manufacturer = "SYNTH POST"
        equip.InstitutionName = "OUTSIDE IMAGING CENTER"
        equip.StationName = "POST01"
        equip.ContributionDateTime = "20230110090000"
        equip.ContributionDescription = "reformatted by WHITE^DAVID"
        equip.PurposeOfReferenceCodeSequence = Sequence([code("109103", "DCM", "Modifying Equipment")])
        ds.ContributingEquipmentSequence = Sequence([equip])
        block = ds.private_block(0x0019, "SYNTH MEDICAL CT 1.0", create=True)
        block.add_new(0x10, "LO", "HELICAL")
        block.add_new(0x11, "DS", "0.984")
        block.add_new(0x12, "UL", 16)
        block.add_new(0x13, "OB", bytes(range(64)))
        block2 = ds.private_block(0x0029, "SYNTH MEDICAL NOTES", create=True)
        note = Dataset()
        note.PersonName = "PRIVATE^PHYSICIAN"
        note.PatientID = "BENCH00001"
        block2.add_new(0x10, "SQ", Sequence([note]))
        ds.save_as(out / f.name, enforce_file_format=True)
    mpath.write_text(json.dumps({"stamp": stamp, "instances": len(files), "study_uid": study_uid,
                                 "series_uid": series_uid}, indent=1) + "\n")
    print(f"[gen] wrote {len(files)} files to {out}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------ deid's recipe
_DUMMY = {"PN": "ANONYMOUS", "DA": "19000101", "TM": "000000", "DT": "19000101000000", "DS": "0", "IS": "0",
          "AS": "000Y", "CS": "ANON", "UL": "0", "US": "0", "SS": "0", "SL": "0", "FL": "0", "FD": "0"}


def deid_recipe() -> str:
    """A deid recipe of PS3.15 Table E.1-1 (basic profile + the Modified Dates column), from our copy."""
    from importlib import resources

    from pydicom.datadict import dictionary_VR, keyword_for_tag

    rows = json.loads((resources.files("pacs.deid") / "data" / "ps315-annex-e.json").read_text())
    lines = ["FORMAT dicom", "", "%header", ""]
    for row in rows:
        t = row["tag"]
        try:
            tag = int(t[1:5] + t[6:10], 16)
        except ValueError:
            continue  # repeating groups (50xx, 60xx); private attributes: remove_private
        kw = keyword_for_tag(tag)
        if not kw:
            continue
        vr = dictionary_VR(tag)
        action = row["basicProfile"]
        if row.get("rtnLongModifDatesOpt") == "C":
            lines.append(f"JITTER {kw} {JITTER_DAYS}" if vr in ("DA", "DT") else f"KEEP {kw}")
            continue
        if vr == "SQ":  # kept sequences get no line: deid's KEEP would shield the UIDs inside
            if "U" not in action and action != "K":
                lines.append(f"REMOVE {kw}")
        elif "U" in action or vr == "UI":
            lines.append(f"REPLACE {kw} deid_func:pydicom_uuid")
        elif action == "X":
            lines.append(f"REMOVE {kw}")
        elif action in ("Z", "X/Z"):
            lines.append(f"BLANK {kw}")
        elif "D" in action:
            lines.append(f"REPLACE {kw} {_DUMMY.get(vr, 'ANON')}")
        elif action == "K":
            lines.append(f"KEEP {kw}")
    lines += ["", "ADD PatientIdentityRemoved YES", "ADD DeidentificationMethod deid-bench-basic", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- workers
def _ours(out: Path) -> Callable[[list[Path]], None]:
    from pacs.deid import Deidentifier, DeidSettings, Profile

    d = Deidentifier(DeidSettings(profile=Profile.parse("basic", PROFILE_OPTIONS), key=KEY))

    def run(files: list[Path]) -> None:
        for f in files:
            (out / f.name).write_bytes(d.part10(f.read_bytes()).data)

    return run


def _dicognito(out: Path) -> Callable[[list[Path]], None]:
    import pydicom
    from dicognito.anonymizer import Anonymizer

    def run(files: list[Path]) -> None:
        anonymizer = Anonymizer(seed=KEY.hex())  # one per series: one date shift, consistent UIDs
        for f in files:
            ds = pydicom.dcmread(f)
            anonymizer.anonymize(ds)
            ds.remove_private_tags()
            ds.save_as(out / f.name)

    return run


def _deid(out: Path, recipe_path: Path) -> Callable[[list[Path]], None]:
    from deid.config import DeidRecipe
    from deid.dicom import replace_identifiers

    recipe = DeidRecipe(deid=str(recipe_path))

    def run(files: list[Path]) -> None:
        replace_identifiers([str(f) for f in files], deid=recipe, save=True, overwrite=True,
                            output_folder=str(out), remove_private=True)

    return run


def worker(tool: str, src: Path, out: Path, recipe: Path) -> int:
    """Serve `run NAME` lines on stdin: one pass over `src` into `out`, a JSON line back per pass."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what the tools print goes to the log, never into the protocol
    sys.stdout = sys.stderr
    files = sorted(src.glob("*.dcm"))
    out.mkdir(parents=True, exist_ok=True)
    run = _ours(out) if tool == "ours" else _dicognito(out) if tool == "dicognito" else _deid(out, recipe)
    for line in sys.stdin:
        name = line.strip()
        if not name or name == "quit":
            break
        for old in out.iterdir():
            old.unlink()
        c0, b0, t0 = own_cpu(), box_cpu(), time.perf_counter()
        error = ""
        try:
            run(files)
        except Exception as exc:  # recorded, the run goes on
            error = f"{type(exc).__name__}: {exc}"[:500]
        secs = time.perf_counter() - t0
        rec = {"tool": tool, "run": name, "files": len(files), "seconds": secs, "cpu": own_cpu() - c0,
               "box_cpu": box_cpu() - b0, "written": sum(1 for _ in out.glob("*.dcm")), "error": error}
        proto.write(json.dumps(rec) + "\n")
    return 0


def versions() -> dict[str, str]:
    from importlib.metadata import version

    got: dict[str, str] = {}
    for tool, dist in (("ours", "pacs"), ("dicognito", "dicognito"), ("deid", "deid"), ("pydicom", "pydicom"),
                       ("numpy", "numpy")):
        try:
            got[tool] = version(dist)
        except Exception:
            got[tool] = "?"
    rev = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    got["ours"] += f" (git {rev or '?'})"
    return got


# --------------------------------------------------------------------------------------------- checks
def check(src: Path, out: Path) -> dict[str, Any]:
    """What a tool's output did, untimed: readable, identity gone, UIDs remapped consistently with the
    references still resolving inside the series, dates shifted once, private tags removed."""
    import pydicom

    files = sorted(src.glob("*.dcm"))
    res: dict[str, Any] = {"files": len(files), "readable": 0, "leaks": {}, "private_left": 0}
    src_sop: dict[str, str] = {}
    src_refs: dict[str, list[str]] = {}
    out_sop: dict[str, str] = {}
    studies: set[str] = set()
    dates: set[str] = set()
    refs_total = refs_ok = 0
    orig_study = orig_date = ""
    ref_kws = ("ReferencedImageSequence", "SourceImageSequence")
    for f in files:
        s = pydicom.dcmread(f, stop_before_pixels=True)
        src_sop[f.name] = s.SOPInstanceUID
        src_refs[f.name] = [str(i.ReferencedSOPInstanceUID) for kw in ref_kws for i in s.get(kw, [])]
        orig_study, orig_date = s.StudyInstanceUID, s.get("StudyDate", "")
    by_src = {v: k for k, v in src_sop.items()}
    outs: dict[str, Any] = {}
    for f in files:
        p = out / f.name
        if not p.exists():
            continue
        raw = p.read_bytes()
        for value in PLANTED:
            if value.encode() in raw:
                res["leaks"][value] = res["leaks"].get(value, 0) + 1
        try:
            ds = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
        except Exception:
            continue
        res["readable"] += 1
        outs[f.name] = ds
        out_sop[f.name] = str(ds.get("SOPInstanceUID", ""))
        studies.add(str(ds.get("StudyInstanceUID", "")))
        dates.add(str(ds.get("StudyDate", "")))
        res["private_left"] += sum(1 for e in ds.iterall() if e.tag.is_private)
    for name, ds in outs.items():  # each reference points at the remapped UID of the instance it named
        got = [str(i.get("ReferencedSOPInstanceUID", "")) for kw in ref_kws for i in ds.get(kw, [])]
        want = [out_sop.get(by_src.get(u, ""), "?") for u in src_refs[name]]
        refs_total += len(want)
        refs_ok += sum(1 for g, w in zip(got, want, strict=False) if g == w and g not in by_src)
    res["sop_uids_remapped"] = sum(1 for n, u in out_sop.items() if u and u != src_sop[n])
    res["sop_uids_distinct"] = len(set(out_sop.values())) == len(out_sop)
    res["one_study_uid"] = len(studies) == 1 and orig_study not in studies
    res["dates"] = sorted(dates)[:3]
    res["date_shifted_once"] = len(dates) == 1 and orig_date not in dates and "" not in dates
    res["references"] = f"{refs_ok}/{refs_total}"
    return res


# ---------------------------------------------------------------------------------------------- bench
class Worker:
    def __init__(self, tool: str, data: Path, work: Path, py: str) -> None:
        self.tool = tool
        self.log = open(work / f"worker-{tool}.log", "wb")  # noqa: SIM115 - closed in close()
        env = {**os.environ, "MESSAGELEVEL": "QUIET", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [py, __file__, "worker", "--tool", tool, "--src", str(data), "--out", str(work / tool),
             "--recipe", str(work / "deid.recipe")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)

    def run(self, name: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(name + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            return {"tool": self.tool, "run": name, "error": f"worker exited ({self.proc.poll()})"}
        return dict(json.loads(line))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def bench(a: argparse.Namespace) -> int:
    data, work = Path(a.data), Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "deid.recipe").write_text(deid_recipe())
    tools = [t for t in a.tools.split(",") if t]
    results: dict[str, Any] = json.loads(Path(a.results).read_text()) if Path(a.results).exists() else {}
    files = sorted(data.glob("*.dcm"))
    results.update({"meta": {"tools": tools, "runs": a.runs, "files": len(files), "versions": versions(),
                             "bytes": sum(f.stat().st_size for f in files),
                             "profile": "basic+" + "+".join(PROFILE_OPTIONS), "jitter_days": JITTER_DAYS,
                             "recipe_lines": sum(1 for ln in deid_recipe().splitlines() if ln[:1].isupper()),
                             "cpu": _cpu_model(), "nproc": os.cpu_count(), "load_before": _loadavg()},
                    "runs": [], "checks": {}})
    save = lambda: Path(a.results).write_text(json.dumps(results, indent=1) + "\n")  # noqa: E731
    workers = {t: Worker(t, data, work, a.py) for t in tools}
    try:
        for t, w in workers.items():
            rec = w.run("warmup")
            print(f"[deid] warm-up {t}: {_line(rec)}", file=sys.stderr)
            results["runs"].append({**rec, "warmup": True})
        for p in range(a.runs):
            order = tools[p % len(tools):] + tools[: p % len(tools)]
            for t in order:
                rec = workers[t].run(f"pass{p}")
                print(f"[deid] pass {p} {t}: {_line(rec)}", file=sys.stderr)
                results["runs"].append({**rec, "pass": p})
                save()
    finally:
        for w in workers.values():
            w.close()
    for t in tools:
        results["checks"][t] = check(data, work / t)
        print(f"[deid] check {t}: {json.dumps(results['checks'][t])}", file=sys.stderr)
    results["meta"]["load_after"] = _loadavg()
    save()
    if not a.keep:
        for t in tools:
            shutil.rmtree(work / t, ignore_errors=True)
    return 0


def _line(rec: dict[str, Any]) -> str:
    if rec.get("error"):
        return "ERROR " + str(rec["error"])
    return (f"{rec['files'] / rec['seconds']:.1f} instances/s ({rec['seconds']:.2f} s, "
            f"cpu {rec['cpu']:.2f} s, {rec['written']} written)")


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --------------------------------------------------------------------------------------------- export
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", "Accept": "application/json, application/dicom+json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status, headers = r.read(), r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        raw, status, headers = e.read(), e.code, dict(e.headers)
    try:
        return status, headers, json.loads(raw) if raw else None
    except ValueError:
        return status, headers, raw.decode(errors="replace")[:500]


@contextlib.contextmanager
def pacs_up(cmd: list[str], data_dir: Path, log_path: Path,
            timeout: float = 120) -> Iterator[tuple[int, int]]:
    """`pacs up` on free ports in a session of its own; yields (dimse, http) once "pacs: ready"."""
    dimse, http = _free_port(), _free_port()
    full = [*cmd, "--data-dir", str(data_dir), "--host", "127.0.0.1", "--dimse-port", str(dimse),
            "--http-port", str(http)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(full, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while "pacs: ready" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None:
                raise RuntimeError(f"pacs up exited ({proc.returncode}); see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"pacs up not ready after {timeout:.0f} s; see {log_path}")
            time.sleep(0.1)
        yield dimse, http
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def export(a: argparse.Namespace) -> int:
    data, work = Path(a.data), Path(a.work) / "export"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results: dict[str, Any] = json.loads(Path(a.results).read_text()) if Path(a.results).exists() else {}
    manifest = json.loads((data / "manifest.json").read_text())
    files = sorted(data.glob("*.dcm"))
    rec: dict[str, Any] = {"instances": len(files), "jobs": [], "status": "?", "load_before": _loadavg()}
    results["export"] = rec
    save = lambda: Path(a.results).write_text(json.dumps(results, indent=1) + "\n")  # noqa: E731
    try:
        with pacs_up(a.pacs_cmd.split(), work / "data", work / "pacs.log") as (dimse, http):
            base = f"http://127.0.0.1:{http}"
            t0 = time.perf_counter()
            out = subprocess.run(
                ["storescu", "-aet", "BENCH", "-aec", a.aet, "127.0.0.1", str(dimse), *map(str, files)],
                capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"}, timeout=600)
            rec["store_seconds"] = time.perf_counter() - t0
            if out.returncode != 0:
                rec["status"] = f"failed: storescu exited {out.returncode}: {out.stderr[-500:]}"
                return 1
            series = f"studies/{manifest['study_uid']}/series/{manifest['series_uid']}"
            qido = f"{base}/dicomweb/{series}/instances?includefield=00080018&limit=100000"
            deadline = time.monotonic() + 120
            while True:
                status, _, body = _http("GET", qido)
                n = len(body) if status == 200 and isinstance(body, list) else 0
                if n >= len(files):
                    break
                if time.monotonic() > deadline:
                    rec["status"] = f"failed: QIDO-RS lists {n} of {len(files)} instances after 120 s"
                    return 1
                time.sleep(0.2)
            rec["indexed_seconds"] = time.perf_counter() - t0
            body = {"studies": [manifest["study_uid"]], "profile": "basic", "options": PROFILE_OPTIONS,
                    "destination": {"type": "files"}}
            for j in range(a.runs + 1):
                job = _export_job(f"{base}/exports", base, body, a.job_timeout)
                job["warmup"] = j == 0
                rec["jobs"].append(job)
                print(f"[deid] export job {j}{' (warm-up)' if j == 0 else ''}: {json.dumps(job)[:300]}",
                      file=sys.stderr)
                save()
                if job["status"] == "skipped":
                    rec["status"] = "skipped"
                    rec["reason"] = job["reason"]
                    return 0
                if job["status"] != "done":
                    rec["status"] = f"failed: {job.get('reason', job['status'])}"
                    return 1
            rec["status"] = "ok"
            return 0
    except Exception as exc:
        rec["status"] = f"failed: {type(exc).__name__}: {exc}"
        return 1
    finally:
        rec["load_after"] = _loadavg()
        save()


def _export_job(url: str, base: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    status, headers, answer = _http("POST", url, body)
    if status == 404:
        return {"status": "skipped", "reason": f"POST /exports answered 404 ({str(answer)[:200]}): no export "
                "API in this build (it comes with the export jobs' branch)"}
    if status != 202:
        return {"status": "failed", "reason": f"POST /exports answered {status}: {str(answer)[:300]}"}
    location = headers.get("Location") or headers.get("location") or ""
    if not location and isinstance(answer, dict) and answer.get("id"):
        location = f"/exports/{answer['id']}"
    if not location:
        return {"status": "failed", "reason": "202 without a Location header"}
    job_url = location if location.startswith("http") else base + location
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        st, _, last = _http("GET", job_url)
        state = last.get("status") if st == 200 and isinstance(last, dict) else None
        if state in ("done", "failed", "error", "cancelled"):
            secs = time.perf_counter() - t0
            progress, totals = last.get("progress") or {}, last.get("totals") or {}
            pairs = (("instances", totals.get("instances")), ("done", progress.get("done")),
                     ("failed", progress.get("failed")), ("heldBack", progress.get("heldBack")))
            counts = {k: v for k, v in pairs if v is not None}
            n = counts.get("done") if isinstance(counts.get("done"), int) else counts.get("instances")
            return {"status": state, "seconds": secs, "location": location, "counts": counts,
                    "instances_per_s": (n / secs) if isinstance(n, int) and secs > 0 else None,
                    "reason": "" if state == "done" else str(last)[:300]}
        time.sleep(0.05)
    return {"status": "timeout", "reason": f"not done after {timeout:.0f} s; last: {str(last)[:300]}"}


# ----------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--src", required=True)
    g.add_argument("--out", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--tool", choices=TOOLS, required=True)
    w.add_argument("--src", required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--recipe", required=True)
    for name in ("bench", "export"):
        p = sub.add_parser(name)
        p.add_argument("--data", required=True)
        p.add_argument("--work", required=True)
        p.add_argument("--results", required=True)
        p.add_argument("--runs", type=int, default=3)
        p.add_argument("--py", default=sys.executable)
    b = sub.choices["bench"]
    b.add_argument("--tools", default=",".join(TOOLS))
    b.add_argument("--keep", action="store_true", help="keep the last run's output files")
    e = sub.choices["export"]
    e.add_argument("--pacs-cmd", default=f"{Path(sys.executable).with_name('pacs')} up")
    e.add_argument("--aet", default="PACS")
    e.add_argument("--job-timeout", type=float, default=600)
    a = ap.parse_args()
    if a.cmd == "gen":
        return gen(Path(a.src), Path(a.out))
    if a.cmd == "worker":
        return worker(a.tool, Path(a.src), Path(a.out), Path(a.recipe))
    if a.cmd == "bench":
        return bench(a)
    return export(a)


if __name__ == "__main__":
    sys.exit(main())
