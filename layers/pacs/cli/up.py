"""`pacs up`: the whole PACS on one machine (DESIGN.md, local contract ◆).

The supervisor reconciles the object store against the catalog, runs the indexer worker on the
embedded queue, and starts two children: the DIMSE gateway (`python -m gateway`, pre-forked
workers) and the DICOMweb app under uvicorn. They share storage through the backend, configured by
`PACS_*` variables. Ctrl-C stops the gateway (open associations finish), then the web server, then
drains the queue: everything acknowledged is indexed before exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from pacs.backends import open_backend
from pacs.config import Settings
from pacs.services import index_worker
from pacs.services.indexer import IndexerService
from pacs.services.reconcile import reconcile

READY_TIMEOUT = 60.0


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(settings: Settings) -> int:
    backend = open_backend(settings)
    where = f"{settings.data_dir.resolve()}" if settings.backend == "embedded" else settings.bucket
    print(f"pacs: {settings.backend} storage at {where}, partition {settings.partition}", flush=True)
    report = reconcile(backend.store, backend.catalog, settings.partition)
    print(f"pacs: reconciled {report.scanned} stored instances, indexed {report.indexed} missing"
          + (f", {len(report.failed)} failed" if report.failed else ""), flush=True)

    stop_indexing = threading.Event()
    worker: threading.Thread | None = None
    if backend.queue is not None:
        indexer = IndexerService(backend.store, backend.catalog)
        worker = threading.Thread(
            target=index_worker.run, args=(backend.queue, indexer, stop_indexing), name="indexer"
        )
        worker.start()

    env = {**os.environ, **settings.to_env()}
    gateway = subprocess.Popen([sys.executable, "-m", "gateway"], env=env)
    web = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "functions.dicomweb.app:create_app", "--factory",
         "--host", settings.host, "--port", str(settings.http_port), "--no-access-log",
         "--log-level", "warning", "--timeout-graceful-shutdown", "10"],
        env=env,
    )
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not (_port_open(settings.host, settings.dimse_port)
                   and _port_open(settings.host, settings.http_port)):
            if stopping.is_set() or gateway.poll() is not None or web.poll() is not None \
                    or time.monotonic() > deadline:
                print("pacs: a service failed to start", file=sys.stderr, flush=True)
                code = 1
                stopping.set()
                break
            time.sleep(0.1)
        else:
            url = f"http://{settings.host}:{settings.http_port}"
            print(f"pacs: DIMSE  {settings.ae_title}@{settings.host}:{settings.dimse_port}\n"
                  f"pacs: DICOMweb {url}/dicomweb\n"
                  f"pacs: health {url}/health  metrics {url}/metrics\n"
                  "pacs: ready (Ctrl-C to stop)", flush=True)
        while not stopping.wait(0.5):
            if gateway.poll() is not None or web.poll() is not None:
                print("pacs: a service exited unexpectedly; stopping", file=sys.stderr, flush=True)
                code = 1
                break
    finally:
        print("pacs: stopping", flush=True)
        _stop(gateway, 40)
        _stop(web, 20)
        stop_indexing.set()
        if worker is not None:
            worker.join()
        backend.close()
        for s, h in previous.items():
            signal.signal(s, h)
        print("pacs: stopped", flush=True)
    return code


def add_arguments(parser: object) -> None:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    parser.add_argument("--data-dir", type=Path, default=None, help="embedded storage (./pacs-data)")
    parser.add_argument("--dimse-port", type=int, default=None, help="DICOM port (11112)")
    parser.add_argument("--http-port", type=int, default=None, help="DICOMweb port (8080)")
    parser.add_argument("--ae-title", default=None, help="AE title (PACS)")
    parser.add_argument("--host", default=None, help="address to listen on (127.0.0.1)")
    parser.add_argument("--gateway-workers", type=int, default=None, help="DIMSE worker processes (2)")
    parser.add_argument("--backend", choices=["embedded", "aws"], default=None)
