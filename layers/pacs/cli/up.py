"""`pacs up`: the whole PACS on one machine (DESIGN.md, local contract ◆).

The supervisor reconciles the object store against the catalog, runs the indexer worker on the
embedded queue, and starts two children: the DIMSE gateway (`python -m gateway`, pre-forked
workers) and the DICOMweb app under uvicorn. They share storage through the backend, configured by
`PACS_*` variables. Ctrl-C stops the gateway (open associations finish), then the web server, then
drains the queue: everything acknowledged is indexed before exit. A child that exits unexpectedly
is restarted (with back-off) on the same listening sockets while the other keeps serving. With
`--backend aws` the same tree runs on S3/DynamoDB and the worker consumes the SQS queue
PACS_QUEUE_URL (`--endpoint-url`: moto).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pacs.backends import Backend, open_backend
from pacs.catalog.nodes import RemoteNode
from pacs.cli.children import PARENT_PID, die_with_parent
from pacs.config import Settings
from pacs.monitoring import multiprocess
from pacs.services import index_worker
from pacs.services.indexer import IndexerService
from pacs.services.reconcile import reconcile

if TYPE_CHECKING:
    from pacs.services.event_worker import EventWorker

W = TypeVar("W", bound="EventWorker")
R = TypeVar("R")

READY_TIMEOUT = 60.0
#: A child (gateway, web server) that exits unasked is restarted after FIRST_BACKOFF seconds,
#: doubled for each exit in a row of one that ran less than STABLE_SECONDS, up to MAX_BACKOFF.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
STABLE_SECONDS = 30.0


#: Connections the kernel holds until a worker accepts them: a burst (a port scan, health checks,
#: many modalities at once) waits here instead of having its SYNs dropped (retried 1 s later).
LISTEN_BACKLOG = 1024


def _listen(host: str, port: int) -> socket.socket:
    """Bind a listening socket here, so a busy port is a clear error before anything starts; the
    children serve it (the gateway with `--fd`, uvicorn with `--fd`)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"pacs: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _dimse_answers(host: str, port: int, ae_title: str) -> bool:
    """The gateway answers an association request (accepted, or rejected by its calling-AE policy: it
    is up either way). Its socket is bound before it starts, so this waits for a worker to serve it."""
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from pacs.dimse.reactor import EventAE

    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # a refused probe is not an error here
    local = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    ae = EventAE(ae_title="PACS-UP")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 2
    try:
        assoc = ae.associate(local, port, ae_title=ae_title)
        if assoc.is_established:
            assoc.release()
            return True
        return bool(assoc.is_rejected)
    finally:
        ae.shutdown()


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(settings: Settings, nodes: Sequence[RemoteNode] = ()) -> int:
    """Serve until signalled; `nodes` (from `--config`) are put into the node registry first."""
    _check_policy(settings)  # a policy that cannot be used stops `pacs up` before anything starts
    multiprocess.prepare(multiprocess.directory_for(settings.data_dir))  # every child's metrics, merged
    tls_sock = _tls_listen(settings)
    dimse_sock = _listen(settings.host, settings.dimse_port)
    http_sock = _listen(settings.host, settings.http_port)
    backend = open_backend(settings)
    if nodes and backend.nodes is not None:
        for node in nodes:
            backend.nodes.put_node(node)
        print(f"pacs: {len(nodes)} remote node(s) from the configuration file", flush=True)
    where = f"{settings.data_dir.resolve()}" if settings.backend == "embedded" else \
        f"s3://{settings.bucket}" + (f" at {settings.endpoint_url}" if settings.endpoint_url else "")
    print(f"pacs: {settings.backend} storage at {where}, partition {settings.partition}", flush=True)
    report = reconcile(backend.store, backend.catalog, settings.partition, backend.events)
    print(f"pacs: reconciled {report.scanned} stored instances, indexed {report.indexed} missing"
          + (f", {len(report.failed)} failed" if report.failed else ""), flush=True)

    stop_indexing = threading.Event()
    worker: threading.Thread | None = None
    if backend.queue is not None:
        indexer = IndexerService(backend.store, backend.catalog, backend.events)
        worker = threading.Thread(
            target=index_worker.run, args=(backend.queue, indexer, stop_indexing), name="indexer"
        )
        worker.start()
    transcoding = _start_transcoder(settings, stop_indexing)
    exporting = _start_exports(settings, stop_indexing)
    anonymizing = _start_anonymizer(settings, stop_indexing)
    stabling = _start_study_stable(settings, backend, stop_indexing)

    env = {**os.environ, **settings.to_env()}
    tls_args = ["--tls-fd", str(tls_sock.fileno())] if tls_sock is not None else []
    gateway = Child("gateway", [sys.executable, "-m", "gateway", "--fd", str(dimse_sock.fileno()), *tls_args],
                    env, (dimse_sock.fileno(), *([tls_sock.fileno()] if tls_sock else [])))
    web = Child("web", [sys.executable, "-m", "functions.dicomweb.serve", "--fd", str(http_sock.fileno())],
                env, (http_sock.fileno(),))
    # The listening sockets stay open here too: a child that dies is restarted on them, and
    # connections arriving meanwhile wait in their backlog.
    stopping: list[int] = []  # a plain flag: a signal handler must not take locks (Event.set does)

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        gateway.start()
        web.start()
        deadline = time.monotonic() + READY_TIMEOUT
        url = f"http://{settings.host}:{settings.http_port}"
        while not (_healthy(f"{url}/health")
                   and _dimse_answers(settings.host, settings.dimse_port, settings.ae_title)):
            if stopping or not gateway.running or not web.running or time.monotonic() > deadline:
                if not stopping:
                    print("pacs: a service failed to start", file=sys.stderr, flush=True)
                    code = 1
                    stopping.append(0)
                break
            time.sleep(0.1)
        else:
            print(f"pacs: DIMSE  {settings.ae_title}@{settings.host}:{settings.dimse_port}\n"
                  + (f"pacs: DICOM TLS {settings.host}:{settings.tls_port}\n" if tls_sock else "")
                  + f"pacs: DICOMweb {url}/dicomweb\n"
                  + (f"pacs: viewer {url}/viewer/\n" if _healthy(f"{url}/viewer/")
                     else "pacs: viewer not installed (make viewer)\n")
                  + f"pacs: health {url}/health  metrics {url}/metrics\n"
                  "pacs: ready (Ctrl-C to stop)", flush=True)
        while not stopping:
            time.sleep(0.2)
            for child in (gateway, web):
                if not stopping:
                    child.supervise()  # the other one keeps serving meanwhile
    finally:
        print("pacs: stopping", flush=True)
        gateway.stop(40)
        web.stop(20)
        for sock in (dimse_sock, http_sock, tls_sock):
            if sock is not None:
                sock.close()
        stop_indexing.set()
        if worker is not None:
            worker.join()
        for thread in (transcoding, exporting, anonymizing, stabling):
            if thread is not None:
                thread.join()
        backend.close()
        for s, h in previous.items():
            signal.signal(s, h)
        print("pacs: stopped", flush=True)
    return code


