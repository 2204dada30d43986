"""Pipeline: S3 notifications → SQS (with a DLQ) → indexer; the `pacs-{stage}` event bus the indexer
publishes domain events to, its archive, a rule feeding downstream consumers through a queue, and the
daily reconciliation schedule."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import PacsConfig
from infra.nag import Why, suppress

#: Domain events (pacs.events.publisher): source and detail-types.
EVENT_SOURCE = "pacs"
DETAIL_TYPES = ("InstanceStored", "StudyUpdated", "InstanceDeleted", "MppsUpdated")
#: A message that fails this many times goes to the dead-letter queue.
MAX_RECEIVE_COUNT = 5
#: The indexer's timeout; the queue's visibility timeout is six times it (AWS's advice for SQS sources).
INDEXER_TIMEOUT = Duration.minutes(2)
RETENTION = Duration.days(14)


class Pipeline(Construct):
    def __init__(self, scope: Construct, cid: str, *, config: PacsConfig, key: kms.IKey,
                 originals: s3.IBucket) -> None:
        super().__init__(scope, cid)
        self.key = key
        self.ingest_dlq = self.queue("IngestDlq")
        self.ingest = self.queue("Ingest", dlq=self.ingest_dlq,
                                 visibility=Duration.seconds(INDEXER_TIMEOUT.to_seconds() * 6))
        prefix = f"{config.partition}/studies/"
        for kind in (s3.EventType.OBJECT_CREATED, s3.EventType.OBJECT_REMOVED):
            originals.add_event_notification(kind, s3n.SqsDestination(self.ingest),
                                             s3.NotificationKeyFilter(prefix=prefix, suffix=".dcm"))

        self.bus = events.EventBus(self, "Bus", event_bus_name=f"pacs-{config.stage}")
        self.bus.archive("Archive", archive_name=f"pacs-{config.stage}-events",
                         description="Every PACS domain event, for replay",
                         event_pattern=events.EventPattern(source=[EVENT_SOURCE]),
                         retention=Duration.days(config.retention_days))
        self.downstream_dlq = self.queue("DownstreamDlq")
        self.downstream = self.queue("Downstream", dlq=self.downstream_dlq)
        self.rule_dlq = self.queue("RuleDlq")
        suppress(self.rule_dlq, Why(
            "AwsSolutions-SQS3", "This queue is itself a dead-letter queue: of EventBridge rule targets "
            "(downstream queue, reconcile schedule), named by the rules rather than by a redrive policy."))
        events.Rule(
            self, "ToDownstream", event_bus=self.bus,
            description="PACS domain events for downstream consumers (transcoder, AI, metering…)",
            event_pattern=events.EventPattern(source=[EVENT_SOURCE], detail_type=list(DETAIL_TYPES)),
            targets=[targets.SqsQueue(self.downstream, dead_letter_queue=self.rule_dlq,
                                      retry_attempts=8, max_event_age=Duration.hours(24))],
        )

    def queue(self, name: str, *, dlq: sqs.IQueue | None = None,
              visibility: Duration | None = None) -> sqs.Queue:
        """An encrypted, TLS-only queue; with `dlq`, messages received too often move there."""
        return sqs.Queue(
            self, name,
            encryption=sqs.QueueEncryption.KMS, encryption_master_key=self.key,
            enforce_ssl=True, retention_period=RETENTION, visibility_timeout=visibility,
            dead_letter_queue=(sqs.DeadLetterQueue(queue=dlq, max_receive_count=MAX_RECEIVE_COUNT)
                               if dlq else None),
        )

    def schedule_reconcile(self, fn: lambda_.IFunction) -> events.Rule:
        """Run the reconciliation daily; failed deliveries land in the rule's DLQ."""
        return events.Rule(
            self, "Reconcile", description="Daily: diff the object store against the catalog and repair it",
            schedule=events.Schedule.cron(minute="17", hour="3"),
            targets=[targets.LambdaFunction(fn, dead_letter_queue=self.rule_dlq, retry_attempts=2,
                                            max_event_age=Duration.hours(6))],
        )


def event_queue(scope: Construct, pipeline: Pipeline, *, timeout: Duration, detail_types: tuple[str, ...],
                description: str) -> tuple[sqs.Queue, sqs.Queue, events.Rule]:
    """(DLQ, queue, rule) of a consumer of the bus's events (the transcoder, the anonymizer): both
    queues KMS-encrypted with the pipeline's key, the queue's visibility six times the consumer's
    `timeout`, fed by a rule `OnInstance` on `detail_types` (its failed deliveries to the rule DLQ)."""
    key = pipeline.key
    dlq = sqs.Queue(scope, "Dlq", encryption=sqs.QueueEncryption.KMS, encryption_master_key=key,
                    enforce_ssl=True, retention_period=RETENTION)
    queue = sqs.Queue(
        scope, "Queue", encryption=sqs.QueueEncryption.KMS, encryption_master_key=key, enforce_ssl=True,
        retention_period=RETENTION, visibility_timeout=Duration.seconds(timeout.to_seconds() * 6),
        dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=MAX_RECEIVE_COUNT))
    rule = events.Rule(
        scope, "OnInstance", event_bus=pipeline.bus, description=description,
        event_pattern=events.EventPattern(source=[EVENT_SOURCE], detail_type=list(detail_types)),
        targets=[targets.SqsQueue(queue, dead_letter_queue=pipeline.rule_dlq, retry_attempts=8,
                                  max_event_age=Duration.hours(24))],
    )
    return dlq, queue, rule
