"""Lambda entry point of the scheduled reconciliation (an EventBridge schedule invokes it daily).

Thin: settings from the environment, `pacs.services.reconcile` over the partition, the report
returned (and logged) as a dict. Instances stored but never indexed (a lost event) are indexed.
"""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from pacs.backends import Backend, open_backend
from pacs.config import Settings
from pacs.services.reconcile import reconcile

logger = Logger(service="reconcile")

#: At most this many failures are listed in the result (all are counted and logged).
MAX_LISTED_FAILURES = 100


@functools.cache
def backend() -> Backend:
    """One backend per execution environment, reused across invocations."""
    return open_backend(Settings.from_env(backend="aws"))


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    b = backend()
    partition = b.settings.partition
    report = reconcile(b.store, b.catalog, partition, b.events)
    for key, reason in report.failed:
        logger.warning("not indexed", extra={"key": key, "reason": reason})
    result = {
        "partition": partition,
        "scanned": report.scanned,
        "indexed": report.indexed,
        "failedCount": len(report.failed),
        "failed": [{"key": k, "reason": r} for k, r in report.failed[:MAX_LISTED_FAILURES]],
    }
    logger.info("reconciled", extra={k: v for k, v in result.items() if k != "failed"})
    return result
