"""DICOMweb latency/throughput driver of `bash bench/run_dicomweb.sh` (two servers, interleaved).

Usage:
  python bench/dicomweb_run.py gen-mixed [--out bench/out/data/mixed]
      deterministic "mixed" data set (cached like bench/gen_data.py): 5 patients x (CT + MR study) x
      2 series x 10 instances, 128 x 128 int16, Explicit VR Little Endian, distinct study dates;
      manifest.json lists them.
  python bench/dicomweb_run.py wait --server NAME=URL [...] --data DIR [...] [--timeout 60]
      wait until QIDO-RS shows every instance of every DIR/manifest.json on every server
      (GET {URL}/studies/{study}/series/{series}/instances per series). Exit 1 on timeout.
  python bench/dicomweb_run.py bench --server NAME=URL[@PID] [...] --ct300 DIR --mixed DIR --stow DIR
         --results OUT.json [--n 40] [--n-big 4] [--n-stow 3] [--cap-seconds 25]
      the measurements, each one on every server in turn, request by request (A B, then B A, ...), one
      warm-up request per server first, over one persistent keep-alive connection (http.client) per server:
      QIDO (all studies; by PatientID; by StudyDate range; the 300 instances of the CT series), study and
      series metadata, frame 1 of one instance with "Accept-Encoding: identity" and with "gzip" (a gzip
      answer is decompressed inside the timing, as a client must; each timed frame request, and each timed
      QIDO study search (sub-millisecond rows too), directly follows 3 untimed ones to the same server,
      so that neither server is timed waking up from the idle time the
      other server's answer left it: a 33 ms gzip answer of the peer costs the next request of any server
      about 1.2 ms on this VM, even a bare /health, and one request does not fully absorb it), frame 1
      after a 35 ms pause (the idle cost, shown apart), one thumbnail: latency in ms, --n
      requests (fewer if a server needs more than --cap-seconds for them); retrieve of the whole CT series
      (multipart, body read and dropped) --n-big times and STOW-RS of the 50 instances of --stow in one
      POST --n-stow times: MB/s.
      Every STOW request gets a fresh series and fresh SOP Instance UIDs (built before the timing), in one
      study of its own, so no server can short-cut a duplicate. A server that answers an error (or a
      malformed answer) to a measurement is recorded as n/a for it with the status, the run goes on.
      With PID (the server's session leader, started with setsid) "other" = CPU cores used during the
      measurement by neither this client nor the servers' sessions.
Requires pydicom and numpy (gen-mixed, STOW bodies); the HTTP side is the standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import io
import json
import statistics
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu import box_cpu, own_cpu, session_cpu

GENERATOR_VERSION = 1
DCM_JSON = "application/dicom+json"
MP_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
MP_OCTET = "multipart/related; type=application/octet-stream; transfer-syntax=*"


# ----------------------------------------------------------------------------------------- data: mixed
def gen_mixed(out: Path) -> int:
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    patients, per_series, size = 5, 10, 128
    params = {
        "generator_version": GENERATOR_VERSION,
        "patients": patients,
        "per_series": per_series,
        "size": size,
    }
    mpath = out / "manifest.json"
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text())
        except ValueError:
            old = {}
        files = sorted(out.glob("*.dcm"))
        if (
            old.get("params") == params
            and len(files) == old.get("instances")
            and sum(f.stat().st_size for f in files) == old.get("bytes")
        ):
            print(f"data: cached {out} ({len(files)} instances)", file=sys.stderr)
            return 0
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.dcm"):
        stale.unlink()
    mpath.unlink(missing_ok=True)

    def uid(*parts: object) -> str:
        return generate_uid(entropy_srcs=["pacs-bench-mixed", *(str(p) for p in parts)])

    rng = np.random.default_rng(7)
    studies, total, digest = [], 0, hashlib.sha256()
    classes = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}
    for p in range(1, patients + 1):
        for k, mod in enumerate(("CT", "MR")):
            st_uid = uid("study", p, mod)
            date = f"2023{2 + k:02d}{p * 3:02d}"  # CT in February, MR in March, day 3p
            study = {
                "study_uid": st_uid,
                "patient_id": f"MIX{p:05d}",
                "date": date,
                "modality": mod,
                "series": [],
            }
            for s in (1, 2):
                se_uid = uid("series", p, mod, s)
                study["series"].append({"series_uid": se_uid, "instances": per_series})
                for n in range(1, per_series + 1):
                    sop = uid("instance", p, mod, s, n)
                    meta = FileMetaDataset()
                    meta.MediaStorageSOPClassUID = classes[mod]
                    meta.MediaStorageSOPInstanceUID = sop
                    meta.TransferSyntaxUID = ExplicitVRLittleEndian
                    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
                    ds = Dataset()
                    ds.file_meta = meta
                    ds.SpecificCharacterSet = "ISO_IR 100"
                    ds.SOPClassUID, ds.SOPInstanceUID = classes[mod], sop
                    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
                    ds.StudyTime = ds.SeriesTime = f"{9 + k:02d}0000"
                    ds.AccessionNumber = f"MXA{p:03d}{k}"
                    ds.Modality = mod
                    ds.Manufacturer = "SYNTH MEDICAL"
                    ds.ReferringPhysicianName = "REF^DOCTOR"
                    ds.StudyDescription = f"{mod} MIXED {p}"
                    ds.SeriesDescription = f"{mod} SERIES {s}"
                    ds.PatientName = f"MIXED^PATIENT{p}"
                    ds.PatientID = study["patient_id"]
                    ds.PatientBirthDate = f"19{60 + p}0101"
                    ds.PatientSex = "F" if p % 2 else "M"
                    ds.StudyInstanceUID, ds.SeriesInstanceUID = st_uid, se_uid
                    ds.StudyID = str(k + 1)
                    ds.SeriesNumber, ds.InstanceNumber = s, n
                    ds.ImagePositionPatient = ["0", "0", f"{-n:.1f}"]
                    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
                    ds.FrameOfReferenceUID = uid("for", p, mod)
                    ds.SamplesPerPixel = 1
                    ds.PhotometricInterpretation = "MONOCHROME2"
                    ds.Rows = ds.Columns = size
                    ds.PixelSpacing = ["1", "1"]
                    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
                    ds.PixelData = rng.integers(0, 4096, size=(size, size), dtype=np.int16).tobytes()
                    path = out / f"{mod}{p}_{s}_{n:03d}.dcm"
                    ds.save_as(path, enforce_file_format=True)
                    data = path.read_bytes()
                    digest.update(data)
                    total += len(data)
            studies.append(study)
    n_inst = patients * 2 * 2 * per_series
    manifest = {
        "params": params,
        "instances": n_inst,
        "bytes": total,
        "sha256": digest.hexdigest(),
        "studies": studies,
    }
    mpath.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"data: wrote {n_inst} instances, {total / 1e6:.1f} MB to {out}", file=sys.stderr)
    return 0


def series_of(manifest: dict) -> list[tuple[str, str, int]]:
    """(study, series, instances) of a gen_data.py (one series) or gen-mixed manifest."""
    if "studies" in manifest:
        return [
            (st["study_uid"], se["series_uid"], se["instances"])
            for st in manifest["studies"]
            for se in st["series"]
        ]
    return [(manifest["study_uid"], manifest["series_uid"], manifest["instances"])]


# ----------------------------------------------------------------------------------------- HTTP client
class Client:
    """One keep-alive HTTP/1.1 connection to a DICOMweb root, reconnecting if the server closed it."""

    def __init__(self, name: str, url: str, pid: int | None):
        self.name, self.pid = name, pid
        u = urllib.parse.urlsplit(url.rstrip("/"))
        self.host, self.port, self.root = u.hostname or "127.0.0.1", u.port or 80, u.path
        self.conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        headers: dict,
        body: bytes | None = None,
        keep: bool = True,
        timeout: float = 300,
    ) -> tuple[int, dict, bytes | None, int]:
        """(status, lower-case headers, body or None when not kept, wire bytes); gzip bodies decompressed."""
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            try:
                self.conn.request(method, self.root + path, body=body, headers=headers)
                r = self.conn.getresponse()
                hdrs = {k.lower(): v for k, v in r.getheaders()}
                if keep:
                    data = r.read()
                    n = len(data)
                    if hdrs.get("content-encoding", "").lower() == "gzip":
                        data = gzip.decompress(data)
                else:
                    n, data = 0, None
                    while chunk := r.read(1 << 20):
                        n += len(chunk)
                if r.will_close:
                    self.close()
                return r.status, hdrs, data, n
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def parse_servers(specs: list[str]) -> list[Client]:
    out = []
    for s in specs:
        name, rest = s.split("=", 1)
        url, _, pid = rest.partition("@")
        out.append(Client(name, url, int(pid) if pid else None))
    return out


# ----------------------------------------------------------------------------------------- CPU accounting
class Meter:
    def __init__(self, clients: list[Client]):
        self.pids = [c.pid for c in clients]
        self.own0 = own_cpu()
        self.srv0 = [session_cpu(p) for p in self.pids]
        self.box0, self.w0 = box_cpu(), time.monotonic()

    def done(self) -> dict:
        own = own_cpu() - self.own0
        srv = [session_cpu(p) - s0 for p, s0 in zip(self.pids, self.srv0, strict=True)]
        wall = time.monotonic() - self.w0
        other = (box_cpu() - self.box0 - own - sum(srv)) / wall if wall > 0 else 0.0
        return {
            "wall_s": round(wall, 2),
            "client_cores": round(own / wall, 2),
            "other_cores": round(max(other, 0.0), 2),
            "server_cpu_s": [round(x, 2) for x in srv],
        }


# ----------------------------------------------------------------------------------------- measurements
def pct(vals: list[float], q: float) -> float:
    s = sorted(vals)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def mp_parts(hdrs: dict, body: bytes) -> int:
    ctype = hdrs.get("content-type", "")
    for p in ctype.split(";"):
        p = p.strip()
        if p.lower().startswith("boundary="):
            return body.count(b"--" + p.split("=", 1)[1].strip('"').encode()) - 1
    return 0


def check_json_count(expected: int | None):
    def chk(status: int, hdrs: dict, body: bytes | None) -> str | None:
        try:
            got = len(json.loads(body or b"[]"))
        except ValueError:
            return "not JSON"
        if expected is not None and got != expected:
            return f"{got} results, expected {expected}"
        return None

    return chk


def check_frame(min_bytes: int):
    def chk(status: int, hdrs: dict, body: bytes | None) -> str | None:
        if not hdrs.get("content-type", "").lower().startswith("multipart/related"):
            return f"content-type {hdrs.get('content-type')}"
        if mp_parts(hdrs, body or b"") != 1 or len(body or b"") < min_bytes:
            return f"{mp_parts(hdrs, body or b'')} parts, {len(body or b'')} B"
        return None

    return chk


def check_image(status: int, hdrs: dict, body: bytes | None) -> str | None:
    if not hdrs.get("content-type", "").lower().startswith("image/") or not body:
        return f"content-type {hdrs.get('content-type')}"
    return None


def run_measurement(clients: list[Client], spec: dict, cap: float) -> dict:
    """spec: name, kind (latency|throughput), method, path, headers, n, check, bodies, keep, payload."""
    res: dict = {"name": spec["name"], "kind": spec["kind"], "servers": {}}
    alive = []
    for c in clients:  # warm-up: one request each; an error makes that server n/a for this measurement
        r = {"samples": [], "bytes": 0, "wire_bytes": 0}
        res["servers"][c.name] = r
        try:
            body, headers = spec["bodies"](c.name, -1) if "bodies" in spec else (None, spec["headers"])
            st, hdrs, data, wire = c.request(
                spec["method"], spec["path"], headers, body, spec.get("keep", True)
            )
        except (OSError, http.client.HTTPException) as e:
            r["error"] = f"{type(e).__name__}: {e}"
            continue
        if not 200 <= st < 300:
            r["error"] = f"HTTP {st}"
            continue
        bad = spec["check"](st, hdrs, data) if spec.get("check") else None
        if bad:
            r["error"] = bad
            continue
        r["encoding"] = hdrs.get("content-encoding", "identity")
        r["bytes"] = len(data) if data is not None else wire
        r["wire_bytes"] = wire
        alive.append(c)
    meter = Meter(clients)
    t_used = {c.name: 0.0 for c in alive}
    for i in range(spec["n"]):
        order = alive if i % 2 == 0 else alive[::-1]
        for c in order:
            r = res["servers"][c.name]
            if "error" in r or (t_used[c.name] > cap and len(r["samples"]) >= 3):
                continue
            body, headers = spec["bodies"](c.name, i) if "bodies" in spec else (None, spec["headers"])
            try:
                for _ in range(spec.get("warm", 0)):  # untimed requests first: time it awake, not waking up
                    c.request(spec["method"], spec["path"], headers, body, spec.get("keep", True))
                if spec.get("pause"):
                    time.sleep(spec["pause"])
            except (OSError, http.client.HTTPException) as e:
                r["error"] = f"{type(e).__name__}: {e}"
                continue
            t0 = time.perf_counter()
            try:
                st, hdrs, data, wire = c.request(
                    spec["method"], spec["path"], headers, body, spec.get("keep", True)
                )
            except (OSError, http.client.HTTPException) as e:
                r["error"] = f"{type(e).__name__}: {e}"
                continue
            dt = time.perf_counter() - t0
            t_used[c.name] += dt
            if not 200 <= st < 300:
                r["error"] = f"HTTP {st} (request {i + 1})"
                continue
            r["samples"].append(dt)
    res["load"] = meter.done()
    for r in res["servers"].values():
        s = r["samples"]
        if s and "error" not in r:
            r["n"], r["median_ms"], r["p95_ms"] = len(s), statistics.median(s) * 1e3, pct(s, 0.95) * 1e3
            if spec["kind"] == "throughput":
                nb = spec.get("payload") or r["bytes"]
                r["payload_bytes"] = nb
                r["median_MBps"] = nb / statistics.median(s) / 1e6
                r["min_MBps"] = nb / max(s) / 1e6
        elif "error" not in r:
            r["error"] = "no sample"
    line = "  ".join(
        f"{n}: "
        + (
            f"{r['median_ms']:.1f}/{r['p95_ms']:.1f} ms"
            + (f" {r['median_MBps']:.0f} MB/s" if "median_MBps" in r else "")
            if "error" not in r
            else f"n/a ({r['error']})"
        )
        for n, r in res["servers"].items()
    )
    print(f"{spec['name']:34s} {line}  [other {res['load']['other_cores']:.2f} cores]", flush=True)
    return res


def stow_bodies(stow_dir: Path, study_uid: str, n_total: int):
    """n_total multipart bodies of the STOW set, each with a fresh series and fresh SOP Instance UIDs."""
    import pydicom
    from pydicom.uid import generate_uid

    paths = sorted(stow_dir.glob("*.dcm"))
    dsets = [pydicom.dcmread(p) for p in paths]
    out = []
    for _ in range(n_total):
        bnd = uuid.uuid4().hex
        se = generate_uid()
        parts = []
        for ds in dsets:
            sop = generate_uid()
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, se, sop
            ds.file_meta.MediaStorageSOPInstanceUID = sop
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            parts.append(
                f"--{bnd}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buf.getvalue() + b"\r\n"
            )
        out.append((bnd, b"".join(parts) + f"--{bnd}--\r\n".encode(), len(dsets)))
    return out


def bench(a: argparse.Namespace) -> int:
    clients = parse_servers(a.server)
    ct = json.loads((Path(a.ct300) / "manifest.json").read_text())
    mixed = json.loads((Path(a.mixed) / "manifest.json").read_text())
    st, se = ct["study_uid"], ct["series_uid"]
    sops = sorted(p.name for p in Path(a.ct300).glob("*.dcm"))
    import pydicom

    sop = pydicom.dcmread(Path(a.ct300) / sops[len(sops) // 2], stop_before_pixels=True).SOPInstanceUID
    studies = [(s["study_uid"], s["patient_id"], s["date"]) for s in mixed["studies"]]
    dates = sorted(d for _, _, d in studies)
    lo, hi = dates[2], dates[6]
    n_range = sum(lo <= d <= hi for _, _, d in studies) + (lo <= "20230110" <= hi)
    pid = studies[4][1]
    n_pid = sum(p == pid for _, p, _ in studies)
    inst = f"/studies/{st}/series/{se}/instances/{sop}"
    n, frame_bytes = a.n, 512 * 512 * 2
    specs = [
        {
            "name": "qido_studies_all",
            "path": "/studies",
            "accept": DCM_JSON,
            "check": check_json_count(len(studies) + 1),
            "warm": 3,
        },
        {
            "name": "qido_studies_patientid",
            "path": f"/studies?PatientID={pid}",
            "accept": DCM_JSON,
            "check": check_json_count(n_pid),
            "warm": 3,
        },
        {
            "name": "qido_studies_daterange",
            "path": f"/studies?StudyDate={lo}-{hi}",
            "accept": DCM_JSON,
            "check": check_json_count(n_range),
            "warm": 3,
        },
        {
            "name": "qido_instances_300",
            "path": f"/studies/{st}/series/{se}/instances",
            "accept": DCM_JSON,
            "check": check_json_count(ct["instances"]),
        },
        {
            "name": "metadata_study",
            "path": f"/studies/{st}/metadata",
            "accept": DCM_JSON,
            "check": check_json_count(ct["instances"]),
        },
        {
            "name": "metadata_series",
            "path": f"/studies/{st}/series/{se}/metadata",
            "accept": DCM_JSON,
            "check": check_json_count(ct["instances"]),
        },
        {
            "name": "frame_identity",
            "path": f"{inst}/frames/1",
            "accept": MP_OCTET,
            "encoding": "identity",
            "check": check_frame(frame_bytes),
            "warm": 3,
        },
        {
            "name": "frame_gzip",
            "path": f"{inst}/frames/1",
            "accept": MP_OCTET,
            "encoding": "gzip",
            "check": check_frame(frame_bytes),
            "warm": 3,
        },
        {
            "name": "frame_identity_after_35ms_idle",
            "path": f"{inst}/frames/1",
            "accept": MP_OCTET,
            "encoding": "identity",
            "check": check_frame(frame_bytes),
            "pause": 0.035,
        },
        {
            "name": "thumbnail",
            "path": f"{inst}/thumbnail",
            "accept": "image/jpeg, image/png;q=0.9, image/gif;q=0.5",
            "check": check_image,
        },
    ]
    for s in specs:
        s.update(
            kind="latency",
            method="GET",
            n=n,
            headers={"Accept": s.pop("accept"), "Accept-Encoding": s.pop("encoding", "identity")},
        )
    specs.append(
        {
            "name": "retrieve_series",
            "kind": "throughput",
            "method": "GET",
            "path": f"/studies/{st}/series/{se}",
            "headers": {"Accept": MP_DICOM, "Accept-Encoding": "identity"},
            "n": a.n_big,
            "keep": False,
            "payload": ct["bytes"],
        }
    )
    # STOW: bodies built before any timing; one per server and request (+ warm-up), fresh UIDs each
    stow_study = generate_stow_study()
    per = a.n_stow + 1
    bodies = stow_bodies(Path(a.stow), stow_study, per * len(clients))
    stow_payload = sum(p.stat().st_size for p in Path(a.stow).glob("*.dcm"))
    pool = {c.name: bodies[k * per : (k + 1) * per] for k, c in enumerate(clients)}

    def stow_body(name: str, i: int) -> tuple[bytes, dict]:
        bnd, body, _ = pool[name][i + 1]
        return body, {
            "Accept": DCM_JSON,
            "Accept-Encoding": "identity",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={bnd}',
        }

    stow_spec = {
        "name": "stow_50",
        "kind": "throughput",
        "method": "POST",
        "path": "/studies",
        "n": a.n_stow,
        "payload": stow_payload,
        "bodies": stow_body,
    }
    results = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "servers": [c.name for c in clients],
        "n": n,
        "n_big": a.n_big,
        "n_stow": a.n_stow,
        "cap_seconds": a.cap_seconds,
        "query": {
            "n_studies": len(studies) + 1,
            "patient_id": pid,
            "date_range": f"{lo}-{hi}",
            "frame_instance": sop,
            "stow_instances": bodies[0][2] if bodies else 0,
            "stow_bytes": stow_payload,
            "series_bytes": ct["bytes"],
        },
        "measurements": [],
    }
    t0 = time.monotonic()
    for spec in specs:
        results["measurements"].append(run_measurement(clients, spec, a.cap_seconds))
    # STOW last: it adds a study
    results["measurements"].append(run_measurement(clients, stow_spec, a.cap_seconds))
    results["seconds"] = round(time.monotonic() - t0, 1)
    Path(a.results).write_text(json.dumps(results, indent=1) + "\n")
    print(f"bench: {len(results['measurements'])} measurements in {results['seconds']} s -> {a.results}")
    return 0


def generate_stow_study() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


# ----------------------------------------------------------------------------------------- wait
def wait(a: argparse.Namespace) -> int:
    clients = parse_servers(a.server)
    want = [x for d in a.data for x in series_of(json.loads((Path(d) / "manifest.json").read_text()))]
    total = sum(n for _, _, n in want)
    deadline = time.monotonic() + a.timeout
    for c in clients:
        t0 = time.monotonic()
        while True:
            got = 0
            for st, se, _ in want:
                try:
                    status, _, body, _ = c.request(
                        "GET", f"/studies/{st}/series/{se}/instances?limit=100000", {"Accept": DCM_JSON}
                    )
                    if status == 200 and body:
                        got += len(json.loads(body))
                except (OSError, http.client.HTTPException, ValueError):
                    pass
            if got >= total:
                print(
                    f"[wait] {c.name}: QIDO shows {got}/{total} instances after {time.monotonic() - t0:.1f}s"
                )
                break
            if time.monotonic() > deadline:
                print(
                    f"[wait] !! {c.name}: QIDO shows {got}/{total} instances after {a.timeout}s",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.3)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen-mixed")
    g.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "data" / "mixed"))
    w = sub.add_parser("wait")
    w.add_argument("--server", action="append", required=True)
    w.add_argument("--data", action="append", required=True)
    w.add_argument("--timeout", type=float, default=60)
    b = sub.add_parser("bench")
    b.add_argument("--server", action="append", required=True)
    b.add_argument("--ct300", required=True)
    b.add_argument("--mixed", required=True)
    b.add_argument("--stow", required=True)
    b.add_argument("--results", required=True)
    b.add_argument("--n", type=int, default=40)
    b.add_argument("--n-big", type=int, default=4)
    b.add_argument("--n-stow", type=int, default=3)
    b.add_argument("--cap-seconds", type=float, default=25)
    a = ap.parse_args()
    if a.cmd == "gen-mixed":
        return gen_mixed(Path(a.out))
    if a.cmd == "wait":
        return wait(a)
    return bench(a)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("dicomweb_run: interrupted", file=sys.stderr)
        sys.exit(130)
