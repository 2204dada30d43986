"""The anonymizer: `InstanceStored` / `StudyUpdated` on the PACS bus → a rule → an SQS queue (with a DLQ)
→ the anonymizer function (partial batch failures), which de-identifies what the rules ask
(`pacs.services.anonymizer`) and runs the export jobs' tasks (sent to the same queue by POST /exports
and by itself); the de-identification master secret (Secrets Manager, generated, KMS-encrypted).

- Copies go into destination partitions of the originals bucket, through ingest (indexed at once: the
  S3 notification covers the deployment's partition only) — writes are granted on those partitions'
  prefixes alone — or into the exports bucket (`{partition}/export/…`).
- The originals of every rule's source partition are indexed: an S3 notification per source partition
  (besides the deployment's own) to the ingest queue.
- The function loads its own layer (tools/build_layer.py --profile anonymizer: the library with
  imagecodecs to re-encode cleaned pixels, pynetdicom for C-STORE export destinations, cryptography;
  without the web stack). The rules travel as JSON in PACS_DEID_RULES (context `deidRules`).
- The DICOMweb function (POST /exports) may send to the queue and read the exports bucket (presigned
  downloads).
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra import assets
from infra.config import PacsConfig, rule_partitions
from infra.functions import Functions, layer_version, pacs_environment
from infra.nag import GRANT_WILDCARDS, Why, arn_of, grant_findings, suppress
from infra.pipeline import MAX_RECEIVE_COUNT, Pipeline, event_queue

#: The detail types the anonymizer consumes (pacs.services.anonymizer.DETAIL_TYPES).
DETAIL_TYPES = ("InstanceStored", "StudyUpdated")
#: One batch of instances (or export tasks); the queue's visibility timeout is six times it.
TIMEOUT = Duration.minutes(5)
MEMORY = 3008  # MB: de-identification (and pixel cleaning) is CPU-bound
BATCH_SIZE = 4
#: The master secret's length (characters of a generated alphanumeric string: ~380 bits).
SECRET_LENGTH = 64


class Anonymizer(Construct):
    def __init__(self, scope: Construct, cid: str, *, config: PacsConfig, functions: Functions,
                 pipeline: Pipeline, exports: s3.IBucket, data_key: kms.IKey) -> None:
        super().__init__(scope, cid)
        r = functions.r
        sources_, rule_destinations = rule_partitions(config.deid_rules)
        destinations = tuple(sorted({*rule_destinations, *config.export_partitions}))
        self.dlq, self.queue, self.rule = event_queue(
            self, pipeline, timeout=TIMEOUT, detail_types=DETAIL_TYPES,
            description="Stored instances and updated studies to the anonymizer (de-identification rules)")
        for partition in sources_:  # the deployment's partition is notified already (infra/pipeline.py)
            if partition != config.partition:
                r.originals.add_event_notification(
                    s3.EventType.OBJECT_CREATED, s3n.SqsDestination(pipeline.ingest),
                    s3.NotificationKeyFilter(prefix=f"{partition}/studies/", suffix=".dcm"))
                r.originals.add_event_notification(
                    s3.EventType.OBJECT_REMOVED, s3n.SqsDestination(pipeline.ingest),
                    s3.NotificationKeyFilter(prefix=f"{partition}/studies/", suffix=".dcm"))
        self.secret = secretsmanager.Secret(
            self, "Secret", encryption_key=data_key,
            description=f"pacs-{config.stage}: the de-identification master secret (pseudonyms, UIDs, dates)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=SECRET_LENGTH, exclude_punctuation=True, include_space=False),
            removal_policy=RemovalPolicy.RETAIN if config.retain_data else RemovalPolicy.DESTROY)
        suppress(self.secret, *[Why(rule, (
            "Not rotated on purpose: every pseudonym, UID and date shift is derived from this secret, so a "
            "rotation would break the consistency across exports that research projects rely on; it is "
            "KMS-encrypted, readable by the anonymizer's role alone, and every read is in CloudTrail."))
            for rule in ("AwsSolutions-SMG4", "HIPAA.Security-SecretsManagerRotationEnabled")])
        self.layer = layer_version(
            self, "Layer", config.layer_dir, assets.anonymizer_layer,
            "pacs library + pydicom, codecs, imagecodecs, pynetdicom, cryptography (no GPL), Powertools")
        queues = {"PACS_ANONYMIZER_QUEUE_URL": self.queue.queue_url,
                  "PACS_ANONYMIZER_DLQ_URL": self.dlq.queue_url,
                  "PACS_EXPORTS_BUCKET": exports.bucket_name,
                  "PACS_EXPORT_PARTITIONS": ",".join(destinations)}
        env = {**pacs_environment(config, r), **queues, "PACS_DEID_RULES": config.deid_rules,
               "PACS_DEID_PIXEL_RULES": config.deid_pixel_rules,
               "PACS_DEID_SECRET": self.secret.secret_arn,
               "PACS_ANONYMIZER_MAX_RECEIVE": str(MAX_RECEIVE_COUNT)}
        # Export jobs to a node: DICOM associations to the nodes across the VPN (as the gateway's C-MOVE).
        self.dicom_out = ec2.SecurityGroup(self, "DicomOutSg", vpc=functions.vpc, allow_all_outbound=False,
                                           description="anonymizer: C-STORE to export nodes across the VPN")
        for cidr in config.vpn_cidrs:
            self.dicom_out.add_egress_rule(ec2.Peer.ipv4(cidr), ec2.Port.all_tcp(),
                                           "DICOM associations to export nodes across the VPN")
        self.function = functions.function(
            "Anonymizer", "anonymizer", env, timeout=TIMEOUT, memory=MEMORY,
            reserved=config.anonymizer_concurrency, layers=[self.layer], security_groups=[self.dicom_out])
        self.function.add_event_source(sources.SqsEventSource(
            self.queue, batch_size=BATCH_SIZE, max_batching_window=Duration.seconds(5),
            report_batch_item_failures=True))
        fn = self.function
        r.originals.grant_read(fn)  # never writes an original of a source partition
        for partition in destinations:  # ingest of the copies (and the versions they replace: history/)
            r.originals.grant_put(fn, f"{partition}/*")
        r.derived.grant_read_write(fn)  # the copies' metadata, written by the inline indexer
        r.table.grant_read_write_data(fn)  # the copies' catalog rows
        r.bus.grant_put_events_to(fn)  # the copies' InstanceStored / StudyUpdated
        exports.grant_read_write(fn)
        self.secret.grant_read(fn)
        self.queue.grant_send_messages(fn)  # an export job's next tasks
        self.dlq.grant_send_messages(fn)
        originals = r.originals.node.default_child
        puts = [f"Resource::{arn_of(originals)}/{p}/*" for p in destinations]  # type: ignore[arg-type]
        functions.grants_why(fn, read=[r.originals], write=[r.derived, exports])
        if puts:
            suppress(fn, Why("AwsSolutions-IAM5", "The copies' objects under each destination partition's "
                             "prefix of the originals bucket, and no other (rules name the partitions).",
                             applies_to=puts))
        suppress(fn, Why(
            "HIPAA.Security-LambdaDLQ",
            "Invoked by an SQS event source mapping, never asynchronously: a failing message is retried and "
            "then moved to the anonymizer queue's DLQ (maxReceiveCount); a function DLQ would never receive.",
        ))

        # POST /exports: the DICOMweb function queues export tasks and presigns downloads of the exports.
        web = functions.dicomweb
        self.queue.grant_send_messages(web)
        exports.grant_read(web)
        for name, value in queues.items():
            web.add_environment(name, value)
        suppress(web, Why("AwsSolutions-IAM5", GRANT_WILDCARDS,
                          applies_to=grant_findings(buckets=[exports.node.default_child])))  # type: ignore[list-item]
