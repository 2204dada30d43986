"""The gateway's figures as CloudWatch EMF lines, every `PACS_EMF_INTERVAL` seconds.

On Fargate the gateway's stdout goes to CloudWatch Logs (awslogs), which extracts EMF documents: the
gateway process that forked the workers reads their metric files (multiprocess mode, as under
`pacs up`), and prints what changed since its last report (namespace PACS, dimension service=gateway),
under the names the dashboard shows (`GATEWAY_EMF`). Off (0) by default; the gateway image sets 60.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client.metrics_core import Metric

from pacs.config import Settings
from pacs.monitoring import emf, multiprocess

log = logging.getLogger("pacs.monitoring")

#: A sample counted into a figure: (its name, a test on its labels).
Select = tuple[str, Callable[[dict[str, str]], bool]]


def _any(labels: dict[str, str]) -> bool:
    return True


def _failed(labels: dict[str, str]) -> bool:
    """A final DIMSE status that is neither success, cancel nor a warning (0xB…, 0x0001, 0x0107…)."""
    status = labels.get("status", "")
    return status not in ("0x0000", "0xFE00") and not status.startswith("0xB") \
        and status not in ("0x0001", "0x0107", "0x0116")


#: CloudWatch name → the Prometheus samples summed into it (counters: the change since the last report).
GATEWAY_EMF: dict[str, Select] = {
    "AssociationsAccepted": ("pacs_dimse_associations_accepted_total", _any),
    "AssociationsRejected": ("pacs_dimse_associations_rejected_total", _any),
    "DimseOperations": ("pacs_dimse_operations_total", _any),
    "DimseFailures": ("pacs_dimse_operations_total", _failed),
    "InstancesStored": ("pacs_instances_stored_total", _any),
    "InstancesRefused": ("pacs_instances_refused_total", _any),
    "TlsHandshakeFailures": ("pacs_tls_handshake_failures_total", _any),
    "ObjectStoreErrors": ("pacs_object_store_errors_total", _any),
}
#: Gauges: their current value.
GATEWAY_EMF_GAUGES: dict[str, Select] = {
    "AssociationsOpen": ("pacs_dimse_associations_open", _any),
}


def totals(families: Iterable[Metric], wanted: dict[str, Select]) -> dict[str, float]:
    out = dict.fromkeys(wanted, 0.0)
    for family in families:
        for sample in family.samples:
            for figure, (name, test) in wanted.items():
                if sample.name == name and test(sample.labels):
                    out[figure] += sample.value
    return out


class EmfReporter:
    """Prints, at each `report()`, the change of each counter figure since the last one and the gauges."""

    def __init__(self, source: Callable[[], Iterable[Metric]], service: str = "gateway") -> None:
        from aws_lambda_powertools import Metrics

        self.source = source
        self.metrics = Metrics(namespace=emf.NAMESPACE, service=service)
        self.last = totals(source(), GATEWAY_EMF)

    def report(self) -> dict[str, float]:
        families = list(self.source())
        now = totals(families, GATEWAY_EMF)
        figures = {name: now[name] - self.last[name] for name in GATEWAY_EMF}
        figures.update(totals(families, GATEWAY_EMF_GAUGES))
        self.last = now
        for name, value in figures.items():
            self.metrics.add_metric(name=name, unit="Count", value=value)
        self.metrics.flush_metrics()
        return figures


def prepare(settings: Settings) -> bool:
    """Before the gateway forks its workers: when EMF reports are on, make sure the workers record
    into files this process can read. Whether reports are on."""
    if settings.emf_interval <= 0:
        return False
    if not multiprocess.enabled():
        directory = multiprocess.prepare(Path(tempfile.mkdtemp(prefix="pacs-metrics-")))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)  # the workers leave by os._exit
    return True


def start(settings: Settings) -> Callable[[], None]:
    """Report every `settings.emf_interval` seconds from a daemon thread (started after the fork); the
    function returned stops it after a last report (what the workers did since the previous one)."""
    stop = threading.Event()
    reporter = EmfReporter(lambda: multiprocess.registry().collect())

    def loop() -> None:
        while True:
            stopping = stop.wait(settings.emf_interval)
            try:
                reporter.report()
            except Exception:
                log.exception("EMF report failed")
            if stopping:
                return

    thread = threading.Thread(target=loop, name="emf-reporter", daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join(30)

    return finish
