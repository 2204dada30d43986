"""WADO-RS in a transfer syntax that is not stored: our `pacs up` beside Orthanc + its DICOMweb plugin.

Usage: python bench/wado_syntaxes_run.py DATA_DIR [--what series|frames] [--syntax 1.2.840.10008.1.2.4.80]
       [--media image/jls] [--frames 50] [--orthanc] [--out FILE.json]

DATA_DIR holds the Explicit VR LE series (bench/gen_data.py ct300). Both servers are started on free
127.0.0.1 ports on empty storage, loaded with dcmtk storescu, then asked, one request at a time:
the series with `transfer-syntax=SYNTAX` (first request: transcoded; second: ours cached), or frame 1
of `--frames` instances as `--media` (first, then again). Wall-clock seconds per measurement and body
sizes, as JSON. Not a test: figures for the README. (Orthanc 1.10 + DICOMweb plugin 1.7 transcode
with DCMTK on every request; they keep no copy.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pydicom

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.interop.support import PacsProcess  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def storescu(port: int, aet: str, files: list[Path]) -> None:
    run = subprocess.run(["storescu", "-aec", aet, "127.0.0.1", str(port), *map(str, files)],
                         capture_output=True, text=True, timeout=900)
    if run.returncode:
        raise SystemExit(f"storescu failed: {run.stderr[-2000:]}")


def start_orthanc(work: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    http, dimse = free_port(), free_port()
    plugin = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
    config = {
        "Name": "bench", "StorageDirectory": str(work / "orthanc-db"),
        "IndexDirectory": str(work / "orthanc-db"), "HttpPort": http, "DicomPort": dimse,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "TcpNoDelay": True,
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    log = open(work / "orthanc.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(["Orthanc", str(work / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{http}/system", timeout=2).status_code == 200:
                return proc, http, dimse
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("Orthanc did not start")


def timed(client: httpx.Client, url: str, accept: str) -> tuple[float, int, int]:
    start = time.perf_counter()
    r = client.get(url, headers={"Accept": accept})
    n = len(r.content)
    return time.perf_counter() - start, r.status_code, n


def measure(base: str, manifest: dict, args: argparse.Namespace) -> dict[str, object]:
    """(seconds, status, bytes) of each measurement: the series, or `args.frames` single frames (frame 1
    of the last instances), each asked twice (first: transcoded; again: ours from the derived copies)."""
    study, series = manifest["study_uid"], manifest["series_uid"]
    out: dict[str, object] = {}
    with httpx.Client(timeout=900) as client:
        if args.what == "series":
            accept = f'multipart/related; type="application/dicom"; transfer-syntax={args.syntax}'
            for label in ("series first", "series again"):
                out[label] = timed(client, f"{base}/studies/{study}/series/{series}", accept)
            return out
        accept = f'multipart/related; type="{args.media}"; transfer-syntax={args.syntax}'
        for label in ("frames first", "frames again"):
            total, codes, size = 0.0, set(), 0
            for sop in manifest["sops"][-args.frames:]:
                url = f"{base}/studies/{study}/series/{series}/instances/{sop}/frames/1"
                t, code, n = timed(client, url, accept)
                total, size = total + t, size + n
                codes.add(code)
            out[label] = (total, sorted(codes), size)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path)
    parser.add_argument("--syntax", default="1.2.840.10008.1.2.4.80")
    parser.add_argument("--media", default="image/jls")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--orthanc", action="store_true")
    parser.add_argument("--what", choices=("series", "frames"), default="series")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    manifest = json.loads((args.data / "manifest.json").read_text())
    files = sorted(args.data.glob("*.dcm"))
    manifest["sops"] = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    work = Path(tempfile.mkdtemp(prefix="wado-syntaxes-"))
    results: dict[str, object] = {"syntax": args.syntax, "what": args.what, "instances": len(files),
                                  "frames": args.frames}
    pacs = PacsProcess(data_dir=work / "pacs", log_path=work / "pacs.log", workers=1).start()
    try:
        storescu(pacs.dimse_port, "PACS", files)
        time.sleep(5)  # the indexer
        results["pacs"] = measure(pacs.dicomweb_url, manifest, args)
    finally:
        pacs.stop()
    if args.orthanc:
        proc, http, dimse = start_orthanc(work)
        try:
            storescu(dimse, "ORTHANC", files)
            results["orthanc"] = measure(f"http://127.0.0.1:{http}/dicom-web", manifest, args)
        finally:
            proc.terminate()
            proc.wait(60)
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
