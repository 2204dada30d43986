"""The transcoder: `InstanceStored` / `InstanceDeleted` on the PACS bus → a rule → an SQS queue (with a
DLQ) → the transcoder function (partial batch failures), which makes the derived copies the policy asks
for (`pacs.services.transcoder`).

EventBridge → SQS → Lambda rather than EventBridge → Lambda: the queue absorbs bursts (a study of
thousands of instances), retries with back-off and dead-letters what keeps failing; the function also
sends a permanently failing event (a corrupt original) to that DLQ at once, with the reason
(`error` message attribute). The function loads its own layer (the library + imagecodecs, without the web
stack; tools/build_layer.py --profile transcoder): the shared layer plus imagecodecs would pass Lambda's
250 MB unzipped limit. The policy is passed as JSON in PACS_TRANSCODE_POLICY (context `transcodePolicy`).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_lambda_event_sources as sources
from constructs import Construct

from infra import assets
from infra.config import PacsConfig
from infra.functions import Functions, layer_version, pacs_environment
from infra.nag import Why, suppress
from infra.pipeline import Pipeline, event_queue

#: The detail types the transcoder consumes (pacs.services.transcoder.DETAIL_TYPES).
DETAIL_TYPES = ("InstanceStored", "InstanceDeleted")
#: One batch of instances; the queue's visibility timeout is six times it (AWS's advice).
TIMEOUT = Duration.minutes(5)
MEMORY = 3008  # MB: Lambda's CPU share grows with memory; transcoding is CPU-bound
BATCH_SIZE = 4


class Transcoder(Construct):
    def __init__(self, scope: Construct, cid: str, *, config: PacsConfig, functions: Functions,
                 pipeline: Pipeline) -> None:
        super().__init__(scope, cid)
        r = functions.r
        self.dlq, self.queue, self.rule = event_queue(
            self, pipeline, timeout=TIMEOUT, detail_types=DETAIL_TYPES,
            description="Stored and deleted instances to the transcoder (derived copies by policy)")
        self.layer = layer_version(
            self, "Layer", config.layer_dir, assets.transcoder_layer,
            "pacs library + pydicom, codecs and imagecodecs (no GPL), pynamodb, Powertools")
        env = {**pacs_environment(config, r), "PACS_TRANSCODE_POLICY": config.transcode_policy,
               "PACS_TRANSCODE_DLQ_URL": self.dlq.queue_url}
        self.function = functions.function(
            "Transcoder", "transcoder", env, timeout=TIMEOUT, memory=MEMORY,
            reserved=config.transcoder_concurrency, layers=[self.layer])
        self.function.add_event_source(sources.SqsEventSource(
            self.queue, batch_size=BATCH_SIZE, max_batching_window=Duration.seconds(5),
            report_batch_item_failures=True))
        r.originals.grant_read(self.function)  # never writes an original
        r.derived.grant_read_write(self.function)
        r.table.grant_read_write_data(self.function)  # derived-copy records; instance rows read
        self.dlq.grant_send_messages(self.function)
        functions.grants_why(self.function, read=[r.originals], write=[r.derived])
        suppress(self.function, Why(
            "HIPAA.Security-LambdaDLQ",
            "Invoked by an SQS event source mapping, never asynchronously: a failing message is retried and "
            "then moved to the transcoder queue's DLQ (maxReceiveCount); a function DLQ would never receive.",
        ))