def _check_policy(settings: Settings) -> None:
    if settings.backend == "embedded" and settings.transcode_policy.strip():
        from pacs.services.transcode_policy import PolicyError, load_policy

        try:
            load_policy(settings.transcode_policy)
        except PolicyError as exc:
            raise SystemExit(f"pacs: the transcode policy cannot be used: {exc}") from None
    if settings.backend == "embedded" and settings.deid_rules.strip():
        from pacs.services.deid_rules import RulesError, load_rules

        try:
            load_rules(settings.deid_rules)
        except RulesError as exc:
            raise SystemExit(f"pacs: the de-identification rules cannot be used: {exc}") from None
    if settings.deid_pixel_rules.strip():
        from pacs.deid.project import pixel_rules

        try:
            pixel_rules(settings)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"pacs: the pixel rules cannot be used: {exc}") from None


def _start_transcoder(settings: Settings, stop: threading.Event) -> threading.Thread | None:
    """The transcoder worker (embedded, when PACS_TRANSCODE_POLICY names a policy): a thread that
    follows the event log and transcodes in a pool of processes; stopped with the indexer."""
    if settings.backend != "embedded" or not settings.transcode_policy.strip():
        return None
    from pacs.services.transcode_policy import PolicyError, describe
    from pacs.services.transcode_worker import TranscodeWorker

    return _start_rules_worker(stop, "transcoder", lambda: TranscodeWorker(settings, init=die_with_parent),
                               PolicyError, "the transcode policy", lambda w: w.policy, describe)


