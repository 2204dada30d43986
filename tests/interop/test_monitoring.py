"""Monitoring of a real `pacs up` (2 gateway worker processes, DICOM TLS on): every metric moves under
a small workload of real clients, the workers' figures are served by the web process's /metrics
(prometheus-client multiprocess mode), and /health/ready follows the gateway workers.

Workload: an association held open, one aborted; dcmtk echoscu; storescu of 3 instances, of one over
TLS (pynetdicom's path, not the fast one), of one refused (a
key-unsafe UID), of one the object store cannot write (a file where its study's directory goes), and
one to an unknown called AE (rejected); findscu; movescu to a storescp node; a STOW-RS with dicomweb-client; a plain-TCP client on
the TLS port (a failed handshake); the indexer catching up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from prometheus_client.parser import text_string_to_metric_families
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from .conftest import Launcher
from .dicomgen import new_study, write_extra_instance
from .support import PacsProcess, Qido, free_port, run_tool, terminate, value, wait_until
from .test_tls_policy import Pki, make_pki

pytestmark = pytest.mark.interop

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"dcmtk's {name} is required (Debian package dcmtk)"
    return path


def scrape(pacs: PacsProcess) -> Samples:
    r = httpx.get(f"{pacs.http_url}/metrics", timeout=30)
    assert r.status_code == 200
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def get(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value (0 when absent); labels not given are summed over."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


@dataclass
class Monitored:
    pacs: PacsProcess
    tls_port: int
    before: Samples
    after: Samples
    stored: int  # instances stored (C-STORE and STOW)

    def delta(self, name: str, **labels: str) -> float:
        return get(self.after, name, **labels) - get(self.before, name, **labels)


@pytest.fixture(scope="module")
def pacs(launch_module: Launcher, tmp_path_factory: pytest.TempPathFactory) -> tuple[PacsProcess, int, Pki]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    tls_port = free_port()
    started = launch_module(workers=2, name="mon", env={
        "PACS_TLS_CERT": str(pki.server_cert), "PACS_TLS_KEY": str(pki.server_key),
        "PACS_TLS_PORT": str(tls_port), "PACS_ACSE_TIMEOUT": "5"})
    return started, tls_port, pki


def pacs_cli(pacs_up: PacsProcess, *args: str) -> None:
    run = subprocess.run([sys.executable, "-m", "pacs.cli.main", *args, "--data-dir", str(pacs_up.data_dir)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


@contextlib.contextmanager
def storescp(pacs_up: PacsProcess, out: Path) -> Iterator[str]:
    """dcmtk storescp on a free port, registered as the node DEST for the time of the block."""
    port = free_port()
    proc = subprocess.Popen([tool("storescp"), "-aet", "DEST", "-od", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        echo = [tool("echoscu"), "-aec", "DEST", "127.0.0.1", str(port)]
        wait_until(lambda: proc.poll() is not None or run_tool(echo, timeout=30).returncode == 0,
                   bool, timeout=30, what="storescp to answer C-ECHO")
        assert proc.poll() is None
        pacs_cli(pacs_up, "nodes", "add", "DEST", "127.0.0.1", str(port), "--operations", "store,move")
        yield "DEST"
    finally:
        terminate(proc)


@pytest.fixture(scope="module")
def monitored(pacs: tuple[PacsProcess, int, Pki], tmp_path_factory: pytest.TempPathFactory) -> Monitored:
    pacs_up, tls_port, pki = pacs
    tmp = tmp_path_factory.mktemp("mon-files")
    port = str(pacs_up.dimse_port)
    before = scrape(pacs_up)

    # an association held open while the metrics are read
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", pacs_up.dimse_port, ae_title="PACS")
    assert assoc.is_established
    try:
        during = wait_until(lambda: scrape(pacs_up),
                            lambda s: get(s, "pacs_dimse_associations_open") >= 1, timeout=30)
        assert get(during, "pacs_dimse_associations_open") >= 1
    finally:
        assoc.release()
        ae.shutdown()
    ae = AE(ae_title="ABORTER")  # and one the caller aborts
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", pacs_up.dimse_port, ae_title="PACS")
    assert assoc.is_established
    assoc.abort()
    ae.shutdown()

    assert run_tool([tool("echoscu"), "-aec", "PACS", "127.0.0.1", port]).returncode == 0
    study, series = new_study("monitoring", patient_id="MON-1")
    good = [write_extra_instance(series, study, n, tmp / f"{n}.dcm") for n in (1, 2, 3)]
    run = run_tool([tool("storescu"), "-aec", "PACS", "127.0.0.1", port, *(str(i.path) for i in good)])
    assert run.returncode == 0, run.stderr
    refused = write_extra_instance(series, study, 4, tmp / "refused.dcm", SOPInstanceUID="1.2.3/../../x")
    run_tool([tool("storescu"), "-aec", "PACS", "127.0.0.1", port, str(refused.path)])
    blocked_study, blocked_series = new_study("monitoring-blocked", patient_id="MON-2")
    blocked = write_extra_instance(blocked_series, blocked_study, 1, tmp / "blocked.dcm")
    studies_dir = pacs_up.objects_dir / "default" / "studies"
    studies_dir.mkdir(parents=True, exist_ok=True)
    (studies_dir / blocked_study.uid).write_bytes(b"a file where the study's directory goes")
    run_tool([tool("storescu"), "-aec", "PACS", "127.0.0.1", port, str(blocked.path)])
    run = run_tool([tool("storescu"), "-aec", "WRONG", "127.0.0.1", port, str(good[0].path)])
    assert run.returncode != 0
    run = run_tool([tool("findscu"), "-aec", "PACS", "-S", "-k", "QueryRetrieveLevel=STUDY",
                    "-k", "PatientID=MON-1", "-k", "StudyInstanceUID", "127.0.0.1", port])
    assert run.returncode == 0, run.stderr
    qido = Qido(pacs_up)
    wait_until(lambda: qido.studies({"PatientID": "MON-1"}),  # the 3 are indexed: the move sends them all
               lambda r: bool(r) and value(r[0], "00201208") == 3)
    moved = tmp / "moved"
    moved.mkdir()
    with storescp(pacs_up, moved) as dest:  # a C-MOVE of the study to a registered node
        run = run_tool([tool("movescu"), "-S", "-aec", "PACS", "-aem", dest, "-k", "QueryRetrieveLevel=STUDY",
                        "-k", f"StudyInstanceUID={study.uid}", "127.0.0.1", port])
        assert run.returncode == 0, run.stderr
        assert len(list(moved.iterdir())) == 3
    over_tls = write_extra_instance(series, study, 6, tmp / "tls.dcm")  # pynetdicom's path, not the fast one
    run = run_tool([tool("storescu"), "+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca),
                    "-aec", "PACS", "127.0.0.1", str(tls_port), str(over_tls.path)])
    assert run.returncode == 0, run.stderr
    stow = write_extra_instance(series, study, 5, tmp / "stow.dcm")
    DICOMwebClient(pacs_up.dicomweb_url).store_instances([pydicom.dcmread(stow.path)])
    with socket.create_connection(("127.0.0.1", tls_port), timeout=30) as plain:  # no TLS ClientHello
        plain.sendall(b"\x01\x00\x00\x00\x00\x44" + b"\x00" * 68)
        with contextlib.suppress(OSError):
            plain.recv(1024)
    try:  # the indexer caught up: the 5 instances are searchable
        found = wait_until(lambda: qido.studies({"PatientID": "MON-1"}),
                           lambda r: bool(r) and value(r[0], "00201208") == 5)
        assert value(found[0], "0020000D") == study.uid
    finally:
        qido.client.close()
    after = wait_until(lambda: scrape(pacs_up),
                       lambda s: get(s, "pacs_tls_handshake_failures_total") > get(
                           before, "pacs_tls_handshake_failures_total")
                       and get(s, "pacs_indexer_lag_seconds_count") - get(
                           before, "pacs_indexer_lag_seconds_count") >= 5, timeout=60)
    return Monitored(pacs_up, tls_port, before, after, stored=5)


def test_associations(monitored: Monitored) -> None:
    m = monitored
    assert m.delta("pacs_dimse_associations_accepted_total") >= 9  # 2 held, echo, 4 storescu, find, move
    assert m.delta("pacs_dimse_associations_rejected_total", reason="called-ae-title-not-recognized") == 1
    assert m.delta("pacs_dimse_associations_ended_total", how="released") >= 8
    assert m.delta("pacs_dimse_associations_ended_total", how="aborted") == 1
    assert get(m.after, "pacs_dimse_associations_open") == 0
    assert m.delta("pacs_tls_handshake_failures_total") >= 1
    # the gateway's own refusal counters (gateway.counters), summed over its workers
    assert m.delta("pacs_gateway_connections_refused_total", reason="tls-handshake") >= 1
    assert m.delta("pacs_gateway_connections_refused_total", reason="rejected") == 1


def test_dimse_operations_by_service_and_status(monitored: Monitored) -> None:
    m = monitored
    assert m.delta("pacs_dimse_operations_total", service="C-ECHO", status="0x0000") == 1
    assert m.delta("pacs_dimse_operations_total", service="C-STORE", status="0x0000") == 4  # 3 + 1 over TLS
    failures = m.delta("pacs_dimse_operations_total", service="C-STORE") - 4
    assert failures == 2  # the refused one and the one the store could not write
    assert m.delta("pacs_dimse_operations_total", service="C-STORE", status="0xA700") == 1
    assert m.delta("pacs_dimse_operations_total", service="C-FIND", status="0x0000") == 1
    assert m.delta("pacs_dimse_operation_seconds_count", service="C-STORE") == 6
    assert m.delta("pacs_dimse_operation_seconds_count", service="C-FIND") == 1
    assert m.delta("pacs_dimse_operation_seconds_sum", service="C-STORE") > 0
    assert m.delta("pacs_dimse_bytes_total", service="C-STORE", direction="received") > 4 * 5_000
    assert m.delta("pacs_dimse_bytes_total", service="C-FIND", direction="sent") > 0
    assert m.delta("pacs_dimse_operations_total", service="C-MOVE", status="0x0000") == 1
    assert m.delta("pacs_dimse_operation_seconds_count", service="C-MOVE") == 1
    assert m.delta("pacs_dimse_bytes_total", service="C-MOVE", direction="sent") > 3 * 5_000


def test_instances_stored_refused_and_store_errors(monitored: Monitored) -> None:
    m = monitored
    assert m.delta("pacs_instances_stored_total", outcome="stored") == m.stored  # C-STORE and STOW
    assert m.delta("pacs_instances_refused_total", reason="InvalidUID") == 1
    assert m.delta("pacs_instances_refused_total", reason="StorageFailure") == 1
    assert m.delta("pacs_object_store_errors_total", operation="put") == 1


def test_indexer_catalog_and_queue(monitored: Monitored) -> None:
    m = monitored
    assert m.delta("pacs_indexer_events_total", outcome="inserted") == m.stored
    assert m.delta("pacs_indexer_lag_seconds_count") == m.stored
    assert m.delta("pacs_indexer_lag_seconds_sum") > 0
    assert m.delta("pacs_catalog_instances", partition="default") == m.stored
    assert m.delta("pacs_catalog_studies", partition="default") == 1
    assert m.delta("pacs_catalog_series", partition="default") == 1
    assert m.delta("pacs_catalog_bytes", partition="default") > m.stored * 5_000  # ~9.5 kB each
    assert ("pacs_index_queue_depth", frozenset()) in m.after
    assert ("pacs_index_dlq_depth", frozenset()) in m.after and get(m.after, "pacs_index_dlq_depth") == 0
    assert m.delta("pacs_http_requests_total", route="/dicomweb/studies", method="POST") == 1


def test_the_gateway_workers_metrics_reach_the_web_process(monitored: Monitored) -> None:
    """The C-STOREs were served by worker processes; /metrics is the web server's: the figures crossed
    processes. Two workers, each with its own heartbeat."""
    m = monitored
    assert get(m.after, "pacs_gateway_workers_alive") == 2
    beats = {dict(ls)["pid"] for (n, ls) in m.after if n == "pacs_gateway_worker_heartbeat_timestamp_seconds"}
    web = _serving_pid(m.pacs.http_port)
    assert len(beats) == 2 and str(web) not in beats
    assert (m.pacs.data_dir / "metrics").is_dir()


def test_every_grafana_panel_metric_is_served(monitored: Monitored) -> None:
    from tests.unit.test_monitoring import dashboard_metrics

    served = {n for (n, _) in monitored.after}
    missing = dashboard_metrics() - served
    assert not missing, f"Grafana panels query metrics /metrics does not serve: {sorted(missing)}"


def _serving_pid(port: int) -> int:
    """The pid of the process listening on `port` (from /proc/net/tcp and the fds of /proc)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            inodes.add(fields[9])
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            if os.readlink(fd).removeprefix("socket:[").rstrip("]") in inodes:
                return int(fd.parent.parent.name)
    raise AssertionError(f"nobody listens on {port}")


