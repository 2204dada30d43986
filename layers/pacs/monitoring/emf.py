"""CloudWatch Embedded Metric Format: the Lambda handlers' figures as EMF log lines.

A handler calls `enable(service)` once and flushes per invocation (`Metrics.log_metrics`); the
recording functions of `pacs.monitoring.metrics` then add their figure to the batch (namespace
`POWERTOOLS_METRICS_NAMESPACE`, `PACS` by default; dimension `service`). Without `enable` (the
gateway, `pacs up`) `add` does nothing. aws-lambda-powertools is imported only by `enable`: the
gateway image does not ship it.
"""

from __future__ import annotations

import os
from typing import Any

#: The CloudWatch namespace of the PACS's own metrics (infra: `functions.METRICS_NAMESPACE`).
NAMESPACE = "PACS"

_sink: Any = None


def enable(service: str) -> Any:
    """The powertools `Metrics` of this process, now receiving every recorded figure."""
    global _sink
    from aws_lambda_powertools import Metrics

    _sink = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE), service=service)
    return _sink


def disable() -> None:
    global _sink
    _sink = None


def add(name: str, value: float, unit: str = "Count") -> None:
    sink = _sink
    if sink is not None:
        sink.add_metric(name=name, unit=unit, value=value)