def _start_exports(settings: Settings, stop: threading.Event) -> threading.Thread | None:
    """The export worker (embedded): a thread consuming the task queue of export jobs with a pool of
    processes; stopped with the indexer (tasks in flight finish, queued ones wait for the next start)."""
    if settings.backend != "embedded":
        return None  # on AWS the anonymizer function runs export tasks from its SQS queue
    from pacs.services.export_worker import ExportWorker

    worker = ExportWorker(settings, init=die_with_parent)
    print(f"pacs: export jobs: {worker.workers} process(es)", flush=True)
    thread = threading.Thread(target=worker.run, args=(stop,), name="exports")
    thread.start()
    return thread


def _start_anonymizer(settings: Settings, stop: threading.Event) -> threading.Thread | None:
    """The anonymizer worker (embedded, when PACS_DEID_RULES names rules): a thread that follows the
    event log and de-identifies in a pool of processes; stopped with the indexer."""
    if settings.backend != "embedded" or not settings.deid_rules.strip():
        return None
    from pacs.services.anonymize_worker import AnonymizeWorker
    from pacs.services.deid_rules import RulesError, describe

    return _start_rules_worker(stop, "anonymizer", lambda: AnonymizeWorker(settings, init=die_with_parent),
                               RulesError, "the de-identification rules", lambda w: w.rules, describe)


def _start_study_stable(settings: Settings, backend: Backend, stop: threading.Event
                        ) -> threading.Thread | None:
    """The study-stable worker (embedded, unless PACS_STUDY_QUIET_SECONDS is 0): a thread that follows
    the event log and emits StudyStable when a study had no new instance for the quiet time."""
    if settings.backend != "embedded" or settings.study_quiet_seconds <= 0:
        return None
    from pacs.services.stable_worker import StableWorker

    worker = StableWorker(settings, backend.catalog)
    print(f"pacs: study-stable: after {settings.study_quiet_seconds} s without a new instance", flush=True)
    thread = threading.Thread(target=worker.run, args=(stop,), name=worker.name)
    thread.start()
    return thread


def _start_rules_worker(stop: threading.Event, name: str, make: Callable[[], W], error: type[Exception],
                        what: str, rules_of: Callable[[W], R], describe: Callable[[R], Iterable[str]]
                        ) -> threading.Thread | None:
    """Start the worker `make` builds (refusing to start, `what` cannot be used, on `error`) in a thread
    named `name`; None, the worker closed, when it has no rules."""
    try:
        worker = make()
    except error as exc:
        raise SystemExit(f"pacs: {what} cannot be used: {exc}") from None
    rules = rules_of(worker)
    if not rules:
        worker.close()
        return None
    print(f"pacs: {name}: {worker.workers} process(es), rules: " + "; ".join(describe(rules)), flush=True)
    thread = threading.Thread(target=worker.run, args=(stop,), name=name)
    thread.start()
    return thread