def _workers(samples: Samples) -> list[int]:
    return sorted(int(dict(ls)["pid"]) for (n, ls) in samples
                  if n == "pacs_gateway_worker_heartbeat_timestamp_seconds")


@contextlib.contextmanager
def stopped(pids: list[int]) -> Iterator[None]:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_ready_is_503_while_no_gateway_worker_is_alive(monitored: Monitored) -> None:
    pacs_up = monitored.pacs
    workers = _workers(scrape(pacs_up))
    assert len(workers) == 2
    url = f"{pacs_up.http_url}/health/ready"
    with stopped(workers):  # alive but silent: their heartbeats go stale
        r = wait_until(lambda: httpx.get(url, timeout=30), lambda r: r.status_code == 503, timeout=90)
        body = r.json()
        assert body["ready"] is False and body["components"]["gateway"] == {"status": "down", "workers_alive": 0}
        assert body["components"]["catalog"]["status"] == "ok"
        assert httpx.get(f"{pacs_up.http_url}/health/live", timeout=30).status_code == 200
        assert httpx.get(f"{pacs_up.http_url}/health", timeout=30).status_code == 503
    r = wait_until(lambda: httpx.get(url, timeout=30), lambda r: r.status_code == 200, timeout=90)
    assert r.json()["components"]["gateway"] == {"status": "ok", "workers_alive": 2}


