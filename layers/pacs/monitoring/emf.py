"""CloudWatch Embedded Metric Format: the Lambda handlers' figures as EMF log lines.

A handler decorated with `flushed(service)` collects, while it runs, the figures the recording
functions of `pacs.monitoring.metrics` add here, and prints them as EMF at its end (aws-lambda-powertools
`Metrics.log_metrics`: namespace `POWERTOOLS_METRICS_NAMESPACE`, `PACS` by default; dimension
`service`). Outside such a call (the gateway, `pacs up`, tests) `add` does nothing. powertools is
imported only by `flushed`: the gateway image does not ship it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

#: The CloudWatch namespace of the PACS's own metrics (infra: `functions.METRICS_NAMESPACE`).
NAMESPACE = "PACS"

F = TypeVar("F", bound=Callable[..., Any])

_sink: Any = None


def flushed(service: str) -> Callable[[F], F]:
    """Decorate a Lambda handler: what is recorded during each call goes out as EMF at its end."""
    from aws_lambda_powertools import Metrics

    metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE), service=service)

    def wrap(handler: F) -> F:
        logged = metrics.log_metrics(handler)

        @functools.wraps(handler)
        def call(event: Any, context: Any) -> Any:
            global _sink
            _sink = metrics
            try:
                return logged(event, context)
            finally:
                _sink = None

        return call  # type: ignore[return-value]

    return wrap


def add(name: str, value: float, unit: str = "Count") -> None:
    sink = _sink
    if sink is not None:
        sink.add_metric(name=name, unit=unit, value=value)
