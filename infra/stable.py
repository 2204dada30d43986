"""Study-stable detection: `StudyUpdated` on the PACS bus → a rule → an SQS queue (with a DLQ) → the
stable function (`functions/stable`), which keeps each study's state in the catalog's table and sends
its timers to the same queue as delayed messages (≤ 900 s each, chained for longer quiet times); when a
study had no change for the quiet time it publishes `StudyStable` to the bus. No Scan, no polling.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_lambda_event_sources as sources
from constructs import Construct

from infra.config import PacsConfig
from infra.functions import Functions, pacs_environment
from infra.nag import GRANT_WILDCARDS, Why, grant_findings, suppress
from infra.pipeline import Pipeline, event_queue

DETAIL_TYPES = ("StudyUpdated",)
TIMEOUT = Duration.minutes(1)
MEMORY = 512
BATCH_SIZE = 10
#: The most study-stable invocations at once (each is a few DynamoDB calls).
CONCURRENCY = 5


class StudyStable(Construct):
    def __init__(self, scope: Construct, cid: str, *, config: PacsConfig, functions: Functions,
                 pipeline: Pipeline) -> None:
        super().__init__(scope, cid)
        r = functions.r
        self.dlq, self.queue, self.rule = event_queue(
            self, pipeline, timeout=TIMEOUT, detail_types=DETAIL_TYPES,
            description="Study changes to the study-stable function (StudyStable after a quiet time)")
        env = {**pacs_environment(config, r), "PACS_STABLE_QUEUE_URL": self.queue.queue_url,
               "PACS_STUDY_QUIET_SECONDS": str(config.study_quiet_seconds)}
        self.function = functions.function("Stable", "stable", env, timeout=TIMEOUT, memory=MEMORY,
                                           reserved=CONCURRENCY)
        self.function.add_event_source(sources.SqsEventSource(
            self.queue, batch_size=BATCH_SIZE, max_batching_window=Duration.seconds(1),
            report_batch_item_failures=True))
        r.table.grant_read_write_data(self.function)  # the studies' stable items; study rows read
        r.bus.grant_put_events_to(self.function)  # StudyStable
        self.queue.grant_send_messages(self.function)  # its own timers
        table = r.table.node.default_child
        suppress(self.function, Why("AwsSolutions-IAM5", GRANT_WILDCARDS,
                                    applies_to=grant_findings(tables=[table])))  # type: ignore[list-item]
        suppress(self.function, Why(
            "HIPAA.Security-LambdaDLQ",
            "Invoked by an SQS event source mapping, never asynchronously: a failing message is retried "
            "and then moved to the study-stable queue's DLQ (maxReceiveCount); a function DLQ would never "
            "receive.",
        ))