def test_a_restart_starts_from_an_empty_metrics_directory(launch: Launcher, tmp_path: Path) -> None:
    """The directory is emptied at start-up: figures of a previous run (dead pids) are not served."""
    data = tmp_path / "data"
    stale = data / "metrics"
    stale.mkdir(parents=True)
    leftover = stale / "counter_999999.db"
    first = launch(data, workers=1, name="restart")
    run = subprocess.run([tool("echoscu"), "-aec", "PACS", "127.0.0.1", str(first.dimse_port)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    assert not leftover.exists()
    samples = scrape(first)
    assert get(samples, "pacs_dimse_operations_total", service="C-ECHO") == 1


@pytest.mark.parametrize("interval", ["1", "3600"])
def test_the_standalone_gateway_prints_its_figures_as_emf(tmp_path: Path, interval: str) -> None:
    """`python -m gateway` (as in the Fargate image) with 2 workers and PACS_EMF_INTERVAL: its workers'
    figures, summed by the process that forked them, go to stdout as EMF (namespace PACS, service
    gateway) under the names of the CloudWatch dashboard: every second (1), or once, at exit (3600)."""
    from pacs.monitoring.emf_reporter import GATEWAY_EMF, GATEWAY_EMF_GAUGES

    from tests.integration.test_emf import emf_lines, figures

    port = free_port()
    out = tmp_path / "gateway.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PACS_", "PROMETHEUS_"))}
    env.update(PACS_DATA_DIR=str(tmp_path / "data"), PACS_EMF_INTERVAL=interval, PYTHONUNBUFFERED="1")
    with open(out, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "--workers", "2", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: out.read_text(errors="replace"), lambda t: "gateway: DIMSE on" in t, timeout=60)
        echo = [tool("echoscu"), "-aec", "PACS", "127.0.0.1", str(port)]
        wait_until(lambda: run_tool(echo, timeout=30).returncode, lambda rc: rc == 0, timeout=60)
        study, series = new_study("monitoring-emf", patient_id="MON-3")
        inst = write_extra_instance(series, study, 1, tmp_path / "1.dcm")
        assert run_tool([tool("storescu"), "-aec", "PACS", "127.0.0.1", str(port), str(inst.path)]).returncode == 0

        def seen() -> dict[str, tuple[str, str, list[float]]]:
            return figures(emf_lines(out.read_text(errors="replace")))

        if interval == "1":  # reported while the gateway runs
            wait_until(seen, lambda f: sum(f.get("InstancesStored", ("", "", [0.0]))[2]) >= 1
                       and sum(f.get("DimseOperations", ("", "", [0.0]))[2]) >= 2, timeout=60)
        else:
            assert seen() == {}
        assert run_tool(echo, timeout=30).returncode == 0  # reported by the last report at the latest
    finally:
        terminate(proc)
    assert proc.returncode == 0
    got = seen()
    assert set(got) == set(GATEWAY_EMF) | set(GATEWAY_EMF_GAUGES)
    assert all((ns, service) == ("PACS", "gateway") for ns, service, _ in got.values())
    assert sum(got["AssociationsAccepted"][2]) >= 3  # the echoes, the store
    assert sum(got["DimseOperations"][2]) >= 3
    assert sum(got["InstancesStored"][2]) == 1 and sum(got["DimseFailures"][2]) == 0
