"""Stand-in for `pacs up` in the ingest benchmark (to test the harness while the real server is not ready).

Usage: python bench/standin_pacs.py up [--data-dir DIR] [--dimse-port 11112] [--http-port 8080]
                                       [--ae-title PACS] [--host 127.0.0.1]

Same command line as `pacs up`. A minimal pynetdicom Storage SCP (AE title PACS, all storage SOP classes,
uncompressed transfer syntaxes) that writes each received data set's encoded bytes unchanged, behind a
file meta header, to DIR/<SOPInstanceUID>.dcm (pynetdicom's fast path: no decoding), plus a tiny HTTP
server with /health and the QIDO-RS path /dicomweb/studies/{study}/series/{series}/instances (a list of
the stored instances, so the benchmark's count check works). Ctrl-C / SIGINT / SIGTERM stop it cleanly.
Requires pynetdicom and pydicom (the project's venv has both).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["up"])
    ap.add_argument("--data-dir", default="pacs-data")
    ap.add_argument("--dimse-port", type=int, default=11112)
    ap.add_argument("--http-port", type=int, default=8080)
    ap.add_argument("--ae-title", default="PACS")
    ap.add_argument("--host", default="127.0.0.1")
    a = ap.parse_args()
    out = Path(a.data_dir) / "instances"
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, list[str]] = {}  # "study/series" -> SOP Instance UIDs
    lock = threading.Lock()

    def handle_store(event: Any) -> int:
        req = event.request
        sop = req.AffectedSOPInstanceUID
        path = out / f"{sop}.dcm"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(b"\x00" * 128 + b"DICM")
            write_file_meta_info(f, event.file_meta, enforce_standard=True)
            f.write(req.DataSet.getvalue())
        os.replace(tmp, path)
        ds = event.dataset  # lazy decode of the few header elements needed for the index
        with lock:
            index.setdefault(f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}", []).append(sop)
        return 0x0000

    ae = AE(ae_title=a.ae_title)
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    ae.maximum_associations = 16
    dimse = ae.start_server(
        (a.host, a.dimse_port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store)]
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = self.path.split("?")[0].strip("/").split("/")
            if parts == ["health"]:
                body: Any = {"status": "ok"}
            elif (
                len(parts) == 6
                and parts[:2] == ["dicomweb", "studies"]
                and parts[3::2] == ["series", "instances"]
            ):
                with lock:
                    sops = list(index.get(f"{parts[2]}/{parts[4]}", []))
                body = [{"00080018": {"vr": "UI", "Value": [s]}} for s in sops]
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer((a.host, a.http_port), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(
        f"stand-in PACS {a.ae_title} DIMSE {a.host}:{a.dimse_port} HTTP {a.http_port} data {a.data_dir}",
        flush=True,
    )
    while not stop.wait(0.5):
        pass
    dimse.shutdown()
    http.shutdown()
    print("stand-in PACS stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
