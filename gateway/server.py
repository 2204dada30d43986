"""Run the gateway: N worker processes serve one listening socket bound before they fork.

One pynetdicom process is bound by the GIL (≈150-200 instances/s); workers sharing the port scale
ingest across cores. The parent supervises them: a worker that dies is replaced (with back-off),
its association slots released, its spool files removed by its successor. SIGTERM/SIGINT stop
accepting, let open associations finish (bounded), exit.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from pacs.backends import ingest_service, open_backend
from pacs.cli.children import die_with_parent, follow_parent
from pacs.config import Settings
from pacs.monitoring import dimse as dimse_metrics
from pacs.monitoring import emf_reporter
from pacs.monitoring.metrics import heartbeat
from pacs.monitoring.multiprocess import mark_dead

from gateway import find_fast, store_fast
from gateway.ae import make_ae, start_server
from gateway.context import GatewayContext
from gateway.counters import COUNTERS
from gateway.handlers import handlers
from gateway.policy import AssociationCounter, AssociationPolicy, ConnectionGuard, configure
from gateway.spool import TRACKER, remove_orphans
from gateway.tls import acceptor_context

log = logging.getLogger("gateway")
#: How long a stopping worker lets open associations finish before aborting them. Nothing is lost:
#: a C-STORE is answered with success only after its object is durable.
GRACE_SECONDS = 10.0
#: A worker that died is replaced after FIRST_BACKOFF seconds, doubled for each death in a row of
#: one that lived less than STABLE_SECONDS, up to MAX_BACKOFF.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
STABLE_SECONDS = 30.0


#: Connections the kernel holds until a worker accepts them: a burst (a port scan, health checks,
#: many modalities at once) waits here instead of having its SYNs dropped (retried 1 s later).
LISTEN_BACKLOG = 1024


def listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)  # workers race for accept(): the loser gets EAGAIN, not a hang
    return sock


def serve_worker(settings: Settings, sock: socket.socket, *, tls_sock: socket.socket | None = None,
                 tls: ssl.SSLContext | None = None, counter: AssociationCounter | None = None,
                 ready: Callable[[], None] | None = None) -> None:
    """One worker: its own backend handles and AE, serving the shared socket (and the TLS one)
    until signalled; `counter` counts associations over all workers; `ready()` once serving."""
    backend = open_backend(settings)
    ingest = ingest_service(backend, index=bool(settings.index_on_store))  # PACS_INDEX_ON_STORE
    if settings.spool_received and backend.spool_dir is not None:
        tempfile.tempdir = str(backend.spool_dir)  # pynetdicom spools here: same filesystem as objects
    if settings.spool_received:
        remove_orphans(tempfile.gettempdir())  # a killed worker's, or a previous run's
    ae = make_ae(settings.ae_title, max_pdu=settings.max_pdu, spool=bool(settings.spool_received))
    configure(ae, settings)
    ctx = GatewayContext(ingest, backend, settings)
    policy = AssociationPolicy(settings, backend.nodes, counter)
    bindings = policy.handlers() + dimse_metrics.handlers() + policy.guard(handlers(ctx))
    servers = [start_server(ae, sock.getsockname()[:2], bindings, sock=sock, guard=ConnectionGuard(settings),
                            counter=counter)]
    if tls_sock is not None and tls is not None:
        servers.append(start_server(ae, tls_sock.getsockname()[:2], bindings, sock=tls_sock,
                                    guard=ConnectionGuard(settings, tls)))
    for server in servers:  # plain C-STOREs and C-FINDs served in the DUL thread (store_fast, find_fast)
        server.pdata_hook_for = store_fast.combined(
            store_fast.hook_for(ctx, policy.refusal), find_fast.hook_for(ctx, policy.refusal))
    stopping: list[int] = []  # a plain flag: a signal handler must not take locks (Event.set does)

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if ready is not None:
        ready()
    while not stopping:
        time.sleep(0.2)
        policy.refresh()  # associations that ended leave the shared count
        heartbeat()  # /health counts the workers alive
        TRACKER.sweep()  # and their unfinished spool files go
        COUNTERS.flush()
    for server in servers:
        server.shutdown()
    deadline = time.monotonic() + GRACE_SECONDS
    while any(s.active_associations for s in servers) and time.monotonic() < deadline:
        time.sleep(0.05)
    for assoc in [a for s in servers for a in s.active_associations]:
        assoc.abort()
    for assoc in [a for s in servers for a in s.active_associations]:
        assoc.join(GRACE_SECONDS)
    TRACKER.sweep()
    backend.close()


def serve(settings: Settings, workers: int | None = None, sock: socket.socket | None = None,
          tls_sock: socket.socket | None = None) -> int:
    """Serve on `sock` (a listening socket handed over by `pacs up`) or on a socket bound here;
    DICOM TLS on `tls_sock` (or bound here) when a certificate and key are configured."""
    workers = max(1, workers or settings.gateway_workers)
    tls = acceptor_context(settings)  # a bad certificate or key fails here, before any fork
    if sock is None:
        sock = listen(settings.host, settings.dimse_port)
    sock.setblocking(False)
    if tls is not None and tls_sock is None:
        tls_sock = listen(settings.host, settings.tls_port)
    if tls_sock is not None:
        tls_sock.setblocking(False)
    print(f"gateway: DIMSE on {settings.host}:{sock.getsockname()[1]} AE {settings.ae_title} "
          f"({workers} worker{'s' if workers > 1 else ''})", flush=True)
    if tls is not None and tls_sock is not None:
        print(f"gateway: DICOM TLS on {settings.host}:{tls_sock.getsockname()[1]}", flush=True)
    counter = AssociationCounter(workers)
    if tls is None:
        tls_sock = None
    reporting = emf_reporter.prepare(settings)  # the workers' metrics in files this process reads
    if workers == 1:
        finish = emf_reporter.start(settings) if reporting else None
        serve_worker(settings, sock, tls_sock=tls_sock, tls=tls, counter=counter)
        if finish is not None:
            finish()
        return 0
    status = Supervisor(settings, workers, sock, tls_sock, tls, counter).run(reporting)
    sock.close()
    return status


class Supervisor:
    """The gateway's parent process: forks the workers and replaces one that dies unasked (its
    association slots released, back-off between restarts of a worker that keeps dying), until
    SIGTERM/SIGINT, which it forwards to the workers before waiting for them."""

    def __init__(self, settings: Settings, workers: int, sock: socket.socket, tls_sock: socket.socket | None,
                 tls: ssl.SSLContext | None, counter: AssociationCounter) -> None:
        self.settings, self.workers, self.counter = settings, workers, counter
        self.sock, self.tls_sock, self.tls = sock, tls_sock, tls
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, started)
        self.streak = [0] * workers  # quick deaths in a row, per worker index
        self.due: dict[int, float] = {}  # worker index -> when to restart it
        self.stopping: list[int] = []  # a plain flag: a signal handler must not take locks
        #: Set by the first worker that serves: until then a worker's failure is a failure to start.
        self.served: Any = multiprocessing.Value("b", 0, lock=False)

    def spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:
            die_with_parent()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the supervisor's (serve_worker sets its own)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.children.clear()
            self.counter.index = index
            code = 0
            try:
                serve_worker(self.settings, self.sock, tls_sock=self.tls_sock, tls=self.tls,
                             counter=self.counter, ready=self._served)
            except BaseException:
                log.exception("gateway worker failed")
                code = 1
            os._exit(code)
        self.children[pid] = (index, time.monotonic())

    def _served(self) -> None:
        self.served.value = 1

    def on_signal(self, signum: int, _frame: object) -> None:
        self.stopping.append(signum)
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self, reporting: bool = False) -> int:
        """Serve until signalled; with `reporting`, the workers' metrics as CloudWatch EMF lines."""
        for index in range(self.workers):
            self.spawn(index)
        finish = emf_reporter.start(self.settings) if reporting else None
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        status = 0
        while self.children or (self.due and not self.stopping):
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, st = 0, 0
            if pid == 0:
                self._restart_due()
                time.sleep(0.05)
                continue
            if pid not in self.children:
                continue
            index, started = self.children.pop(pid)
            mark_dead(pid)  # its open associations leave the metrics
            self.counter.release(index)  # its associations are gone with it
            code = os.waitstatus_to_exitcode(st)
            if self.stopping:
                status |= code != 0
                continue
            if code > 0 and not self.served.value:  # a worker that cannot start: no use retrying
                print(f"gateway: worker {index} failed to start (status {code}); stopping",
                      file=sys.stderr, flush=True)
                self.on_signal(signal.SIGTERM, None)
                status = 1
                continue
            self._schedule(index, pid, code, time.monotonic() - started)
        if finish is not None:
            finish()  # a last report of what the workers did
        return int(status)

    def _schedule(self, index: int, pid: int, code: int, lived: float) -> None:
        self.streak[index] = 0 if lived >= STABLE_SECONDS else self.streak[index] + 1
        delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** self.streak[index])
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        print(f"gateway: worker {index} (pid {pid}) {how} after {lived:.0f} s; "
              f"its associations are released, a new worker starts in {delay:.1f} s",
              file=sys.stderr, flush=True)
        self.due[index] = time.monotonic() + delay

    def _restart_due(self) -> None:
        if self.stopping:
            self.due.clear()
            return
        now = time.monotonic()
        for index, when in list(self.due.items()):
            if when <= now:
                del self.due[index]
                self.spawn(index)
                COUNTERS.restarted()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--port", type=int, default=None, help="DICOM port (default: PACS_DIMSE_PORT)")
    parser.add_argument("--ae-title", default=None)
    parser.add_argument("--fd", type=int, default=None, help="serve this inherited listening socket")
    parser.add_argument("--tls-fd", type=int, default=None, help="serve DICOM TLS on this inherited socket")
    args = parser.parse_args(argv)
    follow_parent()  # under `pacs up`: never outlive it
    logging.basicConfig(level=os.environ.get("PACS_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings.from_env(dimse_port=args.port, ae_title=args.ae_title)
    sock = socket.socket(fileno=args.fd) if args.fd is not None else None
    tls_sock = socket.socket(fileno=args.tls_fd) if args.tls_fd is not None else None
    return serve(settings, args.workers, sock, tls_sock)


if __name__ == "__main__":
    sys.exit(main())
