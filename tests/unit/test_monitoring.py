"""Monitoring in one process: /health, /health/live, /health/ready; the figures read at a scrape; the
indexer's lag; the Grafana dashboard's metrics. (The whole tree, workers included: interop/test_monitoring.)"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pacs.backends import Backend
from pacs.catalog.records import CatalogTotals
from pacs.events.model import ObjectEvent, event_timestamp
from pacs.monitoring import metrics
from pacs.monitoring.state import BackendCollector
from pacs.services import index_worker
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService
from prometheus_client import REGISTRY

from functions.dicomweb.app import create_app

from .conftest import MakePart10

GRAFANA = Path(__file__).resolve().parents[2] / "layers" / "pacs" / "monitoring" / "grafana" / "pacs.json"
S = "1.2.826.0.1.3680043.10.1234.77"


@pytest.fixture
def client(embedded: Backend) -> Iterator[TestClient]:
    with TestClient(create_app(embedded)) as c:
        yield c


def test_health_reports_each_component(client: TestClient) -> None:
    for path in ("/health", "/health/ready"):
        r = client.get(path)
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ok" and body["ready"] is True
        assert {n: c["status"] for n, c in body["components"].items()} == {
            "catalog": "ok", "object_store": "ok", "queue": "ok", "indexer": "ok"}
        assert body["components"]["queue"] == {"status": "ok", "depth": 0, "dead_letters": 0}
    assert client.get("/health/live").json() == {"status": "ok"}


def test_an_unreadable_catalog_makes_ready_503_and_live_stays_200(client: TestClient, embedded: Backend,
                                                                   tmp_path: Path) -> None:
    assert client.get("/health/ready").status_code == 200
    catalog = embedded.settings.data_dir / "catalog.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{catalog}{suffix}").unlink(missing_ok=True)
    with open(catalog, "r+b") as fh:  # the same file, its header destroyed: not a database any more
        fh.write(b"this is not an SQLite database" * 100)
    for path in ("/health", "/health/ready"):
        r = client.get(path)
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "down" and body["ready"] is False
        assert body["components"]["catalog"]["status"] == "down" and body["components"]["catalog"]["error"]
        assert body["components"]["object_store"]["status"] == "ok"
    assert client.get("/health/live").status_code == 200


def test_dead_letters_make_the_queue_degraded_but_still_ready(client: TestClient, embedded: Backend) -> None:
    queue = embedded.queue
    assert queue is not None
    queue.publish(ObjectEvent("created", f"default/studies/{S}/series/1/instances/1.dcm"))
    (msg,) = queue.receive(1)
    for _ in range(queue.max_attempts):  # type: ignore[attr-defined]
        queue.fail(msg, "boom", retry_after=0)
        got = queue.receive(1)
        if not got:
            break
        (msg,) = got
    r = client.get("/health/ready")
    assert r.status_code == 200 and r.json()["components"]["queue"] == {
        "status": "degraded", "depth": 0, "dead_letters": 1}
    text = client.get("/metrics").text
    assert "pacs_index_dlq_depth 1.0" in text and "pacs_index_queue_depth 0.0" in text


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric == name and ",".join(sorted(rest.rstrip("}").split(","))) == want:
            return float(value)
    return None


def test_the_indexer_lag_is_the_time_from_the_write_to_the_commit(
        embedded: Backend, make_part10: MakePart10) -> None:
    queue = embedded.queue
    assert queue is not None
    IngestService(embedded.store).ingest(make_part10(StudyInstanceUID=S, SeriesInstanceUID=f"{S}.1",
                                                     SOPInstanceUID=f"{S}.1.1"))
    (msg,) = queue.receive(1, wait=5)
    written = event_timestamp(msg.event.event_time)
    assert written is not None and abs(written - time.time()) < 60  # milliseconds, as S3 writes them
    queue.fail(msg, "later", retry_after=0)
    before_count = REGISTRY.get_sample_value("pacs_indexer_lag_seconds_count") or 0.0
    before_sum = REGISTRY.get_sample_value("pacs_indexer_lag_seconds_sum") or 0.0
    before_inserted = REGISTRY.get_sample_value("pacs_indexer_events_total", {"outcome": "inserted"}) or 0.0
    time.sleep(0.3)  # the lag measured must include this wait (no upper bound is asserted)
    indexer = IndexerService(embedded.store, embedded.catalog)
    assert index_worker.drain_once(queue, indexer, wait=5) == 1
    assert REGISTRY.get_sample_value("pacs_indexer_lag_seconds_count") == before_count + 1
    assert (REGISTRY.get_sample_value("pacs_indexer_lag_seconds_sum") or 0.0) - before_sum >= 0.3
    assert REGISTRY.get_sample_value("pacs_indexer_events_total", {"outcome": "inserted"}) == before_inserted + 1
    assert embedded.catalog.totals("default") == CatalogTotals(1, 1, 1, embedded.store.head(
        msg.event.key).size)  # type: ignore[union-attr]


def test_scrape_reads_catalog_counts_and_queue_depths(client: TestClient, embedded: Backend,
                                                      make_part10: MakePart10) -> None:
    ingest = IngestService(embedded.store)
    sizes = 0
    for n in (1, 2, 3):
        stored = ingest.ingest(make_part10(StudyInstanceUID=S, SeriesInstanceUID=f"{S}.{n % 2}",
                                           SOPInstanceUID=f"{S}.{n}"))
        sizes += stored.size
    time.sleep(0.05)  # the oldest event's age is measured from its write
    text = client.get("/metrics").text
    assert sample(text, "pacs_index_queue_depth") == 3
    assert (sample(text, "pacs_index_queue_oldest_seconds") or 0) >= 0.05
    assert sample(text, "pacs_catalog_instances", partition="default") == 0
    assert embedded.queue is not None
    index_worker.drain_once(embedded.queue, IndexerService(embedded.store, embedded.catalog), wait=5)
    text = client.get("/metrics").text
    assert sample(text, "pacs_index_queue_depth") == 0
    assert sample(text, "pacs_catalog_studies", partition="default") == 1
    assert sample(text, "pacs_catalog_series", partition="default") == 2
    assert sample(text, "pacs_catalog_instances", partition="default") == 3
    assert sample(text, "pacs_catalog_bytes", partition="default") == sizes


# -- the Grafana dashboard -------------------------------------------------------------------------

def dashboard_metrics() -> set[str]:
    exprs = [t["expr"] for p in json.loads(GRAFANA.read_text())["panels"] for t in p["targets"]]
    assert exprs
    return {m for e in exprs for m in re.findall(r"\bpacs_[a-z_]+\b", e)}


def exposed_names(embedded: Backend) -> set[str]:
    """Every sample name the PACS can expose: its metric families, and the scrape-time figures."""
    names: set[str] = set()
    for field in metrics.Metrics.__slots__:  # type: ignore[attr-defined]
        metric = getattr(metrics.get(), field)
        base, kind = metric._name, metric._type
        names |= {"counter": {f"{base}_total"}, "gauge": {base},
                  "histogram": {f"{base}_bucket", f"{base}_count", f"{base}_sum"}}[kind]
    names |= {family.name for family in BackendCollector(embedded, gateway=True).collect()}
    names.add(metrics._heartbeat()._name)
    return names


def test_every_grafana_panel_metric_exists(embedded: Backend) -> None:
    used = dashboard_metrics()
    missing = used - exposed_names(embedded)
    assert not missing, f"Grafana panels query metrics the PACS does not expose: {sorted(missing)}"
    # and every metric the PACS exposes is on some panel
    unused = {n.removesuffix("_total").removesuffix("_bucket") for n in exposed_names(embedded)} \
        - {n.removesuffix("_total").removesuffix("_bucket") for n in used} \
        - {n for n in exposed_names(embedded) if n.endswith(("_count", "_sum"))} \
        - {"pacs_gateway_worker_heartbeat_timestamp_seconds"}
    assert not unused, f"metrics on no Grafana panel: {sorted(unused)}"


def test_the_gateway_emf_report_is_the_change_since_the_last(capsys: pytest.CaptureFixture[str]) -> None:
    from pacs.monitoring.emf_reporter import EmfReporter

    from tests.integration.test_emf import emf_lines, figures

    reporter = EmfReporter(REGISTRY.collect)
    metrics.dimse_operation("C-STORE", 0x0000, 0.01, 100)
    metrics.dimse_operation("C-STORE", 0xA700, 0.01, 100)
    metrics.dimse_operation("C-FIND", 0xFE00, 0.01)  # a cancel is no failure
    metrics.instance_stored("stored")
    capsys.readouterr()
    first = reporter.report()
    assert (first["DimseOperations"], first["DimseFailures"], first["InstancesStored"]) == (3, 1, 1)
    got = figures(emf_lines(capsys.readouterr().out))
    assert got["DimseOperations"] == ("PACS", "gateway", [3.0]) and got["DimseFailures"][2] == [1.0]
    second = reporter.report()  # nothing new
    assert second["DimseOperations"] == 0 and second["InstancesStored"] == 0


def test_an_event_waiting_too_long_makes_the_indexer_degraded_not_unready(client: TestClient,
                                                                          embedded: Backend) -> None:
    queue = embedded.queue
    assert queue is not None
    old = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 600))
    queue.publish(ObjectEvent("created", f"default/studies/{S}/series/1/instances/9.dcm", event_time=old))
    r = client.get("/health/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "degraded" and body["ready"] is True
    indexer = body["components"]["indexer"]
    assert indexer["status"] == "degraded" and 590 <= indexer["oldest_event_seconds"] < 3600
    assert body["components"]["queue"] == {"status": "ok", "depth": 1, "dead_letters": 0}