class Child:
    """A child process of `pacs up` (the gateway, the web server), restarted when it exits unasked:
    after FIRST_BACKOFF seconds, doubled for each exit in a row of one that ran less than
    STABLE_SECONDS, up to MAX_BACKOFF."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], fds: Sequence[int]) -> None:
        self.name, self.argv, self.env, self.fds = name, argv, env, tuple(fds)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.streak = 0
        self.due: float | None = None  # when to restart it
        self.restarts = 0

    def start(self) -> None:
        # No preexec_fn: this process has threads (the workers' supervisors); the child follows its
        # parent itself (`follow_parent`, PACS_PARENT_PID).
        self.proc = subprocess.Popen(self.argv, env={**self.env, PARENT_PID: str(os.getpid())},
                                     pass_fds=self.fds)
        self.started = time.monotonic()
        self.due = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def supervise(self) -> None:
        """Restart it if it exited and its back-off has passed."""
        if self.proc is None or self.running:
            return
        now = time.monotonic()
        if self.due is None:
            lived = now - self.started
            self.streak = 0 if lived >= STABLE_SECONDS else self.streak + 1
            delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** self.streak)
            print(f"pacs: the {self.name} exited unexpectedly (status {self.proc.returncode}) after "
                  f"{lived:.0f} s; restarting it in {delay:.1f} s", file=sys.stderr, flush=True)
            self.due = now + delay
        elif now >= self.due:
            self.start()
            self.restarts += 1

    def stop(self, timeout: float) -> None:
        if self.proc is not None:
            _stop(self.proc, timeout)


def _tls_listen(settings: Settings) -> socket.socket | None:
    """The DICOM TLS socket when a certificate and key are given, after checking they load."""
    if not (settings.tls_cert or settings.tls_key):
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise SystemExit("pacs: --tls-cert and --tls-key go together")
    from pacs.dimse.tls import server_context

    try:
        server_context(settings.tls_cert, settings.tls_key, settings.tls_ca or None,
                       require_client_cert=bool(settings.tls_require_client_cert))
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise SystemExit(f"pacs: cannot use the TLS certificate, key or CA: {exc}") from None
    return _listen(settings.host, settings.tls_port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the local contract (DESIGN.md ◆), shared by the commands that open storage."""
    parser.add_argument("--data-dir", type=Path, default=None, help="embedded storage (./pacs-data)")
    parser.add_argument("--dimse-port", type=int, default=None, help="DICOM port (11112)")
    parser.add_argument("--http-port", type=int, default=None, help="DICOMweb port (8080)")
    parser.add_argument("--ae-title", default=None, help="AE title (PACS)")
    parser.add_argument("--host", default=None, help="address to listen on (127.0.0.1)")
    parser.add_argument("--gateway-workers", type=int, default=None, help="DIMSE worker processes (2)")
    parser.add_argument("--backend", choices=["embedded", "aws"], default=None)
    parser.add_argument("--endpoint-url", default=None,
                        help="aws backend: one endpoint for S3, DynamoDB, SQS, EventBridge (moto)")


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """DICOM TLS of `pacs up`: off unless a certificate and its key are given."""
    parser.add_argument("--tls-cert", default=None, help="DICOM TLS: server certificate (PEM)")
    parser.add_argument("--tls-key", default=None, help="DICOM TLS: its private key (PEM)")
    parser.add_argument("--tls-ca", default=None, help="DICOM TLS: CA that signs client certificates")
    parser.add_argument("--tls-port", type=int, default=None, help="DICOM TLS port (2762)")
    parser.add_argument("--tls-require-client-cert", action="store_const", const=1, default=None,
                        help="refuse TLS clients without a certificate signed by --tls-ca")


def add_transcoder_arguments(parser: argparse.ArgumentParser) -> None:
    """The embedded transcoder of `pacs up`: off unless a policy is given."""
    parser.add_argument("--transcode-policy", default=None,
                        help="a TOML or JSON transcode policy (README, Transcoder); none: no transcoder")
    parser.add_argument("--transcode-workers", type=int, default=None,
                        help="transcoder processes (one per CPU)")


def add_anonymizer_arguments(parser: argparse.ArgumentParser) -> None:
    """The embedded anonymizer of `pacs up`: off unless rules are given."""
    parser.add_argument("--deid-rules", default=None,
                        help="TOML or JSON de-identification rules (README, Anonymizer); none: no anonymizer")
    parser.add_argument("--deid-workers", type=int, default=None, help="anonymizer processes (one per CPU)")
    parser.add_argument("--study-quiet-seconds", type=int, default=None,
                        help="StudyStable after this many seconds without a new instance (60; 0: off)")
    parser.add_argument("--deid-pixel-rules", default=None,
                        help="TOML/JSON burned-in regions to blank (Clean Pixel Data: docs/deid-pixels.md)")
